"""What the exporters share: their common settings and flags (ExportConfig, --int8), reading the checkpoint, the
int8 program quantised from it, the manifest, and the parity check against PyTorch on shipped scenes.

Every user-facing failure is an ExportError whose message is one line naming the file and the problem;
the commands print it as `error: ...` and exit with status 1 (hsvlt.cli).
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hsvlt.checkpoint import CheckpointError, load_model
from hsvlt.cli import UsageError, int_between, non_negative_int
from hsvlt.deploy.manifest import (
    Quantization,
    checkpoint_manifest,
    checkpoint_thresholds,
    file_sha256,
    parse_manifest,
)
from hsvlt.deploy.preprocess import prepare_image, to_input
from hsvlt.deploy.wrapper import AsTrainedHSVLT
from hsvlt.images import read_image
from hsvlt.models.classifier import MultiLabelClassifier


class ExportError(ValueError):
    """An export that cannot be done; the message is one line naming the file and the problem."""


class ExportFlagError(ExportError, UsageError):
    """A flag that does not fit the checkpoint (exit status 2)."""


@dataclass
class SourceCheckpoint:
    """A checkpoint opened for export."""

    path: Path
    model: MultiLabelClassifier
    checkpoint: dict
    sha256: str

    @property
    def labels(self) -> list[str]:
        return list(self.checkpoint["labels"])

    @property
    def thresholds(self) -> list[float]:
        return checkpoint_thresholds(self.checkpoint, self.model.num_classes)

    @property
    def preset(self) -> str:
        return self.model.config.preset

    @property
    def img_size(self) -> int:
        return self.model.config.img_size


def load_source(path: str | Path, preset: str | None = None) -> SourceCheckpoint:
    """Open a checkpoint (weights_only); with `preset`, refuse a checkpoint of another preset."""
    path = Path(path)
    try:
        model, checkpoint = load_model(path)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    if preset is not None and model.config.preset != preset:
        raise ExportError(f"{path}: a {model.config.preset} checkpoint, not {preset}")
    return SourceCheckpoint(path, model, checkpoint, file_sha256(path))


def int8_program(path: Path, source: SourceCheckpoint, attention_stage: int | None):
    """(program, attention stage, how it was quantised) of a quantisation artifact (quant/qat.py), checked against
    the checkpoint. How it was quantised (QAT or PTQ, the layer groups kept float, int8 and float layer counts) goes
    into the exported file's manifest."""
    from hsvlt.quant.pt2e import load_artifact

    program, manifest = load_artifact(path)
    if manifest["checkpoint_sha256"] != source.sha256:
        raise ExportError(f"{path}: was quantised from another checkpoint than {source.path}")
    stage = manifest.get("attention_stage")
    if attention_stage is not None and attention_stage != stage:
        raise ExportError(f"{path}: was quantised with attention stage {stage}, not {attention_stage} "
                          f"(run quant/qat.py with --attention-stage {attention_stage})")
    return program, stage, parse_manifest(manifest).quantization.without_figures()


def check_attention_stage(stage: int | None, model: MultiLabelClassifier) -> int | None:
    stages = len(model.config.widths)
    if stage is not None and not 0 <= stage < stages:
        raise ExportFlagError(f"--attention-stage must be 0..{stages - 1}, got {stage}")
    return stage


def manifest_for(source: SourceCheckpoint, artifact_format: str, precision: str, attention_stage: int | None,
                 quantization: Quantization | None = None, **details) -> dict:
    """hsvlt.deploy.manifest.checkpoint_manifest of the opened checkpoint; `details`: max_batch, opset."""
    return checkpoint_manifest(source.model, source.checkpoint, source.sha256, artifact_format, precision,
                               attention_stage, quantization, **details)


# What an exported file is compared with PyTorch on: realistic images of a known size, the same for every
# checkpoint, and nothing else to load (no data layer, no dataset folder): the first 32 validation scenes of the
# built-in `shapes` data (seed 0, 128 px), `ShapesDataset("val", 32, 128)`, saved as JPEG (quality 92).
PARITY_SCENES = sorted((Path(__file__).parent / "parity_scenes").glob("*.jpg"))


