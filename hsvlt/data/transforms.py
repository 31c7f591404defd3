"""Training augmentation (albumentations, which needs no torchvision) and the evaluation resize.

The evaluation transform is `hsvlt.preprocess.prepare_image`, the same function the exporters and the demo
use, so a model is validated on exactly the pixels it will see after deployment.
"""

import os
from typing import Callable

import numpy as np

from hsvlt.preprocess import prepare_image

Transform = Callable[[np.ndarray, int], np.ndarray]


def albumentations():
    """The library, imported when a training pipeline is built (it takes seconds, which `--help` should not)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import
    import albumentations

    return albumentations


def randaugment_ops() -> list:
    """RandAugment's photometric and geometric ops, as albumentations transforms."""
    A = albumentations()
    return [
        A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=1.0),
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
        A.Posterize(num_bits=(4, 6), p=1.0),
        A.Solarize(threshold_range=(0.5, 1.0), p=1.0),
        A.Sharpen(p=1.0),
        A.Affine(rotate=(-15, 15), shear=(-8, 8), translate_percent=(-0.05, 0.05), p=1.0),
        A.GaussianBlur(blur_limit=(3, 5), p=1.0),
    ]


def train_transform(size: int, crop_scale: float = 0.7, randaugment_n: int = 2) -> Transform:
    """Random resized crop (area fraction crop_scale..1), horizontal flip, and `randaugment_n` random ops."""
    A = albumentations()
    steps = [A.RandomResizedCrop(size=(size, size), scale=(crop_scale, 1.0)), A.HorizontalFlip(p=0.5)]
    if randaugment_n:
        steps.append(A.SomeOf(randaugment_ops(), n=randaugment_n, p=1.0))
    pipeline = A.Compose(steps)

    def apply(image: np.ndarray, seed: int) -> np.ndarray:
        pipeline.set_random_seed(seed)
        return pipeline(image=image)["image"]

    return apply


def eval_transform(size: int) -> Transform:
    return lambda image, seed: prepare_image(image, size)
