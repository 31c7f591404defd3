"""The check every exporter ends with: the exported file, run by its own runtime, against the trained model in
eager PyTorch, on scenes that ship with the package (no data layer, no dataset folder to load)."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from hsvlt.checkpoint import SourceCheckpoint
from hsvlt.images import read_image
from hsvlt.preprocess import prepare_image, to_input

# Realistic images of a known size, the same for every checkpoint: the first 32 validation scenes of the built-in
# `shapes` data (seed 0, 128 px), `ShapesDataset("val", 32, 128)`, saved as JPEG (quality 92).
PARITY_SCENES = sorted((Path(__file__).parent / "parity_scenes").glob("*.jpg"))


def scene_images(count: int, size: int) -> np.ndarray:
    """The first `count` parity scenes (PARITY_SCENES) as model input, float32 N x 3 x S x S, prepared by
    hsvlt.preprocess.prepare_image as every image is."""
    if not 1 <= count <= len(PARITY_SCENES):  # 0 means no check: the callers skip it before coming here
        raise ValueError(f"parity scenes: {count} asked for, 1..{len(PARITY_SCENES)} ship")
    return to_input(np.stack([prepare_image(read_image(path), size) for path in PARITY_SCENES[:count]]))


def format_parity(result: dict) -> str:
    line = (f"parity with PyTorch on {result['images']} generated scenes: max |dp| "
            f"{result['max_abs_diff']:.2e}, identical label sets {100 * result['label_set_agreement']:.1f}%")
    if result["label_set_agreement"] < 1.0:
        line += (f" ({100 * result['label_set_agreement_beyond_rounding']:.1f}% counting only labels whose "
                 f"probability is further than max |dp| from its threshold)")
    return line


def check_parity(reference: nn.Module, source: SourceCheckpoint, count: int, run, runtime: str) -> dict:
    """Compare an exported file, `run(images) -> probabilities` in its own runtime, with `reference`, the model as
    trained in eager PyTorch (hsvlt.deploy.wrapper.AsTrainedHSVLT, no rewrites), on `count` shipped scenes
    (scene_images), against the checkpoint's thresholds. Prints the figures and returns them: the max absolute
    difference of probabilities; the fraction of images whose thresholded label sets are identical; and the
    fraction that differ beyond the rounding itself: a label that flips while both probabilities lie within max |dp|
    of its threshold is the rounding, not a different model."""
    images = scene_images(count, source.img_size)
    with torch.inference_mode():
        expected = reference.eval()(torch.from_numpy(images))
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    candidate, thresholds = run(images), np.asarray(source.thresholds)
    differ = (expected >= thresholds) != (candidate >= thresholds)
    tolerance = float(np.abs(expected - candidate).max())
    near = np.abs(expected - thresholds) <= tolerance
    result = {"images": int(len(expected)), "max_abs_diff": tolerance,
              "label_set_agreement": float((~differ).all(axis=1).mean()),
              "label_set_agreement_beyond_rounding": float((~(differ & ~near)).all(axis=1).mean())}
    print(f"{format_parity(result)} ({runtime})")
    return result
