"""`shapes`: the built-in dataset. Generated multi-label scenes, no files, no download.

Each scene holds 1 to 4 objects of 10 named classes on a textured background with clutter. Object sizes are
log-uniform over a 4x range (small objects are common: this is a scale-aware model), colours and rotations
vary. A scene is a pure function of (seed, split, index): train and validation draw from different seed
streams, so they never share a scene, and any worker regenerates any scene identically.

Scenes are described (SceneSpec) before they are drawn, so the edge demo can move and rescale objects.
"""

from dataclasses import dataclass, replace

import cv2
import numpy as np

from hsvlt.data.base import MultiLabelDataset
from hsvlt.data.registry import DataRequest, register_dataset
from hsvlt.data.scenes import check_split, contrasting_color, random_color, scene_rng, surface_colors
from hsvlt.labels.names import SHAPES
from hsvlt.recipes import SHAPES_DEFAULTS

CLASSES = SHAPES  # the one copy of the list is in hsvlt/labels/names.py; OUTLINES draws each by name
MIN_SIZE, MAX_SIZE = 0.16, 0.64  # object diameter as a fraction of the image side (4x)
MAX_TILT = np.pi / 6  # objects turn up to +-30 degrees: "upright-ish", as photographed objects are
SUBPIXEL_BITS = 4


def _circle(n: int = 48, radius: float = 1.0, center=(0.0, 0.0)) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], 1)


def _star() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], 1) / 17.0


def _crescent() -> np.ndarray:
    t = np.linspace(-0.62 * np.pi, 0.62 * np.pi, 40)
    outer = np.stack([np.cos(t), np.sin(t)], 1)
    inner = np.stack([0.35 + 0.8 * np.cos(t[::-1]), 0.8 * np.sin(t[::-1])], 1)
    inner = inner[np.hypot(inner[:, 0], inner[:, 1]) < 1.0]
    return np.concatenate([outer, inner]) - [0.35, 0.0]


# Each class is a list of contours in a unit frame (radius ~1); several contours fill with holes.
OUTLINES: dict[str, list[np.ndarray]] = {
    "circle": [_circle()],
    "square": [np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])],
    "triangle": [np.array([[0.0, -1.0], [0.92, 0.7], [-0.92, 0.7]])],
    "star": [_star()],
    "cross": [
        np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1],
                  [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]])
    ],
    "heart": [_heart()],
    "ring": [_circle(), _circle(radius=0.55)],
    "crescent moon": [_crescent()],
    "arrow": [np.array([[-1, -0.22], [0.2, -0.22], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.22], [-1, 0.22]])],
    "lightning bolt": [
        np.array([[0.15, -1], [-0.55, 0.12], [-0.05, 0.12], [-0.25, 1], [0.6, -0.25], [0.08, -0.25], [0.4, -1]])
    ],
}


@dataclass(frozen=True)
class ShapeObject:
    label: int
    x: float  # centre, fraction of width
    y: float  # centre, fraction of height
    size: float  # diameter, fraction of the image side
    angle: float  # radians
    color: tuple[int, int, int]  # RGB


@dataclass(frozen=True)
class SceneSpec:
    background: str  # gradient, stripes, noise or checker
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    texture_seed: int
    texture_scale: float
    texture_angle: float
    clutter_seed: int
    objects: tuple[ShapeObject, ...]

    def targets(self, num_classes: int = len(CLASSES)) -> np.ndarray:
        target = np.zeros(num_classes, dtype=np.float32)
        for obj in self.objects:
            target[obj.label] = 1.0
        return target

    def moved(self, dt: float, speed: float = 0.05) -> "SceneSpec":
        """The scene after `dt` seconds of drift, turning and breathing; used by the demo's live stream."""
        objects = []
        for k, obj in enumerate(self.objects):
            phase = dt * (0.7 + 0.3 * k)
            objects.append(replace(
                obj,
                x=float(np.clip(obj.x + speed * np.sin(phase + k), 0.1, 0.9)),
                y=float(np.clip(obj.y + speed * np.cos(1.3 * phase + k), 0.1, 0.9)),
                size=float(np.clip(obj.size * (1 + 0.35 * np.sin(0.5 * phase + k)), MIN_SIZE, MAX_SIZE)),
                angle=obj.angle + 0.4 * dt,
            ))
        return replace(self, objects=tuple(objects))


