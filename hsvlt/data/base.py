"""What every dataset provides, and the batch collation (images are decoded by hsvlt.images).

A dataset returns RGB uint8 images (H x W x 3) and targets of 1 (present), 0 (absent) or -1 (ignored, e.g.
VOC's "difficult" objects). Augmentation and batching happen in `SampleDataset` and `collate`.
"""

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from hsvlt.images import BadImage, read_image

IGNORED = -1.0


class MultiLabelDataset:
    """Base class: `labels` names the classes, `load(i)` returns (RGB uint8 image, float32 targets)."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """What to name in a message about sample `index` (its file, usually)."""
        return f"sample {index}"

    def targets(self, indices=None) -> np.ndarray:
        """Targets of the samples `indices` (default: all), N x C. Subclasses make this cheap."""
        indices = range(len(self)) if indices is None else indices
        return np.stack([self.load(i)[1] for i in indices])

    def prevalence(self, limit: int = 2000) -> np.ndarray:
        """Fraction of positives per class, estimated from up to `limit` evenly spaced samples."""
        indices = np.linspace(0, len(self) - 1, min(limit, len(self))).astype(int)
        targets = self.targets(indices)
        known = targets >= 0
        return (targets > 0).sum(0) / np.maximum(known.sum(0), 1)


class FileDataset(MultiLabelDataset):
    """A dataset of image files with known targets (all the real formats)."""

    def __init__(self, labels: list[str], paths: list[Path], targets: np.ndarray):
        super().__init__(labels)
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        self.paths = [Path(p) for p in paths]
        self.target_matrix = np.asarray(targets, dtype=np.float32).reshape(len(paths), len(labels))

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def missing_files(self) -> list[Path]:
        """Listed images that are not on disk (they would be skipped when loaded)."""
        return [path for path in self.paths if not path.is_file()]

    def targets(self, indices=None) -> np.ndarray:
        return self.target_matrix if indices is None else self.target_matrix[indices]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return read_image(self.paths[index]), self.target_matrix[index]


class InMemoryDataset(MultiLabelDataset):
    """Every sample of a generated dataset drawn once, kept as one uint8 array. Drawing a scene costs 1-2 ms,
    every epoch, on the cores that train; 12000 scenes at 96 px take 330 MB. Data-loading workers fork after
    this is filled, so they share the array."""

    def __init__(self, dataset: MultiLabelDataset, desc: str = "drawing scenes"):
        super().__init__(dataset.labels)
        self.source = dataset
        first, _ = dataset.load(0)
        self.images = np.empty((len(dataset), *first.shape), dtype=np.uint8)
        self.images[0] = first
        for i in tqdm(range(1, len(dataset)), desc=desc, leave=False, mininterval=1.0):
            self.images[i] = dataset.load(i)[0]
        self.target_matrix = dataset.targets()

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> str:
        return self.source.describe(index)

    def targets(self, indices=None) -> np.ndarray:
        return self.target_matrix if indices is None else self.target_matrix[indices]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.target_matrix[index]


class FirstSamples(MultiLabelDataset):
    """The first `count` samples of a dataset (a quick evaluation)."""

    def __init__(self, dataset: MultiLabelDataset, count: int):
        super().__init__(dataset.labels)
        self.dataset, self.count = dataset, min(count, len(dataset))

    def __len__(self) -> int:
        return self.count

    def describe(self, index: int) -> str:
        return self.dataset.describe(index)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.load(index)


class SampleDataset(torch.utils.data.Dataset):
    """Applies a transform; a bad image becomes a `None` sample that `collate` drops and counts.

    The transform receives (image, seed) so that augmentation is a pure function of (seed, epoch, index):
    results do not depend on the number of workers, and a resumed run sees the same images. A key is an
    index or an (epoch, index) pair (from hsvlt.data.loader.EpochSampler)."""

    def __init__(self, dataset: MultiLabelDataset, transform: Callable[[np.ndarray, int], np.ndarray], seed: int = 0):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        try:
            image, target = self.dataset.load(index)
        except BadImage as error:
            return None, index, str(error)
        image = self.transform(image, hash((self.seed, epoch, index)) & 0x7FFFFFFF)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(target), index


def collate(samples: list) -> dict:
    """Stack good samples as uint8 B x H x W x 3 images; report bad ones by index and reason."""
    good = [s for s in samples if s[0] is not None]
    bad = [(s[1], s[2]) for s in samples if s[0] is None]
    if not good:
        return {"images": None, "targets": None, "indices": torch.empty(0, dtype=torch.long), "bad": bad}
    images, targets, indices = zip(*good)
    return {
        "images": torch.stack(images),
        "targets": torch.stack(targets),
        "indices": torch.tensor(indices),
        "bad": bad,
    }


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 B x H x W x 3 -> float B x 3 x H x W in [0, 1] on `device` (the model normalises)."""
    images = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return images.float().div_(255.0).contiguous(memory_format=torch.channels_last)
