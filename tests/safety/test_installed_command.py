"""The installed `hsvlt` command as a shell or a CI step runs it: every job exits 0 when it did its work, with no
traceback and no Python repr on stderr (a console script hands its entry point's value to sys.exit, which prints a
returned dict as a repr and exits 1); a usage error exits 2, a failure at run time 1, an interruption 130.

The jobs run at once, each in its own process on one thread, on the tiny pico checkpoints of tests/conftest.py;
each test then checks one job's result. `hsvlt bench`, the longest job by far, runs once in the whole suite:
tests/reports/test_export_bench.py runs it through the installed command, checks the same and reads its report."""

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ONE_THREAD, assert_clean, run_installed

from hsvlt.command import JOBS

# Jobs that serve until interrupted, so "succeeded" has no exit of its own: tests/web starts `hsvlt demo --web`,
# checks what it serves and that an interrupt ends it cleanly.
SERVING_JOBS = {"demo --web"}
CHECKED_ELSEWHERE = {"bench"}  # tests/reports/test_export_bench.py
FINISHING_JOBS = [name for name in JOBS if name not in SERVING_JOBS | CHECKED_ELSEWHERE]
TINY_TRAIN = ["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "32", "--val-size", "16",
              "--batch-size", "16", "--workers", "0"]


def job_argv(work: Path, checkpoint: Path, models: dict) -> dict[str, tuple[list[str], Path]]:
    """Each job's smallest real run: (argv after `hsvlt`, a file the job must have written)."""
    ckpt = str(checkpoint)
    return {
        "train": (["train", *TINY_TRAIN, "--epochs", "1", "--out", str(work / "run")], work / "run" / "best.pt"),
        "evaluate": (["evaluate", "--ckpt", ckpt, "--workers", "0", "--val-size", "16", "--json",
                      str(work / "eval.json")], work / "eval.json"),
        "qat": (["qat", "--ckpt", ckpt, "--out", str(work / "ptq.pt2"), "--ptq", "--calibration-images", "8",
                 "--workers", "0", "--batch-size", "8", "--train-size", "16", "--val-size", "16"], work / "ptq.pt2"),
        "export executorch": (["export", "executorch", "--ckpt", ckpt, "--out", str(work / "m.pte"),
                               "--parity-images", "0"], work / "m.pte"),
        "export coreml": (["export", "coreml", "--ckpt", ckpt, "--out", str(work / "m.mlpackage"),
                           "--parity-images", "0"], work / "m.mlpackage"),
        "export onnx": (["export", "onnx", "--ckpt", ckpt, "--out", str(work / "m.onnx"), "--parity-images", "0"],
                        work / "m.onnx"),
        "evaluate-artifact": (["evaluate-artifact", "--model", str(models["onnx"]), "--limit", "8", "--threads", "1",
                               "--json", str(work / "artifact.json")], work / "artifact.json"),
        "predict": (["predict", str(work / "photos"), "--model", str(models["onnx"]), "--threads", "1", "--out",
                     str(work / "predicted")], work / "predicted" / "predictions.jsonl"),
        "demo": (["demo", "--model", str(models["onnx"]), "--source", "shapes", "--headless", "--max-frames", "4",
                  "--threads", "1", "--out", str(work / "demo")], work / "demo" / "detections.jsonl"),
        "labels": (["labels", "--names", "cat,dog", "--out", str(work / "labels.npz")], work / "labels.npz"),
    }


# (name, argv after `hsvlt`, exit status, what stderr's last line holds)
MISUSE = [
    ("unknown job", lambda w, m: ["nosuchjob"], 2, "hsvlt: error: unknown job 'nosuchjob'"),
    ("export without a target", lambda w, m: ["export"], 2, "hsvlt: error: export: choose a target"),
    ("flag out of range", lambda w, m: ["predict", str(w / "photos"), "--model", str(m["onnx"]), "--threshold", "2"],
     2, "argument --threshold: 2 is not between 0 and 1"),
    ("missing file", lambda w, m: ["predict", str(w / "nowhere.jpg"), "--model", str(m["onnx"]), "--out",
                                   str(w / "p")], 1, "nowhere.jpg: no such file or folder"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, checkpoint, models, installed_hsvlt):
    """Every job and every misuse through the installed command, at once (each process on one thread)."""
    script = installed_hsvlt
    work = tmp_path_factory.mktemp("installed_command")
    (work / "photos").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(work / "photos" / f"{i}.jpg"), rng.integers(0, 256, (50, 60, 3), dtype=np.uint8))
    jobs = job_argv(work, checkpoint, models)
    commands = {name: argv for name, (argv, _) in jobs.items()}
    commands.update({name: argv(work, models) for name, argv, _, _ in MISUSE})
    with ThreadPoolExecutor(max_workers=min(4, len(os.sched_getaffinity(0)))) as pool:
        futures = {name: pool.submit(run_installed, script, argv, work) for name, argv in commands.items()}
        return {name: future.result() for name, future in futures.items()}, {n: out for n, (_, out) in jobs.items()}


def test_every_job_is_checked():
    assert set(job_argv(Path("w"), Path("c"), {"onnx": "m"})) == set(FINISHING_JOBS)
    elsewhere = (Path(__file__).parents[1] / "reports" / "test_export_bench.py").read_text()
    assert all(f'run_installed(installed_hsvlt, ["{job}",' in elsewhere for job in CHECKED_ELSEWHERE)


@pytest.mark.parametrize("job", FINISHING_JOBS)
def test_every_job_exits_0_when_it_succeeded(job, runs):
    results, outputs = runs
    done = results[job]
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert_clean(done.stderr)
    assert outputs[job].exists(), (outputs[job], done.stdout[-2000:])


@pytest.mark.parametrize("name, status, text", [(n, s, t) for n, _, s, t in MISUSE], ids=[m[0] for m in MISUSE])
def test_usage_errors_exit_2_and_failures_1_in_one_line(name, status, text, runs):
    done = runs[0][name]
    assert done.returncode == status, (done.returncode, done.stderr[-2000:])
    assert_clean(done.stderr)
    assert text in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


def test_an_interrupted_job_exits_130(tmp_path, installed_hsvlt):
    script = installed_hsvlt
    out = tmp_path / "run"
    process = subprocess.Popen([str(script), "train", *TINY_TRAIN, "--epochs", "200", "--out", str(out)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **ONE_THREAD})
    deadline = time.monotonic() + 240
    while not (out / "log.jsonl").is_file():  # an epoch done: training is under way
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert_clean(stderr)
    assert stderr.strip().splitlines()[-1] == "interrupted"
