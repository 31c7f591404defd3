"""The one image decoder: training, evaluation, export parity, the Python API and the demo all read pixels here.

    read_image(path)          a file -> RGB uint8 H x W x 3, upright, alpha composited over white
    to_uint8(pixels, where)   8-bit, 16-bit or float pixels -> uint8 (16-bit by // 257: 65535 -> 255 exactly)

A file that cannot be decoded raises BadImage, one line naming it. Camera and video frames come from OpenCV
already decoded; hsvlt/deploy/sources.py turns them into the same uint8 layout with `to_uint8`.
"""

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class BadImage(ValueError):
    """An image file that cannot be decoded; training skips it and counts it, other commands name it."""


def to_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """uint8 as it is; uint16 // 257 (the exact inverse of 8-bit x 257); float: [0, 1] scaled by 255, any other
    range stretched to [0, 255] (a float TIFF of raw values)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels // 257).astype(np.uint8)
    if pixels.dtype.kind == "f":
        finite = np.nan_to_num(pixels.astype(np.float32))
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            return cv2.normalize(finite, None, 0, 255, cv2.NORM_MINMAX).round().astype(np.uint8)
        return (finite * 255).round().astype(np.uint8)
    raise BadImage(f"{where}: pixels of type {pixels.dtype} are not supported (8 or 16-bit, or float)")


def composite_over_white(bgra: np.ndarray) -> np.ndarray:
    """H x W x 4 uint8 with transparency -> H x W x 3: what a viewer shows on a white page."""
    colour = bgra[..., :3].astype(np.float32)
    alpha = bgra[..., 3:].astype(np.float32) / 255.0
    return (colour * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Decode any image OpenCV reads into RGB uint8: grayscale, RGBA, palette and 16-bit files included.
    JPEGs are turned upright by their EXIF orientation (phone photos): OpenCV applies it when decoding to
    colour, and ignores it when asked for the file's own depth and channels, which a JPEG never needs. A file
    that cannot be decoded (truncated JPEGs included: OpenCV 5 decodes none of them) raises BadImage."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise BadImage(f"{path}: file not found") from None
    except OSError as error:
        raise BadImage(f"{path}: {error.strerror or 'cannot be read'}") from None
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:
        image = None
    if image is None:
        raise BadImage(f"{path}: not a readable image")
    image = to_uint8(image, str(path))
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 4:
        image = composite_over_white(image)
    elif channels != 3:
        raise BadImage(f"{path}: {channels} channels")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
