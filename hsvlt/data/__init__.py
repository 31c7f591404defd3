"""Datasets by name, with their label embeddings.

    shapes    built in: generated scenes, no files (hsvlt/data/shapes.py)
    fashion-mosaic  composed scenes of real Fashion-MNIST item photos (hsvlt/data/fashion_mosaic.py)
    voc       PASCAL VOC 2007: trainval / test (hsvlt/data/voc.py)
    coco      MS-COCO 2014: train2014 / val2014 (hsvlt/data/coco.py)
    nuswide   NUS-WIDE 81 concepts: Train / Test lists (hsvlt/data/nuswide.py)
    csv       your own photos: ROOT/train.csv and ROOT/val.csv (hsvlt/data/custom_csv.py)
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsvlt.data.base import MultiLabelDataset

DATASETS = ("shapes", "fashion-mosaic", "voc", "coco", "nuswide", "csv")


@dataclass
class DataBundle:
    train: MultiLabelDataset
    val: MultiLabelDataset
    labels: list[str]
    embeddings: np.ndarray  # C x D_text


def _builtin_embeddings(set_name: str, labels: list[str]) -> np.ndarray:
    from hsvlt.labels import load_label_set

    label_set = load_label_set(set_name)
    if list(label_set.names) != list(labels):
        raise ValueError(f"shipped label set {set_name!r} does not match the dataset's classes")
    return label_set.embeddings


def _custom_embeddings(labels: list[str], label_file: str | None) -> np.ndarray:
    from hsvlt.labels import embed_labels, load_label_file

    if label_file is None:
        return embed_labels(labels)
    label_set = load_label_file(label_file)
    missing = [name for name in labels if name not in label_set.names]
    if missing:
        raise ValueError(f"{label_file}: no embedding for {', '.join(missing[:5])}")
    index = {name: i for i, name in enumerate(label_set.names)}
    return label_set.embeddings[[index[name] for name in labels]]


def _require_root(name: str, root: str | None) -> Path:
    if root is None:
        raise ValueError(f"--data {name} needs --root (the dataset folder)")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset folder not found")
    return path


# Scenes of the generated datasets (shapes, fashion-mosaic) unless a command says otherwise.
TRAIN_SIZE, VAL_SIZE = 12000, 1000


def build_data(
    name: str,
    root: str | None = None,
    image_size: int = 224,
    seed: int = 0,
    train_size: int = TRAIN_SIZE,
    val_size: int = VAL_SIZE,
    label_file: str | None = None,
) -> DataBundle:
    """Train and validation splits of dataset `name`, with one embedding per class.
    `train_size` / `val_size` / `image_size` set the generated datasets (shapes, fashion-mosaic); real ones
    are what is on disk."""
    if name == "shapes":
        from hsvlt.data.shapes import ShapesDataset

        train = ShapesDataset("train", train_size, image_size, seed)
        val = ShapesDataset("val", val_size, image_size, seed)
        return DataBundle(train, val, train.labels, _builtin_embeddings("shapes", train.labels))
    if name == "fashion-mosaic":
        from hsvlt.data.fashion_mosaic import DEFAULT_ROOT, FashionMosaicDataset

        path = root or DEFAULT_ROOT
        train = FashionMosaicDataset("train", train_size, image_size, seed, path)
        val = FashionMosaicDataset("val", val_size, image_size, seed, path)
        return DataBundle(train, val, train.labels, _builtin_embeddings("fashion", train.labels))
    if name == "voc":
        from hsvlt.data.voc import VOCDataset

        path = _require_root(name, root)
        train, val = VOCDataset(path, "trainval"), VOCDataset(path, "test")
        return DataBundle(train, val, train.labels, _builtin_embeddings("voc", train.labels))
    if name == "coco":
        from hsvlt.data.coco import COCODataset

        path = _require_root(name, root)
        train, val = COCODataset(path, "train"), COCODataset(path, "val")
        return DataBundle(train, val, train.labels, _builtin_embeddings("coco", train.labels))
    if name == "nuswide":
        from hsvlt.data.nuswide import NUSWIDEDataset

        path = _require_root(name, root)
        train, val = NUSWIDEDataset(path, "train"), NUSWIDEDataset(path, "test")
        return DataBundle(train, val, train.labels, _builtin_embeddings("nuswide", train.labels))
    if name == "csv":
        from hsvlt.data.custom_csv import CSVDataset, read_label_file

        path = _require_root(name, root)
        label_list = path / "labels.txt"
        labels = read_label_file(label_list) if label_list.is_file() else None
        train = CSVDataset(path / "train.csv", path, labels)
        val = CSVDataset(path / "val.csv", path, train.labels)
        return DataBundle(train, val, train.labels, _custom_embeddings(train.labels, label_file))
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
