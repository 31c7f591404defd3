"""The one image decoder: training, evaluation, export parity, the Python API and the demo all read pixels here.

    read_image(path)          a file -> RGB uint8 H x W x 3, upright, alpha composited over white
    to_uint8(pixels, where)   8-bit, 16-bit or float pixels -> uint8 (16-bit by // 257: 65535 -> 255 exactly)

A file that cannot be decoded raises BadImage, one line naming it and the reason: not found, empty, not an image,
a format the decoder does not read, larger than the pixel limit, truncated or damaged. The size is read from the
file's header (Pillow's parsers) before anything is decoded, so a small file that would decode to gigabytes (a
"decompression bomb") costs nothing. Camera and video frames come from OpenCV already decoded;
hsvlt/deploy/sources.py turns them into the same uint8 layout with `to_uint8`.
"""

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

# The largest image decoded, in megapixels, unless HSVLT_MAX_MEGAPIXELS (or max_megapixels=) says otherwise.
# 200 admits every photo a camera takes today, the largest being the 200-megapixel phone sensors (16320 x 12240)
# and 100-150 megapixel medium-format backs, which Pillow's own guard (2 x 89,478,485 = 179 megapixels) would
# refuse. The model sees at most a few hundred pixels a side, so more pixels add nothing but memory: decoding
# peaks at 7 bytes a pixel for an 8-bit RGB JPEG (its bytes, the decoded BGR and the RGB copy), 28 for a 16-bit
# PNG with transparency (composited in float32), so the limit caps one image at 1.4 GB (5.6 GB at worst), where
# a PNG of a few hundred kilobytes can declare a canvas of gigapixels (a decompression bomb) and decode to
# gigabytes. Panoramas, scans and microscopy can need more: raise it.
DEFAULT_MAX_MEGAPIXELS = 200.0
MAX_MEGAPIXELS_SETTING = "HSVLT_MAX_MEGAPIXELS"

# Formats (Pillow's names) OpenCV decodes; a file of another format Pillow recognises (PSD, ICO, HEIF, ...) is
# "a format the decoder cannot read" rather than damaged.
DECODED_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "JPEG2000", "SUN"}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


class BadImage(ValueError):
    """An image file that cannot be decoded; training skips it and counts it, other commands name it.
    `path` and `reason` are the two halves of the one-line message."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def megapixel_limit(override: float | None = None) -> float:
    """The pixel limit in force: `override`, else HSVLT_MAX_MEGAPIXELS, else DEFAULT_MAX_MEGAPIXELS."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"max_megapixels must be positive, got {override}")
        return float(override)
    text = os.environ.get(MAX_MEGAPIXELS_SETTING, "").strip()
    if not text:
        return DEFAULT_MAX_MEGAPIXELS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{MAX_MEGAPIXELS_SETTING}: {text!r} is not a positive number of megapixels")
    return value


def read_header(path: str | Path) -> tuple[str, int, int] | None:
    """(format, width, height) from the file's header, by Pillow's parsers, without decoding any pixel; None when
    no parser recognises it. Pillow's plugins are called directly, as Image.open calls them, because Image.open
    refuses and warns by its own pixel limit (a process-wide setting) before it tells the size."""
    from PIL import Image

    Image.init()
    with open(path, "rb") as stream:
        prefix = stream.read(16)
        for name in Image.ID:
            factory, accept = Image.OPEN[name]
            verdict = accept(prefix) if accept else True
            if not verdict or isinstance(verdict, str):  # a string: "not this format", with Pillow's reason
                continue
            stream.seek(0)
            try:
                image = factory(stream, "")
                width, height = image.size
            except Exception:  # a header this parser cannot read: try the next, as Image.open does
                continue
            return image.format or name, int(width), int(height)
    return None


def heif_brand(prefix: bytes) -> bool:
    """An ISO media file of an image brand (HEIC from iPhones, AVIF), which Pillow reads only with a plugin."""
    return prefix[4:8] == b"ftyp" and prefix[8:12] in HEIF_BRANDS


