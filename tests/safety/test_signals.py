"""SIGTERM (a cluster's pre-emption, `kill`) ends training with a fresh last.pt from which --resume continues
exactly, and ends the demo with its video finalised and every record flushed."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import torch

from hsvlt.checkpoint import load_checkpoint
from hsvlt.data import data_defaults
from hsvlt.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "512", "--val-size", "16", "--batch-size", "8",
        "--workers", "0", "--epochs", "3", "--warmup-epochs", "0.5"]


def wait_for(condition, process, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_saves_last_and_resume_is_exact(tmp_path):
    straight = tmp_path / "straight"
    train_main(TINY + ["--out", str(straight)])
    stopped = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-m", "hsvlt.train", *TINY, "--out", str(stopped)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (stopped / "log.jsonl").is_file(), process)  # in epoch 2 now
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "stopped by SIGTERM" in out and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted"
    progress = load_checkpoint(stopped / "last.pt")["train_state"]["progress"]
    assert progress["epoch"] < 3
    train_main(TINY + ["--out", str(stopped), "--resume"])
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(stopped / "last.pt")
    for key, value in a["train_state"]["model"].items():
        torch.testing.assert_close(value, b["train_state"]["model"][key], rtol=0, atol=0, msg=key)


SMALL = ["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "32", "--val-size", "16", "--batch-size", "16",
         "--workers", "0"]


def test_resume_refuses_changed_settings_unless_overridden(tmp_path, capsys):
    import pytest

    out = tmp_path / "run"
    train_main(SMALL + ["--epochs", "1", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        train_main(SMALL + ["--epochs", "1", "--out", str(out), "--resume", "--lr", "1e-2", "--val-size", "8"])
    message = str(exit_info.value.code)
    assert f"lr {data_defaults('shapes')['lr']!r} -> 0.01" in message and "val_size 16 -> 8" in message
    assert "--override lr val_size" in message
    summary = train_main(SMALL + ["--epochs", "2", "--out", str(out), "--resume", "--lr", "1e-2",
                                  "--override", "lr"])
    assert summary["epoch"] in (1, 2)
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


def test_resume_keeps_the_recipe_the_run_started_with(tmp_path):
    """Settings not given on --resume come from the checkpoint, not from this version's defaults: a run started
    with another loss and rate (as under older defaults) goes on with them."""
    out = tmp_path / "run"
    train_main(SMALL + ["--epochs", "1", "--loss", "bce", "--lr", "0.002", "--out", str(out)])
    assert data_defaults("shapes")["loss"] != "bce"  # otherwise this test shows nothing
    train_main(SMALL + ["--epochs", "2", "--out", str(out), "--resume"])
    args = load_checkpoint(out / "last.pt")["train_state"]["args"]
    assert (args["loss"], args["lr"], args["epochs"]) == ("bce", 0.002, 2)
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


def test_sigterm_finalises_the_demo_video_and_records(models, tmp_path):
    out = tmp_path / "demo"
    process = subprocess.Popen([sys.executable, "edge_demo/camera.py", "--model", str(models["onnx"]), "--source",
                                "shapes", "--shapes-size", "96", "--headless", "--threads", "1", "--out", str(out)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "detections.jsonl"
    wait_for(lambda: records.is_file() and len(records.read_text().splitlines()) >= 8, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert "stopped (SIGTERM)" in stdout and "Traceback" not in stderr
    lines = records.read_text().splitlines()
    assert all(json.loads(line)["name"].startswith("shapes#") for line in lines)
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    ok, frame = video.read()
    assert ok and frame.shape[:2] == (360, 360)  # 96 px frames are drawn at the overlay's minimum side
