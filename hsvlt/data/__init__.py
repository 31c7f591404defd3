"""Datasets by name, with their label embeddings.

Every dataset is one module that registers itself (`register_dataset`, hsvlt/data/registry.py) with its name,
builder, label names, embeddings and training recipe. The built-in ones:

    shapes          generated scenes, no files (hsvlt/data/shapes.py)
    fashion-mosaic  composed scenes of real Fashion-MNIST item photos (hsvlt/data/fashion_mosaic.py)
    voc             PASCAL VOC 2007: trainval / test (hsvlt/data/voc.py)
    coco            MS-COCO 2014: train2014 / val2014 (hsvlt/data/coco.py)
    nuswide         NUS-WIDE 81 concepts: Train / Test lists (hsvlt/data/nuswide.py)
    csv             your own photos: ROOT/train.csv and ROOT/val.csv (hsvlt/data/custom_csv.py)

A dataset of your own, in a module outside the package, trains with `--data module:NAME` or
`--data path/to/file.py:NAME` (docs/DESIGN.md, "Datasets").
"""

from hsvlt.data.registry import (
    DataBundle,
    DataRequest,
    DatasetEntry,
    DatasetError,
    build_data,
    canonical_spec,
    data_defaults,
    dataset_argument,
    dataset_names,
    describe_defaults,
    find_dataset,
    label_embeddings,
    register_dataset,
)
from hsvlt.recipes import TRAIN_SIZE, VAL_SIZE

# Importing a built-in dataset's module registers it; this order is the order --help lists them in.
from hsvlt.data import shapes, fashion_mosaic, voc, coco, nuswide, custom_csv  # noqa: F401  isort: skip

# The built-in datasets' names (a dataset of your own joins the registry when its module is imported).
DATASETS = dataset_names()

__all__ = ["DATASETS", "TRAIN_SIZE", "VAL_SIZE", "DataBundle", "DataRequest", "DatasetEntry", "DatasetError",
           "build_data", "canonical_spec", "data_defaults", "dataset_argument", "dataset_names", "describe_defaults",
           "find_dataset", "label_embeddings", "register_dataset"]
