"""The deployable artifact: one wrapper, one preprocessing function, one manifest.

Every exporter (export/), the quantiser (quant/) and the demo (edge_demo/) use these definitions, so the
exported file, the validation numbers and the camera demo see the same pixels and the same outputs.

Contract of an exported model (DESIGN.md section 2):
    input   "image": float32 RGB, N x 3 x H x W, values in [0, 1] (normalisation happens inside)
    output  "probabilities": N x C, sigmoid applied
    output  "attention" (optional): N x C x h x w label-to-pixel attention of one stage, each map sums to 1
"""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from hsvlt.models.hsvlt import HSVLT
from hsvlt.outputs import write_json
from hsvlt.rewrites import ExportHSVLT, Rewrites

MANIFEST_VERSION = 1


def prepare_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 H x W x 3 of any size -> size x size x 3 uint8: the model's view of an image.
    Area interpolation when shrinking (no aliasing on camera frames), bilinear when enlarging."""
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return rgb
    interpolation = cv2.INTER_AREA if min(height, width) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 (or one H x W x 3) -> float32 N x 3 x H x W in [0, 1], what every runtime takes."""
    if images.ndim == 3:
        images = images[None]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def preprocess_frame(bgr: np.ndarray, size: int) -> np.ndarray:
    """An OpenCV frame (BGR uint8, or grayscale / BGRA) -> model input 1 x 3 x size x size."""
    if bgr.ndim == 2:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    elif bgr.shape[2] == 4:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return to_input(prepare_image(rgb, size))


class DeployableHSVLT(nn.Module):
    """Images in [0, 1] -> class probabilities (and optionally one stage's attention maps).

    The label embeddings and the first language projection depend on the labels only; they are computed
    once here and held as a constant, so the exported graph carries neither the text encoder nor E."""

    def __init__(self, model: HSVLT, attention_stage: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.attention_stage = attention_stage
        with torch.no_grad():
            self.register_buffer("label_tokens", model.encode_labels().detach().clone())  # C x d1

    def forward(self, image: torch.Tensor):
        if self.attention_stage is None:
            return torch.sigmoid(self.model.forward_with_labels(image, self.label_tokens))
        logits, attention = self.model.forward_with_labels(image, self.label_tokens, return_attention=True)
        return torch.sigmoid(logits), attention[self.attention_stage].mean(dim=1)  # N x C, N x C x h x w


def for_export(model: HSVLT, attention_stage: int | None = None, rewrites: Rewrites | None = None,
               logits: bool = False) -> nn.Module:
    """The module every exporter and the quantiser trace: DeployableHSVLT's contract (images in [0, 1] ->
    probabilities, optionally attention) computed by a rewritten copy of `model` that the XNNPACK delegate
    runs whole (hsvlt/rewrites.py: folded norms, label-only computations as constants, ...). `logits` skips
    the final sigmoid (quantisation-aware training takes its loss on logits). The ablation baselines
    (config.fusion other than "ivla") have no rewrites: they get the plain wrapper."""
    if type(model) is not HSVLT:
        if logits:
            raise ValueError(f"for_export(logits=True) needs an HSVLT model, got {type(model).__name__}")
        return DeployableHSVLT(model, attention_stage).eval()
    return ExportHSVLT(model, attention_stage, rewrites or Rewrites(), logits).eval()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    model: HSVLT,
    labels: list[str],
    thresholds: list[float],
    checkpoint_sha256: str,
    artifact_format: str,
    precision: str = "fp32",
    attention_stage: int | None = None,
) -> dict:
    config = model.config
    outputs = [{"name": "probabilities", "shape": ["N", len(labels)]}]
    if attention_stage is not None:
        stride = 4 * 2**attention_stage
        side = config.img_size // stride
        outputs.append({"name": "attention", "shape": ["N", len(labels), side, side], "stride": stride})
    return {
        "manifest_version": MANIFEST_VERSION,
        "preset": config.preset,
        "format": artifact_format,
        "precision": precision,
        "labels": list(labels),
        "thresholds": [float(t) for t in thresholds],
        "input": {
            "name": "image",
            "shape": ["N", 3, config.img_size, config.img_size],
            "dtype": "float32",
            "color": "RGB",
            "range": [0.0, 1.0],
        },
        "normalization": {"mean": list(config.mean), "std": list(config.std), "applied": "inside the model"},
        "outputs": outputs,
        "checkpoint_sha256": checkpoint_sha256,
    }


def manifest_path(artifact: str | Path) -> Path:
    """model.pte -> model.pte.json beside it (model.onnx -> model.onnx.json, model.mlpackage ->
    model.mlpackage.json): exports of one model to several formats in one folder keep their own manifests."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_manifest(artifact: str | Path, manifest: dict) -> Path:
    path = manifest_path(artifact)
    write_json(path, manifest)
    return path


def read_manifest(artifact: str | Path) -> dict:
    path = manifest_path(artifact)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found beside {Path(artifact).name}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    missing = {"labels", "thresholds", "input", "preset"} - set(manifest)
    if missing:
        raise ValueError(f"{path}: manifest lacks {', '.join(sorted(missing))}")
    return manifest
