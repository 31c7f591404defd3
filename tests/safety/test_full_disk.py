"""A full disk while writing any artifact: the previous good file survives byte for byte, no temporary file is
left behind, and the command fails with one line naming the file.

The disk is a real one: a small tmpfs mounted for the test (as root, as CI runs); elsewhere the rename that
publishes a file is made to fail with ENOSPC, which takes the same path through hsvlt.outputs."""

import errno
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from hsvlt import outputs
from hsvlt.checkpoint import load_checkpoint, save_checkpoint
from hsvlt.cli import run_command
from hsvlt.deploy import camera
from hsvlt.deploy.manifest import manifest_path
from hsvlt.export import to_coreml, to_executorch, to_onnx


class SmallDisk:
    def __init__(self, folder: Path, real: bool, monkeypatch):
        self.folder, self.real, self.monkeypatch = folder, real, monkeypatch

    def fill(self, leave: int) -> None:
        """Take all but `leave` bytes of the free space (without a real small disk: make publishing fail)."""
        if not self.real:
            def no_space(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")
            self.monkeypatch.setattr(outputs.os, "replace", no_space)
            return
        free = shutil.disk_usage(self.folder).free
        if free > leave:
            (self.folder / "ballast").write_bytes(b"\0" * (free - leave))


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """small_disk(size) -> SmallDisk: a folder on a file system of `size` bytes."""
    mounted = []

    def mount(size: int) -> SmallDisk:
        folder = tmp_path / f"disk{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode == 0:
            mounted.append(folder)
        return SmallDisk(folder, done.returncode == 0, monkeypatch)

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


def only_these(folder: Path, names: set[str]) -> None:
    left = {p.name for p in folder.iterdir()} - {"ballast"}
    assert left == names, left


def fails_with_one_line(command, argv, path: Path, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_command(command, argv)
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {path}") and "\n" not in message, message
    assert "Traceback" not in capsys.readouterr().err
    return message


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(small_disk):
    small = small_disk(1 << 20)
    disk = small.folder
    path = disk / "last.pt"
    save_checkpoint({"config": {}, "labels": [], "model": {"w": torch.ones(1000)}}, path)
    before = path.read_bytes()
    small.fill(2000)
    with pytest.raises(outputs.OutputError, match="last.pt: cannot write it"):
        save_checkpoint({"config": {}, "labels": [], "model": {"w": torch.zeros(100_000)}}, path)
    assert path.read_bytes() == before
    only_these(disk, {"last.pt"})


@pytest.mark.parametrize("exporter, kind", [(to_executorch, "pte"), (to_onnx, "onnx")])
def test_export_on_a_full_disk_keeps_the_previous_model(exporter, kind, models, small_disk, capsys):
    small = small_disk(4 << 20)
    disk = small.folder
    out = disk / models[kind].name
    for previous in (models[kind], manifest_path(models[kind])):  # an earlier export of the same checkpoint
        shutil.copyfile(previous, disk / previous.name)
    model, manifest = out.read_bytes(), manifest_path(out).read_bytes()
    small.fill(out.stat().st_size // 2)
    fails_with_one_line(exporter.main, ["--ckpt", str(models["checkpoint"]), "--out", str(out),
                                        "--parity-images", "0"], out, capsys)
    assert out.read_bytes() == model and manifest_path(out).read_bytes() == manifest
    only_these(disk, {out.name, manifest_path(out).name})


def test_coreml_package_on_a_full_disk_keeps_the_previous_package(models, small_disk, capsys):
    small = small_disk(4 << 20)
    disk = small.folder
    out = disk / "HSVLT.mlpackage"
    to_coreml.main(["--ckpt", str(models["checkpoint"]), "--out", str(out), "--parity-images", "0"])
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    small.fill(1000)
    fails_with_one_line(to_coreml.main, ["--ckpt", str(models["checkpoint"]), "--out", str(out),
                                         "--parity-images", "0"], out, capsys)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    only_these(disk, {"HSVLT.mlpackage", "HSVLT.mlpackage.json"})


def test_quantised_artifact_on_a_full_disk_keeps_the_previous_one(small_disk, checkpoint):
    from hsvlt.checkpoint import load_source
    from hsvlt.deploy.manifest import Quantization, checkpoint_manifest
    from hsvlt.quant.pt2e import save_artifact

    source = load_source(checkpoint)
    manifest = checkpoint_manifest(source, "torch.export", "int8",
                                   quantization=Quantization(method="ptq", activations="int8"))
    small = small_disk(1 << 20)
    disk = small.folder
    out = disk / "qat.pt2"
    program = torch.export.export(torch.nn.Linear(64, 64), (torch.rand(1, 64),))
    save_artifact(program, out, manifest)
    before = out.read_bytes()
    small.fill(1000)
    with pytest.raises(outputs.OutputError, match="qat.pt2: cannot write it"):
        save_artifact(torch.export.export(torch.nn.Linear(256, 256), (torch.rand(1, 256),)), out, manifest)
    assert out.read_bytes() == before


def test_demo_on_a_full_disk_fails_clearly(models, small_disk, tmp_path, capsys):
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        cv2.imwrite(str(photos / f"{i}.png"), rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    small = small_disk(200_000)
    disk = small.folder
    small.fill(150_000)
    message = fails_with_one_line(camera.main, ["--model", str(models["onnx"]), "--source", str(photos),
                                                "--headless", "--out", str(disk / "out"), "--threads", "1"],
                                  disk / "out", capsys)
    assert "cannot write" in message or "could not write" in message
    assert not [p for p in (disk / "out").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_run_folder_is_never_reused_silently(tmp_path):
    first = outputs.run_folder(tmp_path / "runs" / "hsvlt")
    (first / "best.pt").write_text("the first run")
    second = outputs.run_folder(tmp_path / "runs" / "hsvlt")
    assert second == tmp_path / "runs" / "hsvlt2" and second.is_dir()
    (second / "best.pt").write_text("the second run")
    assert outputs.run_folder(tmp_path / "runs" / "hsvlt") == tmp_path / "runs" / "hsvlt3"
    assert outputs.run_folder(tmp_path / "runs" / "hsvlt2") == tmp_path / "runs" / "hsvlt3"
    assert outputs.run_folder(tmp_path / "runs" / "hsvlt", exist_ok=True) == first
    assert (first / "best.pt").read_text() == "the first run"


def test_training_twice_into_the_default_folder_keeps_both_runs(tmp_path, monkeypatch):
    from hsvlt.train import main

    monkeypatch.chdir(tmp_path)
    tiny = ["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "32", "--val-size", "16",
            "--batch-size", "16", "--workers", "0", "--epochs", "1"]
    main(tiny)
    first = (tmp_path / "runs" / "hsvlt" / "best.pt").read_bytes()
    main(tiny + ["--seed", "1"])
    assert (tmp_path / "runs" / "hsvlt" / "best.pt").read_bytes() == first
    assert load_checkpoint(tmp_path / "runs" / "hsvlt2" / "best.pt")["data"]["seed"] == 1
