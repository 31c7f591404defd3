"""MS-COCO (2014 or 2017) classification, read from the official annotation files.

    {root}/annotations/instances_{split}{year}.json    e.g. instances_train2014.json, instances_val2017.json
    {root}/{split}{year}/{file_name}                    e.g. train2014/COCO_train2014_000000000009.jpg

An image's target for a category is 1 if any annotation of that category lies in the image (crowd
annotations included, as ML-GCN and Query2Label count them), otherwise 0. Images without annotations stay
in the dataset with all targets 0. Images keep the order of the file's "images" list.

COCO's category ids run from 1 to 90 with gaps; classes are the categories sorted by id, named as in the
file. A file with 80 categories must name them as COCO does (`COCO_CLASSES`). Other COCO-format files (a
subset, or your own categories) are read the same way.
"""

import json
from pathlib import Path

import numpy as np

from hsvlt.data.base import FileDataset
from hsvlt.data.registry import DataRequest, register_dataset
from hsvlt.labels.names import COCO

COCO_CLASSES = COCO  # the one copy of the list is in hsvlt/labels/names.py


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return data


def entries(data: dict, key: str, fields: tuple[str, ...], path: Path) -> list[tuple]:
    """The `fields` of every entry of the list `data[key]`, as tuples; fields named "*id" must be integers."""
    items = data.get(key)
    if not isinstance(items, list):
        raise ValueError(f"{path}: no {key!r} list")
    rows = []
    for number, item in enumerate(items):
        try:
            row = tuple(item[field] for field in fields)
        except (KeyError, TypeError):
            raise ValueError(f"{path}: {key}[{number}] lacks one of the fields {', '.join(fields)}") from None
        for field, value in zip(fields, row):
            if field.endswith("id") and not isinstance(value, int):
                raise ValueError(f"{path}: {key}[{number}].{field} is {value!r}, expected an integer")
        rows.append(row)
    return rows


def index_of(keys: list, what: str, path: Path) -> dict:
    """Map each key to its position; a repeated key is an error."""
    index = {}
    for position, key in enumerate(keys):
        if key in index:
            raise ValueError(f"{path}: {what} {key!r} appears twice")
        index[key] = position
    return index


class COCODataset(FileDataset):
    """One split of a COCO-format instances file as multi-label targets."""

    def __init__(self, root: str | Path, split: str = "train", year: str = "2014"):
        root = Path(root)
        path = root / "annotations" / f"instances_{split}{year}.json"
        data = read_json(path)
        images = entries(data, "images", ("id", "file_name"), path)
        categories = sorted(entries(data, "categories", ("id", "name"), path), key=lambda category: category[0])
        annotations = entries(data, "annotations", ("image_id", "category_id"), path)

        names = [str(name) for _, name in categories]
        if not names:
            raise ValueError(f"{path}: no categories")
        if len(names) == len(COCO_CLASSES) and tuple(names) != COCO_CLASSES:
            found, expected = next((a, b) for a, b in zip(names, COCO_CLASSES) if a != b)
            raise ValueError(f"{path}: 80 categories, but named unlike COCO's ({found!r} where COCO has {expected!r})")
        row_of = index_of([image_id for image_id, _ in images], "image id", path)
        column_of = index_of([category_id for category_id, _ in categories], "category id", path)

        targets = np.zeros((len(images), len(names)), dtype=np.float32)
        for number, (image_id, category_id) in enumerate(annotations):
            if image_id not in row_of:
                raise ValueError(f"{path}: annotations[{number}] refers to unknown image id {image_id!r}")
            if category_id not in column_of:
                raise ValueError(f"{path}: annotations[{number}] refers to unknown category id {category_id!r}")
            targets[row_of[image_id], column_of[category_id]] = 1.0
        folder = root / f"{split}{year}"
        super().__init__(names, [folder / str(file_name) for _, file_name in images], targets)


# The labels are the categories the file names: COCO's 80, or some of them, whose embeddings are picked by name from
# the shipped COCO set (categories of your own take theirs from --label-file).
@register_dataset("coco", embeddings="coco", root="annotations/ and train2014/, val2014/")
def dataset(request: DataRequest) -> tuple[COCODataset, COCODataset]:
    """MS-COCO 2014: train2014 / val2014"""
    folder = request.folder()
    return COCODataset(folder, "train"), COCODataset(folder, "val")
