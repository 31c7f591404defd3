"""PASCAL VOC (2007 or 2012) classification, read from the official VOCdevkit layout.

    VOCdevkit/VOC2007/
        ImageSets/Main/{split}.txt    one image id per line (train, val, trainval or test)
        Annotations/{id}.xml          the objects of each image: <object><name> and <difficult>
        JPEGImages/{id}.jpg

`root` may be the folder holding `VOCdevkit/`, `VOCdevkit/` itself, or `VOCdevkit/VOC2007/` itself.

Targets per class: 1 if the image holds a non-difficult object of the class; -1 (ignored) if it holds
only "difficult" ones, as the VOC evaluation does; otherwise 0. An object without a <difficult> tag counts
as non-difficult.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from hsvlt.data.base import IGNORED, FileDataset
from hsvlt.data.registry import DataRequest, register_dataset
from hsvlt.labels.names import VOC

VOC_CLASSES = VOC  # the one copy of the list is in hsvlt/labels/names.py


def find_voc_folder(root: str | Path, year: str) -> Path:
    """The `VOC{year}` folder, given it, the `VOCdevkit` folder, or the folder holding `VOCdevkit`."""
    root = Path(root)
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no VOC{year} dataset here (looked for ImageSets/Main, VOC{year}/ and VOCdevkit/)")


def read_image_ids(path: Path) -> list[str]:
    """The image ids of an ImageSets/Main split file, one per line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if len(fields) > 1:
            raise ValueError(f"{path}:{number}: expected one image id, found {line.strip()!r}")
        ids.extend(fields)
    if not ids:
        raise ValueError(f"{path}: no image ids")
    return ids


def read_annotation(path: Path) -> np.ndarray:
    """The targets (1, 0 or -1 per VOC class) of one Annotations/{id}.xml file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        raise ValueError(f"{path}: not valid XML ({error})") from None
    present, difficult_only = set(), set()
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ValueError(f"{path}: unknown VOC class {name!r}" if name else f"{path}: an <object> without <name>")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise ValueError(f"{path}: <difficult> of a {name} is {flag!r}, expected 0 or 1")
        (difficult_only if flag == "1" else present).add(name)
    targets = np.zeros(len(VOC_CLASSES), dtype=np.float32)
    for index, name in enumerate(VOC_CLASSES):
        if name in present:
            targets[index] = 1.0
        elif name in difficult_only:
            targets[index] = IGNORED
    return targets


class VOCDataset(FileDataset):
    """One split of PASCAL VOC as 20-class multi-label targets."""

    def __init__(self, root: str | Path, split: str = "trainval", year: str = "2007"):
        folder = find_voc_folder(root, str(year))
        ids = read_image_ids(folder / "ImageSets" / "Main" / f"{split}.txt")
        targets = np.stack([read_annotation(folder / "Annotations" / f"{i}.xml") for i in ids])
        paths = [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
        super().__init__(list(VOC_CLASSES), paths, targets)


@register_dataset("voc", labels=VOC_CLASSES, embeddings="voc", root="the folder holding VOCdevkit")
def dataset(request: DataRequest) -> tuple[VOCDataset, VOCDataset]:
    """PASCAL VOC 2007: trainval / test"""
    folder = request.folder()
    return VOCDataset(folder, "trainval"), VOCDataset(folder, "test")