def sample_scene(rng: np.random.Generator, max_objects: int = 4) -> SceneSpec:
    """Draw a scene description: background, 1..max_objects objects that may overlap a little but never hide
    each other (an object with no room left is dropped)."""
    base, second = surface_colors(rng, spread=40)
    count = int(rng.integers(1, max_objects + 1))
    labels = rng.choice(len(CLASSES), size=count, replace=False)
    objects: list[ShapeObject] = []
    for label in labels:
        size = float(np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE))))
        for _ in range(30):
            x, y = rng.uniform(size / 2, 1 - size / 2, 2)
            if all(np.hypot(x - o.x, y - o.y) > 0.75 * (size + o.size) / 2 for o in objects):
                break
        else:
            continue  # no room left for this object without hiding another: the scene holds fewer
        color = contrasting_color(rng, (base, second), 80)
        tilt = float(rng.uniform(-MAX_TILT, MAX_TILT))
        objects.append(ShapeObject(int(label), float(x), float(y), size, tilt, color))
    return SceneSpec(
        background=str(rng.choice(["gradient", "stripes", "noise", "checker"])),
        colors=(base, second),
        texture_seed=int(rng.integers(2**31)),
        texture_scale=float(rng.uniform(0.04, 0.25)),
        texture_angle=float(rng.uniform(0, np.pi)),
        clutter_seed=int(rng.integers(2**31)),
        objects=tuple(objects),
    )


def _background(spec: SceneSpec, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    along = np.cos(spec.texture_angle) * xx + np.sin(spec.texture_angle) * yy
    if spec.background == "gradient":
        mix = along / max(along.max(), 1e-6)
    elif spec.background == "stripes":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * along / spec.texture_scale)
    elif spec.background == "checker":
        u = np.cos(spec.texture_angle) * xx - np.sin(spec.texture_angle) * yy
        mix = ((np.floor(along / spec.texture_scale) + np.floor(u / spec.texture_scale)) % 2).astype(np.float32)
    else:
        cells = max(2, int(round(1 / spec.texture_scale)))
        coarse = np.random.default_rng(spec.texture_seed).random((cells, cells), dtype=np.float32)
        mix = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    a, b = (np.array(c, dtype=np.float32) for c in spec.colors)
    image = a + (b - a) * mix[..., None]
    grain = np.random.default_rng(spec.texture_seed + 1).normal(0, 6, (size, size, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 255).astype(np.uint8)


def _clutter(image: np.ndarray, spec: SceneSpec) -> None:
    """Distractors that are not classes: thin lines and dots (no arcs: they read as rings and crescents)."""
    rng = np.random.default_rng(spec.clutter_seed)
    size = image.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        color = random_color(rng)
        p = tuple(int(v) for v in rng.uniform(0, size, 2))
        if rng.random() < 0.6:
            q = tuple(int(v) for v in rng.uniform(0, size, 2))
            cv2.line(image, p, q, color, 1, cv2.LINE_AA)
        else:
            cv2.circle(image, p, max(1, int(size * 0.008)), color, -1, cv2.LINE_AA)


def _draw_object(image: np.ndarray, obj: ShapeObject, size: int) -> None:
    rotation = np.array([[np.cos(obj.angle), -np.sin(obj.angle)], [np.sin(obj.angle), np.cos(obj.angle)]])
    scale = obj.size * size / 2 * (1 << SUBPIXEL_BITS)
    center = np.array([obj.x, obj.y]) * size * (1 << SUBPIXEL_BITS)
    contours = [np.round(outline @ rotation.T * scale + center).astype(np.int32)
                for outline in OUTLINES[CLASSES[obj.label]]]
    cv2.fillPoly(image, contours, obj.color, cv2.LINE_AA, shift=SUBPIXEL_BITS)


def draw_objects(image: np.ndarray, spec: SceneSpec) -> None:
    """Draw the scene's objects onto `image` (size x size x 3 RGB), in place: over a scene rendered without
    objects, this gives exactly render_scene(spec)."""
    for obj in spec.objects:
        _draw_object(image, obj, image.shape[0])


def render_scene(spec: SceneSpec, size: int) -> np.ndarray:
    """Draw a scene as a size x size x 3 uint8 RGB image."""
    image = _background(spec, size)
    _clutter(image, spec)
    draw_objects(image, spec)
    return image


class ShapesDataset(MultiLabelDataset):
    """`length` generated scenes of `image_size` pixels for one split."""

    def __init__(self, split: str = "train", length: int = 8000, image_size: int = 160, seed: int = 0):
        check_split("shapes", split)
        super().__init__(list(CLASSES))
        self.split, self.length, self.image_size, self.seed = split, length, image_size, seed

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> SceneSpec:
        return sample_scene(scene_rng(self.seed, self.split, index))

    def describe(self, index: int) -> str:
        return f"shapes/{self.split}/{index}"

    def targets(self, indices=None) -> np.ndarray:
        indices = range(len(self)) if indices is None else indices
        return np.stack([self.scene(int(i)).targets() for i in indices])  # no rendering needed

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        spec = self.scene(index)
        return render_scene(spec, self.image_size), spec.targets()


@register_dataset("shapes", labels=CLASSES, embeddings="shapes", recipe=SHAPES_DEFAULTS, generated=True)
def dataset(request: DataRequest) -> tuple[ShapesDataset, ShapesDataset]:
    """generated scenes of 10 shapes, no files (built in)"""
    return (ShapesDataset("train", request.train_size, request.image_size, request.seed),
            ShapesDataset("val", request.val_size, request.image_size, request.seed))
