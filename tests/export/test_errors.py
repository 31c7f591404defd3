"""Bad input gives one line naming the file and the problem."""

import subprocess
import sys
from pathlib import Path

import pytest

from hsvlt.checkpoint import CheckpointError, load_source
from hsvlt.cli import UsageError
from hsvlt.deploy.manifest import checkpoint_manifest, write_manifest
from hsvlt.deploy.runtimes import open_model
from hsvlt.export import to_coreml, to_executorch, to_onnx

EXPORTERS = {"executorch": (to_executorch, ".pte"), "onnx": (to_onnx, ".onnx"), "coreml": (to_coreml, ".mlpackage")}


@pytest.mark.parametrize("name", sorted(EXPORTERS))
def test_missing_checkpoint(name, tmp_path):
    module, suffix = EXPORTERS[name]
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        module.main(["--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / f"model{suffix}")])


@pytest.mark.parametrize("name", sorted(EXPORTERS))
def test_checkpoint_of_another_preset(name, checkpoint, tmp_path):
    module, suffix = EXPORTERS[name]
    with pytest.raises(CheckpointError, match="a hsvlt_pico checkpoint, not hsvlt_lite0"):
        module.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / f"model{suffix}"), "--preset", "hsvlt_lite0"])


@pytest.mark.parametrize("name", sorted(EXPORTERS))
def test_unwritable_output(name, checkpoint, tmp_path):
    module, suffix = EXPORTERS[name]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write here"):
        module.main(["--ckpt", str(checkpoint), "--out", str(blocker / f"model{suffix}")])


@pytest.mark.parametrize("name", sorted(EXPORTERS))
def test_a_refused_checkpoint_leaves_no_output_folder(name, tmp_path):
    module, suffix = EXPORTERS[name]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        module.main(["--ckpt", str(junk), "--out", str(tmp_path / "new" / f"model{suffix}")])
    assert not (tmp_path / "new").exists()


def test_wrong_suffix_and_bad_attention_stage(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="must end in .pte"):
        to_executorch.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "model.onnx")])
    with pytest.raises(UsageError, match="attention-stage must be 0..3"):
        to_onnx.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "model.onnx"), "--attention-stage", "4"])


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        to_onnx.main(["--ckpt", str(junk), "--out", str(tmp_path / "model.onnx")])


def test_command_line_prints_one_line(tmp_path):
    script = Path(__file__).parents[2] / "export" / "to_executorch.py"
    done = subprocess.run([sys.executable, str(script), "--ckpt", str(tmp_path / "gone.pt"),
                           "--out", str(tmp_path / "model.pte")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'gone.pt'}: checkpoint not found"
    assert "Traceback" not in done.stderr


def test_more_parity_images_than_shipped_is_a_usage_error(tmp_path):
    script = Path(__file__).parents[2] / "export" / "to_onnx.py"
    done = subprocess.run([sys.executable, str(script), "--ckpt", str(tmp_path / "best.pt"),
                           "--out", str(tmp_path / "model.onnx"), "--parity-images", "33"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("argument --parity-images: 33 is more than 32")
    assert "Traceback" not in done.stderr


def test_parity_scenes_load_without_the_data_layer():
    probe = ("import sys\n"
             "from hsvlt.export.parity import scene_images\n"
             "images = scene_images(3, 40)\n"
             "print(images.shape, images.dtype, float(images.min()) >= 0.0, float(images.max()) <= 1.0)\n"
             "print(sorted(name for name in sys.modules if name.startswith('hsvlt.data')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["(3, 3, 40, 40) float32 True True", "[]"]


def test_runtime_adapter_errors(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pte: model file not found"):
        open_model(tmp_path / "nothing.pte")
    text = tmp_path / "model.txt"
    text.write_text("x")
    with pytest.raises(ValueError, match="unknown model type .txt"):
        open_model(text)
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(b"\x00")
    with pytest.raises(FileNotFoundError, match="lonely.onnx.json: manifest not found"):
        open_model(lonely)
    import numpy as np

    manifest = checkpoint_manifest(load_source(checkpoint), "onnx")
    for suffix, runtime in ((".pte", "the ExecuTorch runtime"), (".onnx", "ONNX Runtime")):
        junk = tmp_path / f"junk{suffix}"
        junk.write_bytes(b"not a model")
        write_manifest(junk, manifest)
        with pytest.raises(ValueError, match=f"junk{suffix}: {runtime} cannot load it \\("):
            open_model(junk)
    model = open_model(checkpoint)
    with pytest.raises(ValueError, match="input must be N x 3 x 32 x 32"):
        model.run(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="must be float32"):
        model.run(np.zeros((1, 3, 32, 32), np.uint8))