def check_image(path: str | Path, max_megapixels: float | None = None) -> tuple[str, int, int]:
    """(format, width, height) of an image file that read_image will decode, from its header; BadImage naming
    the reason otherwise (not found, empty, not an image, an unread format, above the pixel limit)."""
    limit = megapixel_limit(max_megapixels)
    try:
        if Path(path).stat().st_size == 0:
            raise BadImage(path, "empty file")
        header = read_header(path)
        if header is None:
            with open(path, "rb") as stream:
                prefix = stream.read(16)
    except FileNotFoundError:
        raise BadImage(path, "file not found") from None
    except IsADirectoryError:
        raise BadImage(path, "a folder, not an image") from None
    except OSError as error:
        raise BadImage(path, error.strerror or "cannot be read") from None
    if header is None:
        if heif_brand(prefix):
            raise BadImage(path, "an image in HEIF/AVIF format, which the decoder cannot read (convert it to JPEG "
                                 "or PNG)")
        if cv2.haveImageReader(str(path)):  # OpenCV knows the signature, but no header parser could size it
            raise BadImage(path, "not a readable image (damaged, or a format whose size cannot be read before "
                                 "decoding)")
        raise BadImage(path, "not an image")
    image_format, width, height = header
    if width * height > limit * 1e6:
        megapixels = width * height / 1e6
        size = f"{megapixels:,.1f}" if megapixels >= 0.1 else f"{megapixels:.2g}"
        raise BadImage(path, f"{width} x {height} pixels ({size} megapixels) is above the limit of {limit:g} "
                             f"megapixels ({MAX_MEGAPIXELS_SETTING} raises it)")
    return image_format, width, height


def to_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """uint8 as it is; uint16 // 257 (the exact inverse of 8-bit x 257); float: [0, 1] scaled by 255, any other
    range stretched to [0, 255] (a float TIFF of raw values)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:  # straight into uint8 (every quotient fits): no 16-bit copy of a large image
        return np.floor_divide(pixels, 257, out=np.empty(pixels.shape, np.uint8), casting="unsafe")
    if pixels.dtype.kind == "f":
        finite = np.nan_to_num(pixels.astype(np.float32))
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            return cv2.normalize(finite, None, 0, 255, cv2.NORM_MINMAX).round().astype(np.uint8)
        return (finite * 255).round().astype(np.uint8)
    raise BadImage(where, f"pixels of type {pixels.dtype} are not supported (8 or 16-bit, or float)")


def composite_over_white(bgra: np.ndarray) -> np.ndarray:
    """H x W x 4 uint8 with transparency -> H x W x 3: what a viewer shows on a white page."""
    colour = bgra[..., :3].astype(np.float32)
    alpha = bgra[..., 3:].astype(np.float32) / 255.0
    colour *= alpha  # in place: the same float32 arithmetic as colour * alpha + 255 (1 - alpha), one copy fewer
    colour += 255.0 * (1.0 - alpha)
    return np.round(colour, out=colour).astype(np.uint8)


def read_image(path: str | Path, max_megapixels: float | None = None) -> np.ndarray:
    """Decode any image OpenCV reads into RGB uint8: grayscale, RGBA, palette and 16-bit files included, the first
    frame of an animated GIF. JPEGs are turned upright by their EXIF orientation (phone photos): OpenCV applies it
    when decoding to colour, and ignores it when asked for the file's own depth and channels, which a JPEG never
    needs. The header is checked first (check_image: max_megapixels, default HSVLT_MAX_MEGAPIXELS or 200); a
    file that cannot be decoded (truncated JPEGs included: OpenCV 5 decodes none of them) raises BadImage."""
    image_format, _, _ = check_image(path, max_megapixels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise BadImage(path, error.strerror or "cannot be read") from None
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:
        image = None
    del data  # the file's bytes, no longer needed while the pixels are converted
    if image is None:
        if image_format not in DECODED_FORMATS:
            raise BadImage(path, f"an image in {image_format} format, which the decoder cannot read (convert it to "
                                 f"PNG or JPEG)")
        raise BadImage(path, "not a readable image (truncated or damaged)")
    image = to_uint8(image, str(path))
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 4:
        image = composite_over_white(image)
    elif channels != 3:
        raise BadImage(path, f"{channels} channels")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