def scene_images(count: int, size: int) -> np.ndarray:
    """The first `count` parity scenes (PARITY_SCENES) as model input, float32 N x 3 x S x S, prepared by
    hsvlt.deploy.preprocess.prepare_image as every image is."""
    if not 1 <= count <= len(PARITY_SCENES):  # 0 means no check: the callers skip it before coming here
        raise ExportFlagError(f"--parity-images: {count} scenes asked for, 1..{len(PARITY_SCENES)} ship")
    return to_input(np.stack([prepare_image(read_image(path), size) for path in PARITY_SCENES[:count]]))


def format_parity(result: dict) -> str:
    line = (f"parity with PyTorch on {result['images']} generated scenes: max |dp| "
            f"{result['max_abs_diff']:.2e}, identical label sets {100 * result['label_set_agreement']:.1f}%")
    if result["label_set_agreement"] < 1.0:
        line += (f" ({100 * result['label_set_agreement_beyond_rounding']:.1f}% counting only labels whose "
                 f"probability is further than max |dp| from its threshold)")
    return line


def check_parity(source: SourceCheckpoint, count: int, attention_stage: int | None, run, runtime: str) -> dict:
    """Compare an exported file, `run(images) -> probabilities` in its own runtime, with the trained model in eager
    PyTorch (hsvlt.deploy.wrapper.AsTrainedHSVLT, no rewrites) on `count` generated scenes (scene_images); prints
    the figures and returns them: the max absolute difference of probabilities; the fraction of images whose
    thresholded label sets are identical; and the fraction that differ beyond the rounding itself: a label that
    flips while both probabilities lie within max |dp| of its threshold is the rounding, not a different model."""
    images = scene_images(count, source.img_size)
    with torch.inference_mode():
        reference = AsTrainedHSVLT(source.model, attention_stage).eval()(torch.from_numpy(images))
    reference = (reference[0] if isinstance(reference, tuple) else reference).numpy()
    candidate, thresholds = run(images), np.asarray(source.thresholds)
    differ = (reference >= thresholds) != (candidate >= thresholds)
    tolerance = float(np.abs(reference - candidate).max())
    near = np.abs(reference - thresholds) <= tolerance
    result = {"images": int(len(reference)), "max_abs_diff": tolerance,
              "label_set_agreement": float((~differ).all(axis=1).mean()),
              "label_set_agreement_beyond_rounding": float((~(differ & ~near)).all(axis=1).mean())}
    print(f"{format_parity(result)} ({runtime})")
    return result


@dataclass
class ExportConfig:
    """What every export takes (add_source_arguments): the checkpoint, the file to write, the attention output,
    the preset check and the parity check. Each exporter's config extends it with its own settings."""

    ckpt: Path
    out: Path
    attention_stage: int | None = None
    preset: str | None = None  # refuse a checkpoint of another preset
    parity_images: int = 32  # shipped scenes compared with PyTorch (0: none; at most len(PARITY_SCENES))


def add_source_arguments(parser: argparse.ArgumentParser, out_help: str, defaults: ExportConfig) -> None:
    """The flags of ExportConfig, which every exporter takes; `defaults`: the exporter's own config's."""
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by hsvlt.train (best.pt)")
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    parser.add_argument("--attention-stage", type=non_negative_int,
                        help="also output the label-to-pixel attention of this stage (0-3), N x C x h x w")
    parser.add_argument("--preset", help="refuse a checkpoint of another preset than this one")
    parser.add_argument("--parity-images", type=int_between(0, len(PARITY_SCENES)), default=defaults.parity_images,
                        help=f"scenes to compare with PyTorch on, 0..{len(PARITY_SCENES)} (0: skip)")


def add_int8_argument(parser: argparse.ArgumentParser) -> None:
    """--int8, for the exporters that can take the int8 program quantised from the checkpoint (check_int8_file)."""
    parser.add_argument("--int8", type=Path, help="int8 program made by quant/qat.py from this checkpoint (.pt2)")


def check_int8_file(path: Path | None) -> Path | None:
    """--int8's file, refused before the export starts when it is not there; None (no --int8) passes."""
    if path is not None and not path.is_file():
        raise ExportError(f"{path}: int8 artifact not found")
    return path


def size_mb(path: Path) -> float:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    return path.stat().st_size / 1e6
