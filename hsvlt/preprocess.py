"""The model's view of an image: one resize and one layout, used by training's validation, evaluation, export
parity, the Python API and the demo, so that every number and every prediction sees the same pixels."""

import cv2
import numpy as np


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


def preprocess_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 H x W x 3 (hsvlt.images.read_image) -> model input 1 x 3 x size x size."""
    return to_input(prepare_image(rgb, size))
