"""NUS-WIDE with its 81 concepts, read from the layout of the official NUS-WIDE downloads.

NUS-WIDE ships no images, only lists of Flickr photos; the images come from a separate (re-)download. This
loader reads one layout, that of the official files unpacked into one folder:

    {root}/Concepts81.txt                              the 81 concept names, one per line (ConceptsList.zip)
    {root}/ImageList/TrainImagelist.txt                image paths, one per line (ImageList.zip), relative
    {root}/ImageList/TestImagelist.txt                     to {root}/Flickr/; Windows backslashes are fine
    {root}/TrainTestLabels/Labels_{concept}_Train.txt  one 0 or 1 per line, line i for image i of the list
    {root}/TrainTestLabels/Labels_{concept}_Test.txt       (Groundtruth.zip)
    {root}/Flickr/{image path}                         e.g. Flickr/actor/0001_2124494179.jpg

Split "train" reads the Train files; "val" and "test" read the Test files (NUS-WIDE has no separate
validation split). Blank lines may end a file, not interrupt it. If Concepts81.txt names 81 concepts, they
must be those of `NUSWIDE_CLASSES` in that order; a list of another length reads just the concepts it names.

Images listed but absent on disk are common (Flickr photos disappear): they stay in the dataset, a single
warning at construction counts them, and training skips them like any unreadable image. Images with no
positive concept stay too, with all targets 0.
"""

import logging
from pathlib import Path

import numpy as np

from hsvlt.data.base import FileDataset
from hsvlt.data.registry import DataRequest, register_dataset
from hsvlt.labels.names import NUSWIDE

NUSWIDE_CLASSES = NUSWIDE  # the one copy of the list is in hsvlt/labels/names.py
SPLITS = {"train": "Train", "val": "Test", "test": "Test"}

log = logging.getLogger(__name__)


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, stripped; blank lines may end the file but not interrupt it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").rstrip().splitlines()]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not lines:
        raise ValueError(f"{path}: empty file")
    if "" in lines:
        raise ValueError(f"{path}:{lines.index('') + 1}: blank line")
    return lines


def read_concepts(path: Path) -> list[str]:
    concepts = read_lines(path)
    if len(concepts) == len(NUSWIDE_CLASSES) and tuple(concepts) != NUSWIDE_CLASSES:
        found, expected = next((a, b) for a, b in zip(concepts, NUSWIDE_CLASSES) if a != b)
        raise ValueError(f"{path}: 81 concepts, but unlike NUS-WIDE's ({found!r} where NUS-WIDE has {expected!r})")
    return concepts


def read_column(path: Path, length: int) -> np.ndarray:
    """One concept's 0/1 labels, checked to cover exactly `length` images."""
    values = read_lines(path)
    if len(values) != length:
        raise ValueError(f"{path}: {len(values)} labels, but the image list has {length} images")
    if not set(values) <= {"0", "1"}:
        bad = next(number for number, value in enumerate(values) if value not in ("0", "1"))
        raise ValueError(f"{path}:{bad + 1}: {values[bad]!r} where 0 or 1 was expected")
    return np.array(values) == "1"


class NUSWIDEDataset(FileDataset):
    """One split of NUS-WIDE as 81-concept multi-label targets."""

    def __init__(self, root: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"NUS-WIDE split {split!r}: expected one of {', '.join(SPLITS)}")
        root, part = Path(root), SPLITS[split]
        concepts = read_concepts(root / "Concepts81.txt")
        images = read_lines(root / "ImageList" / f"{part}Imagelist.txt")
        columns = [read_column(root / "TrainTestLabels" / f"Labels_{c}_{part}.txt", len(images)) for c in concepts]
        paths = [root / "Flickr" / image.replace("\\", "/") for image in images]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            log.warning("NUS-WIDE %s: %d of %d listed images are missing, e.g. %s", split, len(missing), len(paths),
                        missing[0])
        super().__init__(concepts, paths, np.stack(columns, axis=1))


# Concepts81.txt decides the concepts (a shorter list reads just those): their embeddings are picked by name from
# the shipped NUS-WIDE set.
@register_dataset("nuswide", embeddings="nuswide",
                  root="Concepts81.txt, ImageList/, TrainTestLabels/ and Flickr/ (hsvlt/data/nuswide.py)")
def dataset(request: DataRequest) -> tuple[NUSWIDEDataset, NUSWIDEDataset]:
    """NUS-WIDE 81 concepts: Train / Test lists"""
    folder = request.folder()
    return NUSWIDEDataset(folder, "train"), NUSWIDEDataset(folder, "test")
