"""`fashion-mosaic`: composed scenes of real item photos, the closest honest stand-in for COCO / VOC here.

Each scene puts 1 to 4 real Fashion-MNIST product photos (Zalando's 28 x 28 grayscale article images, 10
classes) on a textured surface, like a flat-lay photo of clothes:

- items: distinct classes per scene; item side log-uniform over 0.15-0.60 of the image side (4x, so a third
  of the items are in the "small" bucket below 0.24), turned by up to 20 degrees, mirrored half the time;
- colour: Fashion-MNIST items lie on black, so an item's own intensity is its coverage: alpha =
  intensity / 48 (clipped to 1), and its grey levels shade a random dye (dye x (0.3 + 0.7 x intensity)), which
  keeps the photo's folds, seams and prints; the dye always differs in luma from the surface's colours;
- surface: woven, wood-grain, mottled or tiled texture in two colours, a soft shadow under every item, one
  lighting gradient over the whole scene and sensor grain;
- overlap: items may touch and overlap, but the later items cover at most a quarter of an earlier item's box,
  so none is hidden (an item that finds no such place within 50 tries is left out);
- splits: train scenes use only the 60,000 train items; val scenes only the first half of the t10k items
  (0-4999) and test scenes only the second half, so no item photo is shared between any two splits.

A scene is a pure function of (seed, split, index) and is described (FashionScene) before it is drawn; its
item sizes give AP by size bucket (`object_sizes`, SIZE_EDGES). The item photos come from Debian's
`dataset-fashion-mnist` package (IDX files, gzipped or not) under DEFAULT_ROOT, or any folder holding the
same four files.
"""

