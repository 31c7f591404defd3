"""Your own photos: a CSV file that lists images and their labels.

The CSV (UTF-8, a header row first) has a column `image` and a column `labels`; other columns are ignored:

    image,labels
    holiday/beach.jpg,person|sea|dog
    holiday/night.jpg,
    kitchen/0001.png,cup|?knife

- `image` is a path relative to `image_root` (by default the CSV's own folder), or an absolute path.
- `labels` holds label names separated by `|`. An empty cell means the image shows none of the labels (all
  targets 0). A name prefixed with `?` is ignored for that image (target -1: neither a positive nor a
  negative, e.g. an object too small to be sure of); if the same name also appears without `?`, it is positive.

The label set is the sorted union of the names in the CSV, unless `labels` is given: pass the training set's
labels when reading a validation CSV, so that both use the same classes in the same order. A label set can
also be kept in a text file read by `read_label_file`: one name per line, blank lines and lines starting
with `#` ignored.
"""

import csv
from pathlib import Path

import numpy as np

from hsvlt.data.base import IGNORED, FileDataset
from hsvlt.data.registry import DataRequest, register_dataset


def check_label_name(name: str, where: str) -> None:
    if name.startswith("?") or "|" in name:
        raise ValueError(f"{where}: label name {name!r} may neither start with '?' nor contain '|'")


def read_label_file(path: str | Path) -> list[str]:
    """Label names, one per line; blank lines and lines starting with `#` are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    labels: list[str] = []
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        check_label_name(name, f"{path}:{number}")
        if name in labels:
            raise ValueError(f"{path}:{number}: label {name!r} listed twice")
        labels.append(name)
    if not labels:
        raise ValueError(f"{path}: no label names")
    return labels


def parse_labels(cell: str, where: str) -> tuple[set[str], set[str]]:
    """The positive and the ignored names of one `labels` cell."""
    positive, ignored = set(), set()
    for piece in cell.split("|"):
        name = piece.strip()
        if name.startswith("?"):
            name = name[1:].strip()
            if not name:
                raise ValueError(f"{where}: '?' without a label name")
            ignored.add(name)
        elif name:
            positive.add(name)
    return positive, ignored


def read_rows(path: Path) -> list[tuple[str, str, set[str], set[str]]]:
    """(where, image, positive names, ignored names) for each data row; `where` is "file:line"."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file, strict=True)
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in ("image", "labels") if name not in header]
            if missing:
                raise ValueError(f"{path}:1: the header lacks the column(s) {', '.join(missing)}")
            image_column, labels_column = header.index("image"), header.index("labels")
            for fields in reader:
                where = f"{path}:{reader.line_num}"
                if not any(field.strip() for field in fields):
                    continue
                if len(fields) != len(header):
                    raise ValueError(f"{where}: {len(fields)} fields, but the header has {len(header)}")
                image = fields[image_column].strip()
                if not image:
                    raise ValueError(f"{where}: empty image path")
                rows.append((where, image, *parse_labels(fields[labels_column], where)))
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise ValueError(f"{path}: no images listed")
    return rows


class CSVDataset(FileDataset):
    """Images and labels listed in a CSV file (see the module docstring for the format)."""

    def __init__(self, csv_path: str | Path, image_root: str | Path | None = None, labels: list[str] | None = None):
        csv_path = Path(csv_path)
        rows = read_rows(csv_path)
        if labels is None:
            labels = sorted(set().union(*(positive | ignored for _, _, positive, ignored in rows)))
            if not labels:
                raise ValueError(f"{csv_path}: no row names any label")
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"{csv_path}: the labels given to read it name a class twice")
        column = {name: index for index, name in enumerate(labels)}
        targets = np.zeros((len(rows), len(labels)), dtype=np.float32)
        for row, (where, _, positive, ignored) in enumerate(rows):
            for name in sorted(positive | ignored):
                if name not in column:
                    raise ValueError(f"{where}: unknown label {name!r} (not among the {len(labels)} labels given)")
            targets[row, [column[name] for name in ignored]] = IGNORED
            targets[row, [column[name] for name in positive]] = 1.0  # after the ignored: a positive wins
        first_row: dict[str, str] = {}
        for where, image, _, _ in rows:
            if image in first_row:
                raise ValueError(f"{where}: {image} is listed again (first at line {first_row[image].split(':')[-1]}); "
                                 f"give each image one row with all its labels")
            first_row[image] = where
        if not (targets > 0).any():
            raise ValueError(f"{csv_path}: no image has a positive label (every labels cell is empty or ?-ignored), "
                             f"so there is nothing to learn or score")
        root = csv_path.parent if image_root is None else Path(image_root)
        super().__init__(labels, [root / image for _, image, _, _ in rows], targets)


# Your classes, whatever they are named: their embeddings are computed when training starts, or read from
# --label-file.
@register_dataset("csv", root="train.csv and val.csv, and labels.txt to fix the label order")
def dataset(request: DataRequest) -> tuple[CSVDataset, CSVDataset]:
    """your own photos: ROOT/train.csv and ROOT/val.csv"""
    folder = request.folder()
    label_list = folder / "labels.txt"
    labels = read_label_file(label_list) if label_list.is_file() else None
    train = CSVDataset(folder / "train.csv", folder, labels)
    return train, CSVDataset(folder / "val.csv", folder, train.labels)
