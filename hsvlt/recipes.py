"""The training recipe of each kind of dataset: what `python -m hsvlt.train` uses where a flag is not given, and
what QAT fine-tunes with (its augmentation)."""

from hsvlt.data import TRAIN_SIZE

# The generated datasets need no crop (a crop would cut objects out and make the labels wrong) and no
# RandAugment (their scenes already vary in colour, texture and pose). Their budget (scenes x epochs at this size,
# bf16 where the CPU has it) is the smallest that reached validation mAP 90 on 2 CPU cores in the runs the README
# reports; larger images or more epochs bought little for much more time. `lr` is the from-scratch rate.
GENERATED_DATA_DEFAULTS = dict(img_size=88, train_size=TRAIN_SIZE, epochs=6, batch_size=32, crop_scale=1.0,
                               randaugment=0, lr=2e-3, warmup_epochs=0.3)
DATA_DEFAULTS = {
    "shapes": GENERATED_DATA_DEFAULTS,
    "fashion-mosaic": GENERATED_DATA_DEFAULTS,
    "real": dict(img_size=None, train_size=None, epochs=40, batch_size=32, crop_scale=0.7, randaugment=2,
                 lr=1e-3, warmup_epochs=1.0),
}
GENERATED_DATASETS = tuple(name for name, defaults in DATA_DEFAULTS.items() if defaults is GENERATED_DATA_DEFAULTS)


def data_defaults(name: str) -> dict:
    """The defaults of dataset `name` (a generated one, or any real one)."""
    return DATA_DEFAULTS.get(name, DATA_DEFAULTS["real"])
