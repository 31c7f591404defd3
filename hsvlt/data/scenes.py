"""What the generated datasets (shapes, fashion-mosaic) share: their splits, each scene drawn from its own random
generator, and the colours of surfaces and objects."""

import numpy as np

SPLITS = {"train": 0, "val": 1, "test": 2}


def check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{dataset} has splits {sorted(SPLITS)}, not {split!r}")


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one scene: a pure function of (seed, split, index), so a scene is the same in any worker,
    epoch or run, and the splits never share one."""
    return np.random.default_rng([seed, SPLITS[split], index])


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def luma(color) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def surface_colors(rng: np.random.Generator, spread: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A background colour and a second one within +-spread of it per channel (the surface's pattern)."""
    base = random_color(rng)
    return base, tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


def contrasting_color(rng: np.random.Generator, surface: tuple, min_contrast: float) -> tuple[int, int, int]:
    """A random colour whose luma differs by at least `min_contrast` from each of the surface's colours."""
    color = random_color(rng)
    while min(abs(luma(color) - luma(other)) for other in surface) < min_contrast:
        color = random_color(rng)
    return color
