"""The dataset registry: each dataset, built in or yours, is one module that registers itself beside its code.

    @register_dataset("dots", labels=COLOURS, embeddings="dots.npz", recipe=GENERATED_DATA_DEFAULTS, generated=True)
    def dots(request: DataRequest):
        \"\"\"Coloured dots on grey, generated.\"\"\"
        return DotsDataset("train", request.train_size, ...), DotsDataset("val", request.val_size, ...)

Commands open a dataset by what `--data` says (`find_dataset`): a registered name, or a dataset of your own as
`module:NAME` or `path/to/file.py:NAME`, the module's attribute NAME being what `register_dataset` returned.
docs/DESIGN.md ("Datasets") has a complete example.
"""

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from hsvlt.data.base import MultiLabelDataset
from hsvlt.recipes import REAL_DATA_DEFAULTS, VAL_SIZE, Recipe


class DatasetError(ValueError):
    """A dataset that cannot be found or registered; the message is one line naming it."""


@dataclass(frozen=True)
class DataRequest:
    """What a command asks of a dataset's builder. `train_size`, `val_size` and `image_size` size the scenes of a
    generated dataset (a dataset read from files is what is on disk); `root` is --root (None when not given)."""

    name: str
    root: Path | None
    image_size: int
    seed: int
    train_size: int | None
    val_size: int

    def folder(self) -> Path:
        """--root, which this dataset needs: refused in one line when it is not given or not there."""
        if self.root is None:
            raise DatasetError(f"--data {self.name} needs --root (the dataset folder)")
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        return self.root


Builder = Callable[[DataRequest], tuple[MultiLabelDataset, MultiLabelDataset]]


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset (see `register_dataset` for the fields)."""

    name: str
    build: Builder
    labels: tuple[str, ...] | None
    embeddings: str | os.PathLike | None
    recipe: Recipe
    generated: bool
    root: str | None
    summary: str

    @property
    def module(self) -> str:
        return self.build.__module__


@dataclass
class DataBundle:
    train: MultiLabelDataset
    val: MultiLabelDataset
    labels: list[str]
    embeddings: np.ndarray  # C x D_text
    generated: bool = False  # scenes drawn from the seed: cheap to keep in memory, sized by the command


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    *,
    labels: Sequence[str] | None = None,
    embeddings: str | os.PathLike | None = None,
    recipe: Recipe = REAL_DATA_DEFAULTS,
    generated: bool = False,
    root: str | None = None,
) -> Callable[[Builder], DatasetEntry]:
    """Register the decorated builder as dataset `name`; the decorator returns its `DatasetEntry`.

    The builder takes a `DataRequest` and returns (training split, validation split), two MultiLabelDatasets
    with the same labels; its docstring's first line describes the dataset in --help.

    labels      the class names in target order (checked against the splits); None: the data names them
    embeddings  where each class's text embedding comes from: a built-in label set's name (hsvlt.labels.LABEL_SETS),
                a label file (.npz, written by `python -m hsvlt.labels`; rows are picked by name, so it may hold
                more), or None: computed when training starts (needs the text extra). --label-file overrides it.
    recipe      the training defaults (hsvlt.recipes): REAL_DATA_DEFAULTS for photos, GENERATED_DATA_DEFAULTS
                for drawn scenes, or your own Recipe
    generated   scenes drawn from the seed: --train-size, --val-size and --img-size size them, and training draws
                them once into memory; the recipe must then give img_size and train_size
    root        what --root holds, for --help; None: the dataset reads no folder
    """
    if not name or ":" in name or name != name.strip():
        raise DatasetError(f"dataset name {name!r}: give a non-empty name without ':' or surrounding spaces")
    if generated and (recipe.img_size is None or recipe.train_size is None):
        raise DatasetError(f"dataset {name}: a generated dataset's recipe needs img_size and train_size")

    def register(build: Builder) -> DatasetEntry:
        if not callable(build):
            raise DatasetError(f"dataset {name}: register_dataset decorates the function that builds the splits")
        taken = _REGISTRY.get(name)
        if taken is not None and taken.module != build.__module__:
            raise DatasetError(f"dataset name {name!r} is taken (by {taken.module}); choose another")
        summary = (build.__doc__ or "").strip().split("\n")[0]
        entry = DatasetEntry(name, build, tuple(labels) if labels is not None else None, embeddings, recipe,
                             generated, root, summary)
        _REGISTRY[name] = entry
        return entry

    return register


def dataset_names() -> tuple[str, ...]:
    """The registered datasets, in the order they registered (the built-in ones first)."""
    return tuple(_REGISTRY)


# How a dataset outside the package is named: `--data module:NAME` or `--data path/to/file.py:NAME`, the same
# `module:attribute` form as console scripts and entry points. Chosen over an entry-point group because it needs
# no installed distribution: a file beside your photos trains as it is, and an installed package's dataset is
# reached the same way (`--data mypackage.birds:birds`). The spec is what a checkpoint records (a file with its
# absolute path), so evaluation and QAT open the same data again.
def find_dataset(spec: str) -> DatasetEntry:
    """The dataset `spec` names: a registered name, `module:NAME` or `path/to/file.py:NAME` (its module is
    imported, registering its datasets; NAME is the attribute that register_dataset returned)."""
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if ":" not in spec:
        raise DatasetError(f"--data {spec}: no dataset of that name (registered: {', '.join(_REGISTRY)}; one of your "
                           f"own: module:NAME or path/to/file.py:NAME)")
    source, attribute = spec.rsplit(":", 1)
    module = _import_file(spec, source) if _is_file(source) else _import_module(spec, source)
    if not hasattr(module, attribute):
        raise DatasetError(f"--data {spec}: {module.__name__} has no attribute {attribute!r}")
    entry = getattr(module, attribute)
    if not isinstance(entry, DatasetEntry):
        raise DatasetError(f"--data {spec}: {module.__name__}.{attribute} is a {type(entry).__name__}, not a dataset "
                           f"(decorate its builder with @hsvlt.data.register_dataset)")
    return entry


def data_defaults(spec: str) -> dict:
    """The recipe of dataset `spec` (a registered name or a `module:NAME` / `file.py:NAME` dataset) as a dict."""
    return asdict(find_dataset(spec).recipe)


def describe_defaults(field: str, names: Sequence[str], unset: str = "") -> str:
    """The defaults of recipe `field` of the datasets `names` in words, for --help: "6 for shapes, 7 for
    fashion-mosaic, otherwise 40" (the value most of them share comes last; None reads as `unset`)."""
    if field not in {f.name for f in fields(Recipe)}:
        raise ValueError(f"recipes have no field {field!r}")
    groups: dict[object, list[str]] = {}
    for name in names:
        groups.setdefault(getattr(find_dataset(name).recipe, field), []).append(name)
    common = max(groups, key=lambda value: len(groups[value]))

    def words(value) -> str:
        return unset if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    parts = [f"{words(value)} for {_join(names)}" for value, names in groups.items() if value != common]
    return ", ".join(parts + [f"otherwise {words(common)}" if parts else words(common)])


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def canonical_spec(spec: str) -> str:
    """`spec` as a checkpoint records it: a file dataset with its absolute path (usable from any folder)."""
    if spec not in _REGISTRY and ":" in spec:
        source, attribute = spec.rsplit(":", 1)
        if _is_file(source):
            return f"{Path(source).resolve()}:{attribute}"
    return spec


