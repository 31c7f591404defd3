"""Train HSVLT: `python -m hsvlt.train` (one process) or `torchrun --nproc_per_node N -m hsvlt.train` (DDP).

With no arguments it trains hsvlt_nano on the built-in `shapes` data on the CPU (10 to 25 minutes on 2 cores,
by CPU; the README has the measured runs) and prints the validation figures. Everything a run produces
lands in --out:

    last.pt        full training state, rewritten atomically every epoch and every --checkpoint-minutes
    best.pt        weights of the best epoch by validation mAP, with per-class thresholds (for the exporters)
    log.jsonl      one line per epoch; curves.png: loss and mAP per epoch
    metrics.json   the best epoch's mAP, CP, CR, CF1, OP, OR, OF1 (percent) and the thresholds

A run that stops for any reason continues exactly where it stopped with `--resume`.
"""

import argparse
import functools
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from hsvlt import distributed
from hsvlt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hsvlt.cli import (
    StopRequest,
    UsageError,
    attention_stage,
    float_range,
    image_size,
    int_between,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    program,
    run_command,
)
from hsvlt.data import (
    DATASETS,
    VAL_SIZE,
    build_data,
    canonical_spec,
    data_defaults,
    dataset_argument,
    describe_defaults,
    find_dataset,
)
from hsvlt.data.base import FileDataset, InMemoryDataset
from hsvlt.data.loader import eval_loader, train_loader
from hsvlt.data.transforms import eval_transform, train_transform
from hsvlt.engine import (  # parameter_groups, stage_of, warmup_cosine: importable from here as before
    Engine,
    freeze_batch_norm_statistics,
    parameter_groups,  # noqa: F401
    stage_of,  # noqa: F401
    warmup_cosine,  # noqa: F401
)
from hsvlt.evaluate import format_report, score_loader
from hsvlt.losses import LOSSES
from hsvlt.metrics import calibrate_thresholds, evaluate_scores
from hsvlt.models import PRESETS, create_model
from hsvlt.models.classifier import is_backbone
from hsvlt.models.config import FUSIONS, LANGUAGE_UPDATES, HSVLTConfig
from hsvlt.outputs import check_output_folder, run_folder, write_json
from hsvlt.run_log import RunLog, TrainingWatch, label_rms_bound


