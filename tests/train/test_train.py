"""End-to-end training, evaluation, checkpoints and resume on tiny settings (hsvlt_pico, 64 px, seconds)."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from hsvlt import checkpoint as checkpoint_module
from hsvlt.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from hsvlt.evaluate import main as evaluate_main
from hsvlt.train import main as train_main

TINY = ["--model", "hsvlt_pico", "--img-size", "64", "--train-size", "64", "--val-size", "33",
        "--batch-size", "16", "--workers", "0", "--warmup-epochs", "0.5", "--low-res-epochs", "1", "--device", "cpu"]


def train(out, *extra):
    return train_main(TINY + ["--out", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(out, "--epochs", "2")
    return out, summary


def test_a_run_writes_every_artifact(trained):
    out, summary = trained
    for name in ("last.pt", "best.pt", "log.jsonl", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2]
    assert [entry["img_size"] for entry in log] == [56, 64]  # progressive resizing: 5/6 of 64 px, then 64
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "thresholds", "labels"):
        assert key in metrics
    best = load_checkpoint(out / "best.pt")
    assert len(best["thresholds"]) == len(best["labels"]) == 10
    assert best["thresholds"] == metrics["thresholds"]
    assert metrics["mAP"] == pytest.approx(best["metrics"]["mAP"])
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_evaluate_reproduces_the_best_epoch_and_saves_scores(trained, tmp_path):
    out, _ = trained
    evaluate_main(["--ckpt", str(out / "best.pt"), "--json", str(tmp_path / "e.json"), "--workers", "0",
                   "--save-scores", str(tmp_path / "s.npz")])
    figures = json.loads((tmp_path / "e.json").read_text())
    best = load_checkpoint(out / "best.pt")
    assert figures["mAP"] == pytest.approx(best["metrics"]["mAP"], abs=1e-4)
    assert figures["num_images"] == 33 and len(figures["positives"]) == 10
    saved = np.load(tmp_path / "s.npz")
    assert saved["scores"].shape == saved["targets"].shape == (33, 10)
    assert set(np.unique(saved["targets"])) <= {-1.0, 0.0, 1.0}


def test_checkpoint_round_trip_gives_the_same_outputs(trained):
    out, _ = trained
    model, state = load_model(out / "best.pt")
    again, _ = load_model(out / "best.pt")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), again(images))
    assert state["labels"][0] == "circle"


def test_resume_continues_exactly(crash_on_batch, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(straight, "--epochs", "2", "--ema", "0.9")
    resumed = tmp_path / "resumed"
    restore = crash_on_batch(5)  # 4 batches per epoch: dies at the start of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(resumed, "--epochs", "2", "--ema", "0.9")
    restore()
    train(resumed, "--epochs", "2", "--ema", "0.9", "--resume")
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key, value in a["train_state"]["model"].items():
        torch.testing.assert_close(value, b["train_state"]["model"][key], rtol=0, atol=0, msg=key)
    for key, value in a["model"].items():  # the EMA weights
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=key)
    log = (resumed / "log.jsonl").read_text().splitlines()
    assert len(log) == 2


def test_resume_from_the_middle_of_an_epoch(crash_on_batch, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(straight, "--epochs", "1")
    crashed = tmp_path / "crashed"
    restore = crash_on_batch(3)
    with pytest.raises(KeyboardInterrupt):
        train(crashed, "--epochs", "1", "--checkpoint-minutes", "1e-9")  # save after every batch
    restore()
    assert load_checkpoint(crashed / "last.pt")["train_state"]["progress"]["skip"] == 32
    train(crashed, "--epochs", "1", "--resume")
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(crashed / "last.pt")
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=key)


def test_a_crash_while_writing_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"config": {}, "labels": [], "model": {"w": torch.ones(3)}}, path)

    def broken_save(obj, stream):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"config": {}, "labels": [], "model": {"w": torch.zeros(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    for name, reason in [("missing.pt", "checkpoint not found"), ("garbage.pt", "not a readable checkpoint"),
                         ("foreign.pt", "not an HSVLT checkpoint")]:
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(tmp_path / name)
        assert str(error.value).startswith(f"{tmp_path / name}: {reason}")
        assert "\n" not in str(error.value)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hsvlt.train", "--data", "voc", "--root", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: dataset folder not found"


def test_unreadable_images_are_skipped_and_counted(tmp_path, capsys):
    root = tmp_path / "photos"
    root.mkdir()
    rows = ["image,labels"]
    for i in range(20):
        image = np.full((40, 50, 3), 40 * (i % 5), np.uint8)
        cv2.imwrite(str(root / f"{i}.png"), image)
        rows.append(f"{i}.png,{'dark' if i % 5 < 2 else 'light'}")
    (root / "broken.png").write_bytes(b"\x89PNG truncated")
    rows.append("broken.png,dark")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "val.csv").write_text("\n".join(rows[:6] + ["broken.png,light"]) + "\n")
    label_file = tmp_path / "labels.npz"
    from hsvlt.labels import LabelSet, save_label_file

    save_label_file(label_file, LabelSet(["dark", "light"], np.eye(2, 384, dtype=np.float32), "{}", "test"))
    train_main(["--data", "csv", "--root", str(root), "--label-file", str(label_file), "--model", "hsvlt_pico",
                "--img-size", "64", "--batch-size", "7", "--workers", "0", "--epochs", "1",
                "--out", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert "skipped 2 unreadable images" in printed and "broken.png" in printed


TORCHRUN_BESIDE_PYTHON = os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(TORCHRUN_BESIDE_PYTHON),
                    reason="torchrun not installed")
def test_torchrun_two_cpu_processes_with_gloo(tmp_path):
    """DDP on 2 CPU processes: distributed sampling, validation over the whole set, only rank 0 writes."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29641", "-m", "hsvlt.train", *TINY,
               "--epochs", "1", "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("best epoch 1") == 1  # printed by rank 0 only
    best = load_checkpoint(out / "best.pt")
    assert best["metrics"]["num_images"] == 33  # all of the (odd-sized) validation set, nothing twice
    evaluated = tmp_path / "e.json"
    evaluate_main(["--ckpt", str(out / "best.pt"), "--json", str(evaluated), "--workers", "0"])
    assert json.loads(evaluated.read_text())["mAP"] == pytest.approx(best["metrics"]["mAP"], abs=1e-4)


def test_compare_tabulates_a_finished_run(trained, capsys):
    from reports.compare import main as compare_main

    out, summary = trained
    compare_main([str(out), "--runs", "2"])
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert row[:3] == [out.name, "hsvlt_pico", "2"] and float(row[3]) == pytest.approx(summary["mAP"], abs=0.01)