import functools
import gzip
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from hsvlt.data.base import MultiLabelDataset
from hsvlt.data.registry import DataRequest, register_dataset
from hsvlt.data.scenes import check_split, contrasting_color, scene_rng, surface_colors
from hsvlt.labels.names import FASHION
from hsvlt.metrics import size_bucket_edges
from hsvlt.recipes import GENERATED_DATA_DEFAULTS

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
# Fashion-MNIST's label order, named as words the text encoder knows ("T-shirt/top" -> "t-shirt").
CLASSES = FASHION  # the one copy of the list is in hsvlt/labels/names.py, in Fashion-MNIST label order
# The IDX file pair each split draws its items from, and which part of it (fractions of the file).
ITEM_SOURCES = {"train": ("train", 0.0, 1.0), "val": ("t10k", 0.0, 0.5), "test": ("t10k", 0.5, 1.0)}
MIN_SIZE, MAX_SIZE = 0.15, 0.60  # side of the item photo as a fraction of the image side (4x)
SIZE_EDGES = size_bucket_edges(MIN_SIZE, MAX_SIZE)  # small | medium | large, 1/3 of the items each
MAX_COVER = 0.25  # the most of an item's box that later items may cover
MAX_ANGLE = 20.0  # degrees
ALPHA_FULL = 48.0  # item intensity at which it becomes opaque
SHADE_FLOOR = 0.3  # the darkest an item's dye gets
MIN_LUMA_CONTRAST = 60.0
SURFACES = ("weave", "wood", "mottled", "tiles")

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(ValueError):
    """A missing or malformed IDX file; the message is one line naming the file."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: 2 zero bytes, a type code, the number of dimensions, big-endian
    int32 sizes, then the data), gzipped or raw. Written here rather than taken from a package: the readers on
    PyPI are torchvision's (which does not import beside this torch build) or unmaintained, and the format
    takes 20 lines."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise IDXError(f"{path}: IDX file not found") from None
    except (OSError, EOFError, zlib.error) as error:
        raise IDXError(f"{path}: cannot be read ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES or data[3] == 0:
        raise IDXError(f"{path}: not an IDX file (bad magic number)")
    ndim, dtype = data[3], np.dtype(_IDX_TYPES[data[2]])
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated IDX header")
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise IDXError(f"{path}: holds {len(data)} bytes, but its header {shape} needs {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise IDXError(f"{root / name}[.gz]: IDX file not found (install Debian's dataset-fashion-mnist or pass --root)")


@functools.lru_cache(maxsize=2)
def load_items(root: str | Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The item photos (N x 28 x 28 uint8) and labels (N) of one Fashion-MNIST file pair ("train", "t10k")."""
    root = Path(root)
    images_path = _idx_file(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(f"{images_path}: expected N x H x W uint8 images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IDXError(f"{labels_path}: {labels.shape} labels for {len(images)} images in {images_path.name}")
    if labels.size and labels.max() >= len(CLASSES):
        raise IDXError(f"{labels_path}: label {int(labels.max())} is not one of the {len(CLASSES)} classes")
    return images, labels.astype(np.int64)


@dataclass(frozen=True)
class FashionItem:
    label: int
    item: int  # index into the split's item photos
    x: float  # centre, fraction of width
    y: float  # centre, fraction of height
    size: float  # side of the item photo's square, fraction of the image side
    angle: float  # degrees, counter-clockwise
    mirrored: bool
    dye: tuple[int, int, int]  # RGB

    @property
    def extent(self) -> float:
        """Side of the item's box: the axis-aligned square around the turned photo (fraction of the image)."""
        turn = np.radians(self.angle)
        return self.size * float(abs(np.cos(turn)) + abs(np.sin(turn)))


@dataclass(frozen=True)
class FashionScene:
    surface: str  # one of SURFACES
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    texture_seed: int
    texture_period: float  # fraction of the image side
    texture_angle: float  # radians
    light_angle: float  # radians; also the shadow's direction
    light_strength: float
    items: tuple[FashionItem, ...]

    def targets(self, num_classes: int = len(CLASSES)) -> np.ndarray:
        target = np.zeros(num_classes, dtype=np.float32)
        for item in self.items:
            target[item.label] = 1.0
        return target

    def sizes(self, num_classes: int = len(CLASSES)) -> np.ndarray:
        """Item size per class (NaN for absent classes; a scene holds each class at most once)."""
        sizes = np.full(num_classes, np.nan, dtype=np.float32)
        for item in self.items:
            sizes[item.label] = item.size
        return sizes


def _overlap(a: FashionItem, b: FashionItem) -> float:
    """Area shared by the two item boxes, in squared image sides."""
    dx = min(a.x + a.extent / 2, b.x + b.extent / 2) - max(a.x - a.extent / 2, b.x - b.extent / 2)
    dy = min(a.y + a.extent / 2, b.y + b.extent / 2) - max(a.y - a.extent / 2, b.y - b.extent / 2)
    return max(dx, 0.0) * max(dy, 0.0)


def _fits(candidate: FashionItem, placed: list[FashionItem]) -> bool:
    """`candidate` is drawn over everything placed so far: each earlier item keeps 1 - MAX_COVER of its box."""
    for i, item in enumerate(placed):
        covered = sum(_overlap(item, later) for later in placed[i + 1 :]) + _overlap(item, candidate)
        if covered > MAX_COVER * item.extent**2:
            return False
    return True


def sample_scene(rng: np.random.Generator, items_by_class: list[np.ndarray], max_items: int = 4) -> FashionScene:
    """Draw a scene description; `items_by_class[c]` lists the split's photo indices of class c."""
    base, second = surface_colors(rng, spread=70)
    count = int(rng.integers(1, max_items + 1))
    placed: list[FashionItem] = []
    for label in rng.choice(len(CLASSES), size=count, replace=False):
        photo = int(rng.choice(items_by_class[label]))
        size = float(np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE))))
        dye = contrasting_color(rng, (base, second), MIN_LUMA_CONTRAST)
        angle, mirrored = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE)), bool(rng.random() < 0.5)
        item = FashionItem(int(label), photo, 0.5, 0.5, size, angle, mirrored, dye)
        for _ in range(50):
            x, y = rng.uniform(item.extent / 2, 1 - item.extent / 2, 2)  # the whole box inside the image
            candidate = replace(item, x=float(x), y=float(y))
            if _fits(candidate, placed):
                placed.append(candidate)
                break
    return FashionScene(
        surface=str(rng.choice(SURFACES)),
        colors=(base, second),
        texture_seed=int(rng.integers(2**31)),
        texture_period=float(rng.uniform(0.03, 0.15)),
        texture_angle=float(rng.uniform(0, np.pi)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0.05, 0.25)),
        items=tuple(placed),
    )


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _surface(scene: FashionScene, size: int) -> np.ndarray:
    """The textured background, size x size x 3 float32 on the 0-255 scale."""
    rng = np.random.default_rng(scene.texture_seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    u = np.cos(scene.texture_angle) * xx + np.sin(scene.texture_angle) * yy
    v = -np.sin(scene.texture_angle) * xx + np.cos(scene.texture_angle) * yy
    phase = 2 * np.pi / scene.texture_period
    if scene.surface == "weave":  # canvas: two crossing thread directions
        mix = 0.5 + 0.25 * (np.sin(phase * u) + np.sin(phase * v))
    elif scene.surface == "wood":  # stripes bent by low-frequency noise
        mix = 0.5 + 0.5 * np.sin(phase * u + 6 * _value_noise(rng, size, 4))
    elif scene.surface == "tiles":  # tiles four periods wide
        tiles = np.floor(u / (4 * scene.texture_period)) + np.floor(v / (4 * scene.texture_period))
        mix = (tiles % 2).astype(np.float32)
    else:  # mottled stone or paper: three octaves of value noise
        mix = sum(_value_noise(rng, size, cells) / 2**k for k, cells in enumerate((4, 9, 20))) / 1.75
    a, b = (np.array(c, dtype=np.float32) for c in scene.colors)
    return a + (b - a) * np.clip(mix, 0, 1)[..., None]


def _item_coverage(photo: np.ndarray, item: FashionItem, size: int) -> np.ndarray:
    """The item photo turned, scaled and moved to its place: size x size float32 intensities in 0..1."""
    if item.mirrored:
        photo = photo[:, ::-1]
    side = photo.shape[0]
    scale = item.size * size / side
    matrix = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), item.angle, scale)
    matrix[:, 2] += np.array([item.x * size - 0.5, item.y * size - 0.5]) - (side - 1) / 2
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    warped = cv2.warpAffine(np.ascontiguousarray(photo, dtype=np.float32), matrix, (size, size), flags=flags)
    return np.clip(warped / 255.0, 0, 1)