@dataclass
class TrainConfig:
    """Everything one training run depends on, as nanoGPT's config or the model's HSVLTConfig: the command line
    parses its flags into one (`parse_args`), tools build one directly (`train(TrainConfig(epochs=3))`). None
    means "the dataset's recipe" (hsvlt.recipes.Recipe, named where the dataset registers) or the preset's;
    `resolved()` fills those in."""

    # data
    data: str = "shapes"
    root: str | None = None
    label_file: str | None = None
    train_size: int | None = None
    val_size: int = VAL_SIZE
    img_size: int | None = None
    crop_scale: float | None = None
    randaugment: int | None = None
    low_res_epochs: int = 0
    low_res_size: int | None = None
    workers: int = 1
    # model
    model: str = "hsvlt_nano"
    heads: int | None = None
    drop_path: float | None = None
    visual_feedback: bool = False
    language_update: str | None = None
    head_norm: bool | None = None
    fusion: str = "ivla"
    aggregate_stages: tuple[int, ...] | None = None
    pretrained: str | None = None
    no_pretrained: bool = False
    freeze_stages: int = 0
    # optimisation
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    backbone_lr_scale: float | None = None
    weight_decay: float = 0.05
    warmup_epochs: float | None = None
    schedule: str = "cosine"
    patience: int = 0
    loss: str | None = None
    clip_grad: float = 5.0
    ema: float = 0.0
    # run
    out: Path = Path("runs/hsvlt")
    exist_ok: bool = False
    resume: str | None = None
    override: tuple[str, ...] = ()
    checkpoint_minutes: float = 10.0
    seed: int = 0
    device: str = "auto"
    no_amp: bool = False
    world_size: int = 1  # processes of the run (set when it starts)

    def resolved(self) -> "TrainConfig":
        """A copy with every None filled from the dataset's recipe and the preset; contradictions refused."""
        if self.model not in PRESETS:
            raise UsageError(f"--model: no preset named {self.model!r} (choose from {', '.join(sorted(PRESETS))})")
        if self.override and not self.resume:
            raise UsageError("--override applies to --resume only")
        if self.pretrained and self.no_pretrained:
            raise UsageError("--pretrained and --no-pretrained contradict each other")
        recipe = data_defaults(self.data)
        filled = {key: recipe[key] for key in ("train_size", "epochs", "batch_size", "crop_scale", "randaugment",
                                               "warmup_epochs", "loss") if getattr(self, key) is None}
        img_size = self.img_size or recipe["img_size"] or PRESETS[self.model].img_size
        pretrained = self.pretrained
        if pretrained is None and not self.no_pretrained and PRESETS[self.model].backbone == "efficientnet_lite0":
            pretrained = "imagenet"
        return replace(
            self, **filled, data=canonical_spec(self.data), img_size=img_size, pretrained=pretrained,
            out=Path(self.out),
            low_res_size=self.low_res_size or max(8, round(img_size * 5 / 6 / 8) * 8),
            lr=self.lr or (1e-4 if pretrained else recipe["lr"]),
            backbone_lr_scale=(0.1 if pretrained else 1.0) if self.backbone_lr_scale is None
            else self.backbone_lr_scale,
            aggregate_stages=tuple(self.aggregate_stages) if self.aggregate_stages else None,
            override=tuple(self.override))

    def to_dict(self) -> dict:
        """Plain values (for the checkpoint, which loads with weights_only=True)."""
        def plain(value):
            return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value

        return {key: plain(value) for key, value in asdict(self).items()}

    def flags(self) -> list[str]:
        """The command-line flags that give this config: those that differ from the defaults and from what the
        dataset's recipe and the preset fill in."""
        choices = ("data", "model", "pretrained", "no_pretrained")
        defaults = TrainConfig()
        recipe = TrainConfig(**{key: getattr(self, key) for key in choices}).resolved()
        words = []
        for key, value in asdict(self).items():
            if (key == "world_size" or value is None or value == getattr(defaults, key)
                    or (key not in choices and value == getattr(recipe, key))):
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                words += [flag] if value else []
            elif isinstance(value, (tuple, list)):
                words += [flag, *map(str, value)]
            else:
                words += [flag, str(value)]
        return words


def parse_args(argv=None, base: TrainConfig | None = None) -> TrainConfig:
    """The config the flags `argv` give, resolved (every setting filled in); with `base`, flags not given keep
    base's values instead of the defaults."""
    return parse_flags(argv, base).resolved()


