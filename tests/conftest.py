"""Shared by the export, quantisation, demo and safety tests: tiny checkpoints (hsvlt_pico, the 10 `shapes` labels)
and their exports; and, under pytest-xdist (`-n auto`), one core for each worker."""

import os
import re
import signal
import subprocess

import pytest
import torch

from hsvlt.checkpoint import save_checkpoint
from hsvlt.labels import load_label_set
from hsvlt.models import create_model


def pytest_configure(config):
    """A pytest-xdist worker keeps to a core of its own, and so do the commands its tests start (the affinity is
    inherited, and hsvlt sizes its thread pools by it): two workers that each spread over every core would make
    their OpenMP threads spin-wait on each other and run many times slower than one worker alone."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker:
        # A worker starts with Ctrl-C ignored, and the commands its tests start would inherit that and never stop
        # on SIGINT: give them a terminal's disposition, as users run them.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if worker and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
        torch.set_num_threads(1)


# The test files that take longest on 2 cores (`pytest --durations`), longest first.
LONGEST_FILES = ("tests/reports/test_ablation.py", "tests/reports/test_export_bench.py",
                 "tests/quant/test_eager.py", "tests/safety/test_installed_command.py",
                 "tests/quant/test_qat.py", "tests/export/test_rewrites.py")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n auto`; `--dist loadfile --no-loadscope-reorder` in pyproject.toml) each test file
    runs on one worker, so that no worker builds another's module fixtures (an export, a trained model) again,
    and the files go out in the order of `items`: the longest first, so that none of them starts last and leaves
    the other worker idle, then the rest as collected."""
    rank = {path: index for index, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def make_checkpoint(path, preset: str = "hsvlt_pico", img_size: int = 32, seed: int = 0):
    """Random weights, spread so that probabilities differ between images and sit around the thresholds
    (a freshly initialised model answers its prior for every image, which would make parity trivial)."""
    labels = load_label_set("shapes")
    torch.manual_seed(seed)
    model = create_model(preset, torch.from_numpy(labels.embeddings), img_size=img_size)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("gamma") or "language_gate.gate.2" in name:
                parameter.normal_(0.0, 0.3)
        model.head.weight.mul_(8.0)
    save_checkpoint({"config": model.config.to_dict(), "labels": list(labels.names), "model": model.state_dict(),
                     "thresholds": [0.5] * len(labels.names),
                     "data": {"name": "shapes", "seed": 0, "train_size": 64, "val_size": 16}}, path)
    return path


@pytest.fixture(scope="session")
def checkpoint_maker():
    """make_checkpoint(path, preset="hsvlt_pico", img_size=32, seed=0) -> path."""
    return make_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """hsvlt_pico at 32 px."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def demo_model_files(folder) -> dict:
    """The demo exports' files in `folder`: {"checkpoint": best.pt, "pte": model.pte, "onnx": model.onnx}."""
    return {"checkpoint": folder / "best.pt", "pte": folder / "model.pte", "onnx": folder / "model.onnx"}


def export_demo_models(folder) -> dict:
    """hsvlt_pico at 64 px, exported with the attention of stage 1 into `folder` (demo_model_files)."""
    from hsvlt.export import to_executorch, to_onnx

    torch.set_num_threads(1)
    files = demo_model_files(folder)
    checkpoint = str(make_checkpoint(files["checkpoint"], img_size=64))
    to_executorch.main(["--ckpt", checkpoint, "--out", str(files["pte"]), "--attention-stage", "1",
                        "--parity-images", "0"])
    to_onnx.main(["--ckpt", checkpoint, "--out", str(files["onnx"]), "--attention-stage", "1", "--parity-images", "0"])
    return files


@pytest.fixture(scope="session")
def models(tmp_path_factory, worker_id):
    """export_demo_models, made once per test run: under pytest-xdist the first worker to ask exports them into the
    run's shared temporary folder, and the others wait for it and read the same files (lowering a program is the
    suite's largest cost). The tests only read these files."""
    from filelock import FileLock

    if worker_id == "master":  # no xdist: this process is the whole run
        return export_demo_models(tmp_path_factory.mktemp("demo_models"))
    folder = tmp_path_factory.getbasetemp().parent / "demo_models"  # the run's folder, above every worker's own
    with FileLock(f"{folder}.lock"):
        if not (folder / "done").is_file():
            folder.mkdir(exist_ok=True)
            export_demo_models(folder)
            (folder / "done").touch()
    return demo_model_files(folder)


@pytest.fixture(scope="session")
def installed_hsvlt():
    """The `hsvlt` console script pip installed beside this interpreter. Missing, the tests that need it skip,
    but fail in CI (CI=true): the command is what users run, and a skipped check would pass a broken install."""
    import os
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("hsvlt")
    if not script.exists():
        message = f"{script}: no hsvlt console script beside this Python (pip install -e .)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return script


# The installed command as a shell or a CI step runs it, each process on one thread (the worker's core).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HSVLT_DEBUG": "0"}
INSTALLED_TIMEOUT_S = 600


def run_installed(script, argv: list[str], cwd) -> subprocess.CompletedProcess:
    """`script` (installed_hsvlt) with `argv`, in `cwd`, its output captured."""
    return subprocess.run([str(script), *argv], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=INSTALLED_TIMEOUT_S, env={**os.environ, **ONE_THREAD})


# A value printed by sys.exit: a dict's or a list's repr from the start of a line ({'delegation': ..., [{...},
# [Prediction(...)), not argparse's indented usage lines nor a runtime's "[threadpool.cpp:66] ..." log lines.
REPR = re.compile(r"^(\{['\"\d}]|\[['\"\d\[{(\]]|\(\{)|\w+\(\w+=", re.MULTILINE)


def assert_clean(stderr: str) -> None:
    """No traceback and no Python value on a command's stderr: what a console script shows when its entry point
    crashes or returns a value (sys.exit prints it and exits 1)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    found = REPR.search(stderr)
    assert found is None, stderr[found.start():found.start() + 300]


@pytest.fixture
def crash_on_batch(monkeypatch):
    """crash_on_batch(n): the n-th training batch raises KeyboardInterrupt, as a kill would; returns the undo."""
    import hsvlt.engine as engine_module  # the training step takes each batch's images through its to_model_input

    original = engine_module.to_model_input

    def arm(n: int):
        calls = {"n": 0}

        def crashing(images, device):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return original(images, device)

        monkeypatch.setattr(engine_module, "to_model_input", crashing)
        return lambda: monkeypatch.setattr(engine_module, "to_model_input", original)

    return arm