def compose_scene(scene: FashionScene, photos: np.ndarray, size: int) -> tuple[np.ndarray, list[float]]:
    """Draw `scene` with the split's item `photos` (N x 28 x 28). Returns the size x size x 3 uint8 RGB image
    and, per item, the fraction of its alpha mass left visible after the later items are drawn over it."""
    image = _surface(scene, size)
    shift = 0.015 * size * np.float32([np.cos(scene.light_angle), np.sin(scene.light_angle)])
    own, visible = [], []  # each item's alpha; what is left of it after the items drawn so far
    for item in scene.items:
        intensity = _item_coverage(photos[item.item], item, size)
        alpha = np.clip(intensity * (255.0 / ALPHA_FULL), 0, 1)
        shadow = cv2.GaussianBlur(alpha, (0, 0), 0.01 * size + 0.5)
        shadow = cv2.warpAffine(shadow, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (size, size))
        image *= 1 - 0.35 * shadow[..., None]
        color = np.float32(item.dye) * (SHADE_FLOOR + (1 - SHADE_FLOOR) * intensity[..., None])
        image += alpha[..., None] * (color - image)
        visible = [left * (1 - alpha) for left in visible] + [alpha]
        own.append(alpha)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    light = 1 + 2 * scene.light_strength * (np.cos(scene.light_angle) * xx + np.sin(scene.light_angle) * yy)
    grain = np.random.default_rng(scene.texture_seed + 1).normal(0, 4, (size, size, 1)).astype(np.float32)
    image = np.clip(image * light[..., None] + grain, 0, 255).astype(np.uint8)
    return image, [float(left.sum() / max(alpha.sum(), 1e-6)) for left, alpha in zip(visible, own)]


def render_scene(scene: FashionScene, photos: np.ndarray, size: int) -> np.ndarray:
    """Draw `scene` as a size x size x 3 uint8 RGB image."""
    return compose_scene(scene, photos, size)[0]


class FashionMosaicDataset(MultiLabelDataset):
    """`length` composed scenes of `image_size` pixels for one split, from the Fashion-MNIST files in `root`."""

    def __init__(
        self,
        split: str = "train",
        length: int = 8000,
        image_size: int = 128,
        seed: int = 0,
        root: str | Path = DEFAULT_ROOT,
    ):
        check_split("fashion-mosaic", split)
        super().__init__(list(CLASSES))
        self.split, self.length, self.image_size, self.seed = split, length, image_size, seed
        prefix, start, stop = ITEM_SOURCES[split]
        images, labels = load_items(str(root), prefix)
        self.first_photo = round(start * len(images))  # photos[i] is item first_photo + i of the file
        part = slice(self.first_photo, round(stop * len(images)))
        self.photos, self.photo_labels = images[part], labels[part]
        self.items_by_class = [np.flatnonzero(self.photo_labels == c) for c in range(len(CLASSES))]
        missing = [CLASSES[c] for c, items in enumerate(self.items_by_class) if len(items) == 0]
        if missing:
            raise IDXError(f"{Path(root)}: the {split} split's {prefix} items hold no {', '.join(missing)}")

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> FashionScene:
        return sample_scene(scene_rng(self.seed, self.split, index), self.items_by_class)

    def describe(self, index: int) -> str:
        return f"fashion-mosaic/{self.split}/{index}"

    def targets(self, indices=None) -> np.ndarray:
        indices = range(len(self)) if indices is None else indices
        return np.stack([self.scene(int(i)).targets() for i in indices])  # no drawing needed

    def object_sizes(self, indices=None) -> np.ndarray:
        """Item sizes (fraction of the image side) of the samples `indices` (default: all), N x C; NaN where
        a class is absent."""
        indices = range(len(self)) if indices is None else indices
        return np.stack([self.scene(int(i)).sizes() for i in indices])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        scene = self.scene(index)
        return render_scene(scene, self.photos, self.image_size), scene.targets()


@register_dataset("fashion-mosaic", labels=CLASSES, embeddings="fashion", recipe=GENERATED_DATA_DEFAULTS,
                  generated=True, root=f"the Fashion-MNIST IDX files, default {DEFAULT_ROOT}")
def dataset(request: DataRequest) -> tuple[FashionMosaicDataset, FashionMosaicDataset]:
    """composed scenes of real Fashion-MNIST item photos"""
    root = request.root or DEFAULT_ROOT
    return (FashionMosaicDataset("train", request.train_size, request.image_size, request.seed, root),
            FashionMosaicDataset("val", request.val_size, request.image_size, request.seed, root))