def parse_flags(argv=None, base: TrainConfig | None = None) -> TrainConfig:
    """parse_args before resolution: a flag not given stays None where the dataset's recipe or the preset fills
    it in, so that --resume can take it from the checkpoint instead. Contradictions are refused here already."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog=program("python -m hsvlt.train"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # The datasets' help comes from the registry (hsvlt.data.register_dataset): each says what it is, what --root
    # holds for it, and its recipe's defaults.
    data = parser.add_argument_group("data")
    entries = [find_dataset(name) for name in DATASETS]
    # The built-in datasets' recipe defaults, in words; a dataset of your own states its recipe in its module.
    recipe_defaults = functools.partial(describe_defaults, names=DATASETS)
    generated = [entry.name for entry in entries if entry.generated]
    img_sizes = recipe_defaults("img_size", unset="the preset's")
    data.add_argument("--data", default=defaults.data, type=dataset_argument, metavar="DATASET",
                      help="; ".join(f"{entry.name}: {entry.summary}" for entry in entries)
                      + "; or a dataset of your own: module:NAME or path/to/file.py:NAME (docs/DESIGN.md, Datasets) "
                      + f"(default: {defaults.data})")
    data.add_argument("--root", help="dataset folder (" + "; ".join(f"{entry.name}: {entry.root}" for entry in entries
                                                                    if entry.root) + ")")
    data.add_argument("--label-file", help="label embeddings made by `python -m hsvlt.labels`, picked by label name "
                                           "(default: the dataset's: shipped for the built-in label sets, computed "
                                           "now for csv, which needs the text extra)")
    data.add_argument("--train-size", type=positive_int,
                      help=f"{', '.join(generated)}: training scenes (default: "
                           f"{describe_defaults('train_size', generated)})")
    data.add_argument("--val-size", type=positive_int, default=defaults.val_size,
                      help=f"{', '.join(generated)}: validation scenes")
    data.add_argument("--img-size", type=image_size,
                      help=f"training and validation input size (default: {img_sizes})")
    data.add_argument("--crop-scale", type=float_range(0.0, 1.0, low_open=True),
                      help="random resized crop keeps this area fraction or more (default: "
                           f"{recipe_defaults('crop_scale')})")
    data.add_argument("--randaugment", type=non_negative_int,
                      help=f"RandAugment-style ops per image (default: {recipe_defaults('randaugment')})")
    data.add_argument("--low-res-epochs", type=non_negative_int, default=defaults.low_res_epochs,
                      help="progressive resizing: train the first N epochs at --low-res-size, each costing "
                           "~(low / full size)^2 of a full one (default: 0)")
    data.add_argument("--low-res-size", type=image_size,
                      help="input size of the low-resolution epochs (default: 5/6 of --img-size, a multiple of 8)")
    data.add_argument("--workers", type=non_negative_int, default=defaults.workers,
                      help="data-loading processes per training process")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=defaults.model, choices=sorted(PRESETS), help="preset")
    model.add_argument("--heads", type=positive_int, help="attention heads (default: the preset's, 1)")
    model.add_argument("--drop-path", type=float_range(0.0, 1.0, high_open=True),
                       help="stochastic depth rate (default: the preset's)")
    model.add_argument("--visual-feedback", action="store_true",
                       help="let the visual map attend to the label tokens too (zero-initialised)")
    model.add_argument("--update", "--language-update", dest="language_update", choices=LANGUAGE_UPDATES,
                       help="how IVLA updates the label tokens: paper (the paper's self-gated residual, unbounded), "
                            "or a bounded form (default: the preset's; hsvlt/models/ivla.py, GatedResidual)")
    model.add_argument("--head-norm", action=argparse.BooleanOptionalAction,
                       help="LayerNorm on each stage's multi-modal feature S before the CSA head (default: the "
                            "preset's)")
    model.add_argument("--fusion", default=defaults.fusion, choices=FUSIONS,
                       help="ivla: HSVLT; ablation baselines: late (label queries after the last stage only), "
                            "none (global pooling and a linear head); see hsvlt/models/baselines.py")
    model.add_argument("--aggregate-stages", type=attention_stage, nargs="+", metavar="I",
                       help="stages (0-3) whose multi-modal features feed the head (default: all; 3: no CSA)")
    model.add_argument("--pretrained", help="ImageNet backbone weights: a ConvNeXt checkpoint (original or timm "
                                            "layout); 'imagenet' for the packaged EfficientNet-Lite0 weights "
                                            "(the default of hsvlt_lite0)")
    model.add_argument("--no-pretrained", action="store_true", help="train hsvlt_lite0 from scratch")
    model.add_argument("--freeze-stages", type=int_between(0, 4), default=defaults.freeze_stages,
                       help="freeze the backbone of the first N stages")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=positive_int, help=f"epochs (default: {recipe_defaults('epochs')})")
    optim.add_argument("--batch-size", type=positive_int,
                       help=f"images per step per process (default: {recipe_defaults('batch_size')})")
    optim.add_argument("--lr", type=positive_float,
                       help=f"peak AdamW learning rate (default from scratch: {recipe_defaults('lr')}; 1e-4 with "
                            "--pretrained)")
    optim.add_argument("--backbone-lr-scale", type=non_negative_float,
                       help="backbone lr = lr x this (default: 1 from scratch, 0.1 with --pretrained)")
    optim.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay,
                       help="AdamW decoupled weight decay")
    optim.add_argument("--warmup-epochs", type=non_negative_float,
                       help=f"linear warm-up length (default: {recipe_defaults('warmup_epochs')})")
    optim.add_argument("--schedule", default=defaults.schedule, choices=["cosine", "plateau"],
                       help="after warm-up: cosine decay, or the paper's ReduceLROnPlateau on val mAP")
    optim.add_argument("--patience", type=non_negative_int, default=defaults.patience,
                       help="stop after N epochs without a better mAP (0: never; the paper used 4)")
    optim.add_argument("--loss", choices=list(LOSSES),
                       help=f"BCE, or ASL (gamma- 1, clip 0.05) (default: {recipe_defaults('loss')})")
    optim.add_argument("--clip-grad", type=non_negative_float, default=defaults.clip_grad,
                       help="gradient norm clip (0: off)")
    optim.add_argument("--ema", type=float_range(0.0, 1.0, high_open=True), default=defaults.ema,
                       help="EMA decay of the weights, e.g. 0.999 (0: off); validation and best.pt use the EMA "
                            "weights")

    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=defaults.out,
                     help="output folder; one that holds an earlier run is kept, and the next free name "
                          "(runs/hsvlt2, ...) is taken instead, unless --resume or --exist-ok")
    run.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier run")
    run.add_argument("--resume", nargs="?", const="last", help="continue from OUT/last.pt (or the given file)")
    run.add_argument("--override", nargs="+", default=defaults.override, metavar="FIELD",
                     help="with --resume: let these settings differ from the checkpoint's (e.g. --override lr "
                          "batch_size); --epochs and --patience may always change")
    run.add_argument("--checkpoint-minutes", type=non_negative_float, default=defaults.checkpoint_minutes,
                     help="also save last.pt inside an epoch this often (0: only at epoch ends)")
    run.add_argument("--seed", type=int, default=defaults.seed,
                     help="seeds the weights, the data order and augmentation")
    run.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (under torchrun: cuda)")
    run.add_argument("--no-amp", action="store_true",
                     help="train in float32 instead of autocast: bf16 on CUDA and on CPUs with native bf16 "
                          "(AVX512-BF16 or AMX), float16 with a gradient scaler on GPUs without bf16 (V100, T4)")
    if base is not None:
        parser.set_defaults(**asdict(base))
    config = TrainConfig(**vars(parser.parse_args(argv)))
    try:
        config.resolved()
    except UsageError as error:
        parser.error(str(error))
    return config


@dataclass
class TrainState:
    """Everything besides the modules that --resume needs."""

    epoch: int = 0  # epochs completed
    skip: int = 0  # samples of the current epoch already trained on (this rank)
    best_map: float = -1.0
    best_epoch: int = -1
    stale_epochs: int = 0
    history: list | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


backbone_parameter = is_backbone  # the earlier name of hsvlt.models.classifier.is_backbone


def rng_state(device: torch.device) -> dict:
    """The generators this process draws from: the CPU's, and its own GPU's (a resume on a machine with another
    number of GPUs restores it onto the GPU it runs on)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        cuda = state["cuda"]
        # Checkpoints of earlier versions hold a list, one state per visible GPU.
        torch.cuda.set_rng_state(cuda[device.index or 0] if isinstance(cuda, list) else cuda, device)