def dataset_argument(text: str) -> str:
    """argparse type of --data: the spec, checked (the dataset is found) and made canonical."""
    try:
        find_dataset(text)
    except DatasetError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--data ")) from None
    return canonical_spec(text)


def _is_file(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source


def _import_module(spec: str, name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
            raise DatasetError(f"--data {spec}: no module named {name!r} (run from the folder that holds it, or "
                               f"give its file: path/to/{name.split('.')[-1]}.py:NAME)") from None
        raise DatasetError(f"--data {spec}: importing {name} failed: {error}") from None
    except (ImportError, SyntaxError, DatasetError) as error:
        raise DatasetError(f"--data {spec}: importing {name} failed: {error}") from None


def _import_file(spec: str, source: str):
    """Import a dataset's file as the module of its name, its folder put on sys.path: data-loading workers that
    start fresh processes (spawn, on macOS and Windows) unpickle its classes by that name."""
    path = Path(source).resolve()
    if path.suffix != ".py" or not path.is_file():
        raise DatasetError(f"--data {spec}: no Python file at {path}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != path:
            raise DatasetError(f"--data {spec}: a module named {name!r} is already imported (from "
                               f"{getattr(loaded, '__file__', None) or 'built in'}); rename {path.name}")
        return loaded
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module = _import_module(spec, name)
    if Path(getattr(module, "__file__", "") or "").resolve() != path:
        raise DatasetError(f"--data {spec}: the name {name!r} imports {module.__file__}, not {path}; "
                           f"rename {path.name}")
    return module


def build_data(
    name: str,
    root: str | None = None,
    image_size: int = 224,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    label_file: str | None = None,
) -> DataBundle:
    """Train and validation splits of dataset `name` (a registered name or a `module:NAME` spec), with one text
    embedding per class. `train_size` / `val_size` / `image_size` size a generated dataset (default: its recipe's
    train_size, and VAL_SIZE); data read from files is what is on disk. `label_file` overrides where the
    dataset's embeddings come from."""
    entry = find_dataset(name)
    request = DataRequest(name, Path(root) if root is not None else None, image_size, seed,
                          train_size or entry.recipe.train_size, val_size or VAL_SIZE)
    train, val = entry.build(request)
    for split, dataset in (("training", train), ("validation", val)):
        if not isinstance(dataset, MultiLabelDataset):
            raise DatasetError(f"dataset {entry.name} ({entry.module}): its {split} split is a "
                               f"{type(dataset).__name__}, not a hsvlt.data.base.MultiLabelDataset")
    if entry.labels is not None and list(train.labels) != list(entry.labels):
        raise DatasetError(f"dataset {entry.name} ({entry.module}): its training split's labels differ from the "
                           f"{len(entry.labels)} it registered")
    if list(val.labels) != list(train.labels):
        raise DatasetError(f"dataset {entry.name} ({entry.module}): its validation split has other labels than its "
                           f"training split")
    source = label_file if label_file is not None else entry.embeddings
    return DataBundle(train, val, list(train.labels), label_embeddings(train.labels, source), entry.generated)


def label_embeddings(labels: Sequence[str], source: str | os.PathLike | None) -> np.ndarray:
    """One text embedding per label, in `labels`' order, from `source`: a built-in label set's name, a label file
    (rows picked by name), or None (computed now with the text encoder)."""
    from hsvlt.labels import LABEL_SETS, embed_labels, load_label_file, load_label_set

    if source is None:
        return embed_labels(list(labels))
    label_set = load_label_set(source) if isinstance(source, str) and source in LABEL_SETS else load_label_file(source)
    index = {name: i for i, name in enumerate(label_set.names)}
    missing = [name for name in labels if name not in index]
    if missing:
        raise DatasetError(f"{source}: no embedding for {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return label_set.embeddings[[index[name] for name in labels]]
