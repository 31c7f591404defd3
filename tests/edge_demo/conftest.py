"""A small hsvlt_pico checkpoint (64 px, the 10 `shapes` labels) and its exports for the demo tests: an
ExecuTorch program and an ONNX file, both with the attention output."""

import pytest
import torch

from export import to_executorch, to_onnx

IMG_SIZE = 64


@pytest.fixture(scope="session")
def models(tmp_path_factory, checkpoint_maker):
    """{"checkpoint": best.pt, "pte": model.pte, "onnx": model.onnx}; the exports carry attention of stage 1."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("demo_models")
    checkpoint = checkpoint_maker(folder / "best.pt", img_size=IMG_SIZE)
    pte, onnx = folder / "model.pte", folder / "model.onnx"
    to_executorch.main(["--ckpt", str(checkpoint), "--out", str(pte), "--attention-stage", "1",
                        "--parity-images", "0"])
    to_onnx.main(["--ckpt", str(checkpoint), "--out", str(onnx), "--attention-stage", "1", "--parity-images", "0"])
    return {"checkpoint": checkpoint, "pte": pte, "onnx": onnx}