# Settings that may differ on --resume without --override: they say how long the run goes on, where it is written
# and what runs it, not what one step computes. A longer --epochs stretches the cosine schedule from where the run
# stands (the learning rate rises a little, then decays over the new length).
RESUME_FREE = {"epochs", "patience", "out", "resume", "override", "exist_ok", "workers", "checkpoint_minutes",
               "device", "world_size"}


def check_resume_settings(saved: dict, config: TrainConfig, path: Path) -> None:
    """Refuse to resume with settings that differ from the checkpoint's (a changed --lr or --val-size would mix
    two runs silently and pick the best epoch on another validation set), naming each, unless --override lists
    it. Settings this code did not have when the checkpoint was written are not compared."""
    current = config.to_dict()
    unknown = sorted(set(config.override) - set(current))
    if unknown:
        raise ValueError(f"--override: no setting named {', '.join(unknown)} (names as in --help, with _ for -)")
    differ = [key for key in sorted(set(saved) & set(current))
              if key not in RESUME_FREE and saved[key] != current[key] and key not in config.override]
    if differ:
        changes = ", ".join(f"{key} {saved[key]!r} -> {current[key]!r}" for key in differ)
        raise CheckpointError(f"{path}: was trained with other settings ({changes}); give the same values, or "
                              f"resume with --override {' '.join(differ)}")


