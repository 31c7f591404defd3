"""Training recipes: what `python -m hsvlt.train` uses for a dataset where a flag is not given, and what QAT
fine-tunes with (its augmentation). Each dataset names its recipe where it registers (hsvlt.data.register_dataset;
hsvlt.data.data_defaults reads it back); the ones the built-in datasets share are here, so that a value changes in
one place."""

from dataclasses import dataclass, replace

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

