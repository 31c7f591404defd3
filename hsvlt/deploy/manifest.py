"""The manifest beside every exported file (model.pte.json, model.onnx.json, HSVLT.mlpackage.json): label names,
per-label thresholds, input size, normalisation, preset, precision and the hash of the source checkpoint, so
that a reader of the file needs neither the training code nor the text encoder."""

import hashlib
import json
from pathlib import Path

from hsvlt.models.classifier import MultiLabelClassifier
from hsvlt.outputs import write_json

MANIFEST_VERSION = 1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    model: MultiLabelClassifier,
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


def checkpoint_thresholds(checkpoint: dict, num_classes: int) -> list[float]:
    """The per-label thresholds calibrated on validation (best.pt has them), else 0.5 for every label."""
    return [float(t) for t in (checkpoint.get("thresholds") or [0.5] * num_classes)]


def checkpoint_manifest(model: MultiLabelClassifier, checkpoint: dict, checkpoint_sha256: str, artifact_format: str,
                        precision: str = "fp32", attention_stage: int | None = None, **extra) -> dict:
    """The manifest of a file made from `checkpoint` (the model built from it): build_manifest with the
    checkpoint's labels and thresholds, the attention stage, where its validation data came from (so that the
    file can be scored on the same images: export/evaluate_artifact.py), and `extra` keys."""
    manifest = build_manifest(model, checkpoint["labels"], checkpoint_thresholds(checkpoint, model.num_classes),
                              checkpoint_sha256, artifact_format, precision, attention_stage)
    manifest["attention_stage"] = attention_stage
    manifest["data"] = checkpoint.get("data")
    manifest.update(extra)
    return manifest


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