class Trainer:
    def __init__(self, config: TrainConfig, placement: distributed.Placement):
        self.config, self.placement = config, placement
        self.out = config.out
        torch.manual_seed(config.seed)
        self.data = build_data(config.data, config.root, config.img_size, config.seed, config.train_size,
                               config.val_size, config.label_file)
        self.check_files()
        if self.data.generated:
            self.data.train = InMemoryDataset(self.data.train, "drawing training scenes")
            self.data.val = InMemoryDataset(self.data.val, "drawing validation scenes")
        overrides = {"img_size": config.img_size, "visual_feedback": config.visual_feedback, "fusion": config.fusion}
        if config.language_update:
            overrides["language_update"] = config.language_update
        if config.head_norm is not None:
            overrides["head_norm"] = config.head_norm
        if config.aggregate_stages:
            overrides["aggregate_stages"] = tuple(config.aggregate_stages)
        if config.heads:
            overrides["num_heads"] = config.heads
        if config.drop_path is not None:
            overrides["drop_path"] = config.drop_path
        self.model = create_model(config.model, torch.from_numpy(self.data.embeddings), **overrides)
        self.model.init_head_bias(torch.from_numpy(self.data.train.prevalence()))
        if config.pretrained:
            from hsvlt.models.pretrained import load_pretrained

            report = load_pretrained(self.model, config.pretrained)
            if placement.is_main:
                print(report)
        self.model.to(placement.device)

        # Progressive resizing: one loader per input size (the sampler's order depends on the epoch only).
        self.loaders = {size: train_loader(self.data.train,
                                           train_transform(size, config.crop_scale, config.randaugment),
                                           config.batch_size, config.workers, config.seed, placement.rank,
                                           placement.world_size)
                        for size in {config.img_size, self.input_size(0)}}
        self.val_loader = eval_loader(self.data.val, eval_transform(config.img_size), 2 * config.batch_size,
                                      config.workers, placement.rank, placement.world_size)
        self.steps_per_epoch = len(self.loaders[config.img_size][0])  # the same at every size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.data.train)} training images is less than one batch of "
                             f"{config.batch_size} per process")
        self.engine = Engine.for_config(self.model, config, placement, self.steps_per_epoch)
        self.optimizer, self.schedule, self.ema = self.engine.optimizer, self.engine.schedule, self.engine.ema
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", factor=0.1,
                                                                  patience=1)
        self.warmup_steps = int(config.warmup_epochs * self.steps_per_epoch)
        self.state = TrainState(history=[])
        self.skipped = {"train": {}, "validation": {}}  # split -> {dataset index: why it could not be read}

    def check_files(self) -> None:
        """Say before training how many listed images are missing (they are skipped), and refuse a split with
        none left: the header's counts are then the images really used."""
        self.image_counts = {}
        for split, dataset in (("training", self.data.train), ("validation", self.data.val)):
            missing = dataset.missing_files() if isinstance(dataset, FileDataset) else []
            if len(missing) == len(dataset):
                raise FileNotFoundError(f"none of the {len(dataset)} {split} images exists (first: {missing[0]})"
                                        if missing else f"the {split} set is empty")
            if missing and self.placement.is_main:
                print(f"{len(missing)} of {len(dataset)} {split} images not found, skipped (first: {missing[0]})")
            self.image_counts[split] = len(dataset) - len(missing)

    def input_size(self, epoch: int) -> int:
        """Training input size of `epoch` (0-based): --low-res-size for the first --low-res-epochs."""
        return self.config.low_res_size if epoch < self.config.low_res_epochs else self.config.img_size

    # ---- checkpoints -------------------------------------------------------------------------------
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, **extra) -> dict:
        root = str(Path(self.config.root).resolve()) if self.config.root else None  # usable from any folder
        return {
            "config": self.model.config.to_dict(),
            "labels": self.data.labels,
            "model": self.eval_model().state_dict(),
            "data": {"name": self.config.data, "root": root, "seed": self.config.seed,
                     "train_size": self.config.train_size, "val_size": self.config.val_size,
                     "label_file": self.config.label_file},
            **extra,
        }

    def save_last(self) -> None:
        if not self.placement.is_main:
            return
        train_state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "plateau": self.plateau.state_dict(),
            "rng": rng_state(self.placement.device),
            "scaler": self.engine.scaler.state_dict(),
            "progress": self.state.to_dict(),
            "args": self.config.to_dict(),
        }
        save_checkpoint(self.checkpoint(epoch=self.state.epoch, train_state=train_state), self.out / "last.pt")

    def resume(self, path: Path, checkpoint: dict) -> None:
        if HSVLTConfig.from_dict(checkpoint["config"]).to_dict() != self.model.config.to_dict():
            raise CheckpointError(f"{path}: was trained with another model config than these arguments give")
        train_state = checkpoint["train_state"]
        self.model.load_state_dict(train_state["model"])
        if self.ema is not None:
            if train_state["ema"] is None:
                raise CheckpointError(f"{path}: was trained without --ema")
            self.ema.load_state_dict(train_state["ema"])
        self.optimizer.load_state_dict(train_state["optimizer"])
        self.schedule.load_state_dict(train_state["schedule"])
        self.plateau.load_state_dict(train_state["plateau"])
        if train_state.get("scaler"):  # empty where float16 was off, absent in older checkpoints
            self.engine.scaler.load_state_dict(train_state["scaler"])
        self.state = TrainState(**train_state["progress"])
        if train_state["progress"]["skip"] and self.placement.world_size != train_state["args"].get("world_size", 1):
            raise CheckpointError(f"{path}: saved mid-epoch by {train_state['args'].get('world_size')} processes; "
                                  f"resume with the same number")
        set_rng_state(train_state["rng"], self.placement.device)

    # ---- one epoch ---------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        size = self.input_size(epoch)
        loader, sampler = self.loaders[size]
        sampler.set_epoch(epoch, self.state.skip)
        last_save = time.monotonic()

        def after_step() -> None:
            nonlocal last_save
            self.state.skip += self.config.batch_size
            minutes = self.config.checkpoint_minutes
            if minutes and time.monotonic() - last_save > 60 * minutes:
                self.save_last()
                last_save = time.monotonic()
            if self.stop_requested():
                self.stop_now(f"in epoch {epoch + 1} after {self.state.skip} images")

        result = self.engine.train_epoch(
            loader, f"epoch {epoch + 1}/{self.config.epochs} at {size}px", unreadable=self.skipped["train"],
            freeze=lambda: freeze_batch_norm_statistics(self.model, self.config.freeze_stages), after_step=after_step)
        return {"train_loss": result.loss, "images_per_s": result.images_per_s, "img_size": size}

    def stop_requested(self) -> bool:
        """Whether SIGTERM or SIGINT reached any process (all of them stop at the same step)."""
        return distributed.any_rank(self.stop.requested is not None, self.placement)

    def stop_now(self, where: str) -> None:
        """Save last.pt at this safe point and end the run; --resume continues exactly from here."""
        self.save_last()
        if self.placement.is_main:
            tqdm.write(f"stopped by {self.stop.requested or 'a signal'} {where}: saved {self.out / 'last.pt'}; "
                       f"continue with: python -m hsvlt.train --resume --out {self.out} (and the same settings)")
        raise KeyboardInterrupt(self.stop.requested)

    def validate(self):
        scored = score_loader(self.eval_model(), self.val_loader, self.placement, self.engine.loss_fn)
        self.skipped["validation"].update(scored.skipped)
        return scored, evaluate_scores(scored.scores, scored.targets)

    # ---- the run -----------------------------------------------------------------------------------
    def fit(self) -> dict:
        self.log = RunLog(self.out) if self.placement.is_main else None
        self.watch = self.engine.watch = TrainingWatch(self.log, label_rms_bound(self.model.config.language_update))
        if self.log is not None:
            print(self.log.describe())
        with StopRequest() as self.stop:
            return self._fit()

    def _fit(self) -> dict:
        config, state = self.config, self.state
        if self.placement.is_main:
            params = sum(p.numel() for p in self.model.parameters()) / 1e6
            amp = self.engine.amp_dtype
            precision = "float32" if amp is None else str(amp).removeprefix("torch.") + " autocast"
            print(f"{config.model} ({params:.1f}M params) on {config.data}: {self.image_counts['training']} train / "
                  f"{self.image_counts['validation']} val images at {config.img_size}px, {config.epochs} epochs, "
                  f"{self.placement.world_size} x {self.placement.device.type}, {precision}")
        for epoch in range(state.epoch, config.epochs):
            train_log = self.train_epoch(epoch)
            scored, result = self.validate()
            state.epoch, state.skip = epoch + 1, 0
            log = {"epoch": epoch + 1, **train_log, "val_loss": scored.loss,
                   "label_rms": self.watch.label_scale,
                   "lr": self.optimizer.param_groups[0]["lr"],
                   **{key: result[key] for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")}}
            state.history.append(log)
            improved = result["mAP"] > state.best_map
            if improved:
                state.best_map, state.best_epoch, state.stale_epochs = result["mAP"], epoch + 1, 0
                thresholds = calibrate_thresholds(scored.scores, scored.targets)
                self.best = {"metrics": result, "thresholds": thresholds.tolist(), "epoch": epoch + 1}
                if self.placement.is_main:
                    save_checkpoint(self.checkpoint(**self.best), self.out / "best.pt")
            else:
                state.stale_epochs += 1
            if config.schedule == "plateau" and self.schedule.last_epoch >= self.warmup_steps:
                self.plateau.step(result["mAP"])
            self.save_last()
            if self.placement.is_main:
                self.log.epoch(self.state.history)
                tqdm.write(f"epoch {epoch + 1:3d}  loss {log['train_loss']:.4f}  val loss {log['val_loss']:.4f}  "
                           f"mAP {log['mAP']:6.2f}  CF1 {log['CF1']:6.2f}  OF1 {log['OF1']:6.2f}  "
                           f"{log['images_per_s']:.0f} img/s" + ("  *" if improved else ""))
                self.report_skipped()
            if self.stop_requested():
                self.stop_now(f"after epoch {epoch + 1}")
            if config.patience and state.stale_epochs >= config.patience:
                if self.placement.is_main:
                    print(f"no better mAP for {config.patience} epochs: stopping early")
                break
        return self.finish()

    def report_skipped(self) -> None:
        counts = {split: len(bad) for split, bad in self.skipped.items()}
        if sum(counts.values()):
            first = next(reason for bad in self.skipped.values() for reason in bad.values())
            print(f"skipped {sum(counts.values())} unreadable images (train {counts['train']}, validation "
                  f"{counts['validation']}; first: {first})")

    def finish(self) -> dict:
        best = load_checkpoint(self.out / "best.pt") if self.placement.is_main else None
        summary = None
        if self.placement.is_main:
            summary = {"epoch": best["epoch"],
                       **{key: best["metrics"][key] for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")},
                       "top3": best["metrics"]["top3"], "AP": best["metrics"]["AP"],
                       "labels": self.data.labels, "thresholds": best["thresholds"]}
            write_json(self.out / "metrics.json", summary)
            self.log.finish(self.data.labels, best["metrics"]["AP"], best["epoch"])
            print(format_report(best["metrics"], title=f"best epoch {best['epoch']} of {self.config.model} on "
                                                       f"{self.config.data} validation ({len(self.data.val)} images)"))
            print(f"wrote {self.out}/best.pt, last.pt, metrics.json, log.jsonl, curves.png")
        return summary


# Model settings whose default (None: the preset's) may change between versions: a resumed run goes on with the
# model its checkpoint holds.
MODEL_CHOICES = ("language_update", "head_norm")


def resumed_settings(config: TrainConfig, checkpoint: dict) -> TrainConfig:
    """`config` (not yet resolved) with the settings not given as flags taken from the checkpoint, so that a run
    goes on with the recipe it started with even where this version's defaults differ (a resume that names
    another value is refused by the settings check, or allowed by --override). MODEL_CHOICES a run started without
    (or before they existed) are what its model holds (one written before they were settings has the paper's:
    HSVLTConfig.from_dict)."""
    try:
        saved = HSVLTConfig.from_dict(checkpoint["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"bad model config in the checkpoint: {error}") from None
    args = checkpoint["train_state"]["args"]
    for key in MODEL_CHOICES:
        if args.get(key) is None:
            args[key] = getattr(saved, key)
    unset = [field.name for field in fields(TrainConfig) if getattr(config, field.name) is None]
    return replace(config, **{key: args[key] for key in unset if args.get(key) is not None})


def train(config: TrainConfig) -> dict | None:
    """Train one run: join the process group (under torchrun), choose the run folder (or check the checkpoint to
    resume against these settings), build the trainer, resume if asked, train. Returns the best epoch's figures
    (on the main process)."""
    placement = distributed.setup(config.device)
    checkpoint, path = None, None
    if config.resume:
        path = Path(config.out) / "last.pt" if config.resume == "last" else Path(config.resume)
        checkpoint = load_checkpoint(path)
        if "train_state" not in checkpoint:
            raise CheckpointError(f"{path}: holds no training state (use last.pt to resume)")
        config = resumed_settings(config, checkpoint)
    config = replace(config.resolved(), world_size=placement.world_size)
    if checkpoint is not None:
        check_resume_settings(checkpoint["train_state"]["args"], config, path)
        check_output_folder(config.out)
    else:
        chosen = run_folder(config.out, config.exist_ok) if placement.is_main else None
        chosen = distributed.broadcast_object(chosen, placement)
        if placement.is_main and chosen != config.out:
            print(f"{config.out} holds an earlier run: writing to {chosen} (--exist-ok writes into {config.out})")
        config = replace(config, out=chosen)
    trainer = Trainer(config, placement)
    if checkpoint is not None:
        trainer.resume(path, checkpoint)
        if placement.is_main:
            print(f"resumed from {path} at epoch {trainer.state.epoch + 1}")
    return trainer.fit()


def main(argv=None) -> dict | None:
    try:
        return run_command(train, parse_flags(argv))
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()
