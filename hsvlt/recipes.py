"""Training recipes: what `python -m hsvlt.train` uses for a dataset where a flag is not given, and what QAT
fine-tunes with (its augmentation). Each dataset names its recipe where it registers (hsvlt.data.register_dataset);
the two the built-in datasets share are here, so that a value changes in one place."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

# Scenes of the generated datasets (shapes, fashion-mosaic) unless a command says otherwise.
TRAIN_SIZE, VAL_SIZE = 12000, 1000


@dataclass(frozen=True)
class Recipe:
    """A dataset's training defaults. `lr` is the from-scratch rate (with --pretrained weights training starts
    from 1e-4); `img_size` None means the model preset's input size; `train_size` is the number of scenes a
    generated dataset draws (None for data read from files, whose size is what is on disk)."""

    epochs: int
    lr: float
    warmup_epochs: float
    crop_scale: float
    randaugment: int
    batch_size: int = 32
    img_size: int | None = None
    train_size: int | None = None
    loss: str = "bce"  # a key of hsvlt.losses.LOSSES


# The generated datasets need no crop (a crop would cut objects out and make the labels wrong) and no
# RandAugment (their scenes already vary in colour, texture and pose). Their budget (scenes x epochs at this size)
# reached validation mAP 90 on shapes with BCE at 2e-3; larger images bought little for much more time.
GENERATED_DATA_DEFAULTS = Recipe(img_size=88, train_size=TRAIN_SIZE, epochs=7, batch_size=32, crop_scale=1.0,
                                 randaugment=0, lr=2e-3, warmup_epochs=0.3)
# shapes, the data of the default run: ASL at a higher peak rate learns it in fewer epochs than BCE (the README
# gives the runs that chose this). Six epochs is the shortest budget that kept every seed the README reports at
# validation mAP 90 or more; smaller images for the first epochs (--low-res-epochs) cost more mAP than they saved.
SHAPES_DEFAULTS = replace(GENERATED_DATA_DEFAULTS, epochs=6, lr=3e-3, loss="asl")
# Photos read from files: the usual fine-tuning of multi-label benchmarks, random resized crops and RandAugment.
REAL_DATA_DEFAULTS = Recipe(img_size=None, train_size=None, epochs=40, batch_size=32, crop_scale=0.7, randaugment=2,
                            lr=1e-3, warmup_epochs=1.0)


def data_defaults(name: str) -> dict:
    """The recipe of dataset `name` (a registered name or a `module:NAME` / `file.py:NAME` dataset) as a dict."""
    from hsvlt.data import find_dataset  # the datasets name their recipes, so they import this module first

    return asdict(find_dataset(name).recipe)


def describe_defaults(field: str, unset: str = "", names: Sequence[str] | None = None) -> str:
    """The defaults of recipe `field` of the datasets `names` (default: the built-in ones) in words, for --help:
    "6 for shapes and fashion-mosaic, otherwise 40" (the value most of them share comes last; None reads as
    `unset`)."""
    from hsvlt.data import DATASETS, find_dataset

    if field not in {f.name for f in fields(Recipe)}:
        raise ValueError(f"recipes have no field {field!r}")
    groups: dict[object, list[str]] = {}
    for name in DATASETS if names is None else names:
        groups.setdefault(getattr(find_dataset(name).recipe, field), []).append(name)
    common = max(groups, key=lambda value: len(groups[value]))

    def words(value) -> str:
        return unset if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    parts = [f"{words(value)} for {_join(names)}" for value, names in groups.items() if value != common]
    return ", ".join(parts + [f"otherwise {words(common)}" if parts else words(common)])


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
