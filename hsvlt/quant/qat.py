"""Quantisation-aware training (PT2E, torchao) of a trained checkpoint -> an int8 program for the exporters.

    python quant/qat.py --ckpt runs/hsvlt/best.pt --epochs 3 --out qat.pt2
    python quant/qat.py --ckpt runs/hsvlt/best.pt --ptq --out ptq.pt2          # calibration only (baseline)
    python export/to_executorch.py --ckpt runs/hsvlt/best.pt --int8 qat.pt2 --out model_int8.pte

The checkpoint's deployable module (hsvlt.deploy.wrapper.for_export: normalisation inside, label-only computations as
constants) is traced with a dynamic batch and fake-quantised (hsvlt/quant/pt2e.py: int8 weights per channel, int8
activations). QAT fine-tunes it on the checkpoint's training set: quantisation ranges stop moving after
--freeze-observers-after epochs and batch-norm statistics after --freeze-bn-after; after every epoch the
converted int8 model is evaluated on the validation set and the best one is kept. The result is X.pt2 (the
int8 torch.export program, images in [0, 1] -> probabilities) and its manifest X.pt2.json.
"""

import argparse
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from hsvlt.checkpoint import load_source
from hsvlt.cli import (
    attention_stage,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    program,
    run_command,
    unit_interval,
)
from hsvlt.data import TRAIN_SIZE, data_defaults, dataset_argument
from hsvlt.data.loader import eval_loader, train_loader
from hsvlt.data.transforms import eval_transform, train_transform
from hsvlt.deploy.manifest import checkpoint_manifest
from hsvlt.deploy.wrapper import for_export
from hsvlt.engine import (
    Engine,
    device_batches,
    logits_of,  # noqa: F401  (importable from here as before)
)
from hsvlt.evaluate import checkpoint_data, score_loader
from hsvlt.losses import LOSSES, build_loss
from hsvlt.metrics import evaluate_scores
from hsvlt.models.deployable import Rewrites
from hsvlt.models.hsvlt import HSVLT
from hsvlt.outputs import check_output_file
from hsvlt.quant.pt2e import (
    ARTIFACT_SUFFIX,
    DEFAULT_FLOAT_LAYERS,
    FLOAT_LAYERS,
    capture,
    convert,
    default_float_layers,
    freeze_batch_norm,
    freeze_observers,
    int8_rewrites,
    prepare,
    quantization_summary,
    save_artifact,
    to_program,
    train_mode,
)

# The layout QAT hands images over in: the captured graph was traced with contiguous images.
QAT_INPUT_FORMAT = torch.contiguous_format


@dataclass
class QuantizeConfig:
    """One quantisation run, as `python quant/qat.py` takes it (flags parse into one, `parse_args`); tools build
    one directly: `run(QuantizeConfig(ckpt=Path("best.pt"), out=Path("qat.pt2")))`."""

    ckpt: Path
    out: Path
    ptq: bool = False
    epochs: int = 3
    lr: float = 5e-5
    # Distillation from the fp32 model is the usual QAT aid; on the shapes checkpoints it measured no better than
    # the labels alone, so it is off.
    distill: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 32
    loss: str = "bce"
    freeze_bn_after: int = 1
    freeze_observers_after: int = 2
    max_steps: int | None = None
    calibration_images: int = 512
    float_layers: str | None = None  # comma-separated FLOAT_LAYERS names; None: the preset's (default_float_layers)
    attention_stage: int | None = None
    data: str | None = None
    root: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    workers: int = 1
    seed: int = 0


def open_data(checkpoint: dict, img_size: int, config: QuantizeConfig):
    """The checkpoint's own training and validation sets (hsvlt.evaluate.checkpoint_data), or --data's."""
    return checkpoint_data(checkpoint, config.ckpt, img_size, config.data, config.root, config.val_size,
                           config.train_size or (checkpoint.get("data") or {}).get("train_size") or TRAIN_SIZE)


def batches(loader, limit: int | None = None):
    """(images float N x 3 x S x S in [0, 1], targets) of a loader's first `limit` batches, skipping unreadable
    images: what the training step of QAT takes."""
    return device_batches(loader, torch.device("cpu"), QAT_INPUT_FORMAT, limit)


def validation_map(module, loader, desc: str) -> float:
    """mAP (percent) of a module returning logits, over the validation loader (hsvlt.evaluate.score_loader)."""
    scored = score_loader(module, loader, desc=desc)
    return evaluate_scores(scored.scores, scored.targets)["mAP"]


def quantization_engine(model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer=None, schedule=None,
                        teacher: torch.nn.Module | None = None, distill: float = 0.0,
                        captured: bool = False) -> Engine:
    """hsvlt.engine's step as QAT takes it: float32, no clipping, the schedule every step, images contiguous (as
    the graph was traced); a captured PT2E graph switches between training and evaluation through
    hsvlt.quant.pt2e.train_mode (it has no Module.train of its own)."""
    return Engine(model, loss_fn, optimizer, schedule=schedule, teacher=teacher, distill=distill,
                  training_mode=(lambda training: train_mode(model, training)) if captured else None,
                  input_format=QAT_INPUT_FORMAT)


def calibration_batches(loader, images: int):
    """Batches of the loader (as QAT takes them) until `images` images have gone by, with a progress bar."""
    seen = 0
    for batch, _ in tqdm(batches(loader), total=math.ceil(images / loader.batch_size), desc="calibrate",
                         leave=False):
        yield batch
        seen += len(batch)
        if seen >= images:
            return


def post_training(model: HSVLT, calibration: Iterable[torch.Tensor], float_layers: tuple[str, ...] | None = None,
                  attention_stage: int | None = None, rewrites: Rewrites | None = None):
    """PT2E static int8 of the model's deployable form: traced with batch norm folded, observers inserted (the
    `float_layers` groups left float; None: the preset's), the calibration batches (float N x 3 x S x S in [0, 1])
    run through them, converted. `rewrites`: the export-time rewrites (None: the preset's int8 choice). Returns
    (the int8 graph, what its manifest says of the quantisation: method, float layers, per-layer precision and the
    rewrites it goes without)."""
    rewrites = rewrites or int8_rewrites(model.config.preset)
    float_layers = default_float_layers(model.config.preset) if float_layers is None else tuple(float_layers)
    prepared = prepare(capture(model, qat=False, attention_stage=attention_stage, rewrites=rewrites), qat=False,
                       float_layers=float_layers)
    with torch.no_grad():
        for images in calibration:
            prepared(images)
    graph = convert(prepared)
    return graph, quantization_summary("ptq", graph, float_layers, rewrites)


def train_epoch(model, loader, optimizer, schedule, loss_fn, teacher, distill: float, max_steps: int | None,
                desc: str) -> float:
    """One epoch of fake-quantised training of an eager model (hsvlt/quant/eager.py) on (1 - distill) x the
    labels' loss + distill x the binary KL to the fp32 teacher's probabilities; returns its mean loss."""
    engine = quantization_engine(model, loss_fn, optimizer, schedule, teacher, distill)
    return engine.train_epoch(loader, desc, limit=max_steps).loss


def optimizer_and_schedule(model: torch.nn.Module, steps_per_epoch: int, config: QuantizeConfig):
    """AdamW over the trainable parameters at peak config.lr, decayed by a cosine over config.epochs (of at most
    config.max_steps steps each)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * (steps_per_epoch if config.max_steps is None else min(config.max_steps, steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))
    return optimizer, schedule


def quantization_aware(prepared, teacher, train, sampler, val, config: QuantizeConfig):
    """Train with fake quantisation; after each epoch convert and validate; keep the best epoch.
    Returns (int8 graph, its mAP, its epoch, per-epoch log)."""
    optimizer, schedule = optimizer_and_schedule(prepared, len(train), config)
    engine = quantization_engine(prepared, build_loss(config.loss), optimizer, schedule, teacher, config.distill,
                                 captured=True)
    best_graph, best_map, best_epoch, log = None, -1.0, -1, []
    for epoch in range(config.epochs):
        started = time.perf_counter()

        def freeze(epoch=epoch) -> None:  # after every switch to training mode: it would undo them
            if epoch >= config.freeze_bn_after:
                freeze_batch_norm(prepared)
            if epoch >= config.freeze_observers_after:
                freeze_observers(prepared)

        sampler.set_epoch(epoch)
        loss = engine.train_epoch(train, f"QAT epoch {epoch + 1}/{config.epochs}", limit=config.max_steps,
                                  freeze=freeze).loss
        converted = convert(prepared)
        int8_map = validation_map(converted, val, "int8 validate")
        improved = int8_map > best_map
        if improved:
            best_graph, best_map, best_epoch = converted, int8_map, epoch + 1
        log.append({"epoch": epoch + 1, "loss": loss, "int8_mAP": int8_map, "seconds": time.perf_counter() - started})
        tqdm.write(f"epoch {epoch + 1}  loss {loss:.4f}  int8 mAP {int8_map:6.2f}" + ("  *" if improved else ""))
    return best_graph, best_map, best_epoch, log


def loaders(checkpoint: dict, img_size: int, config: QuantizeConfig, augment: bool):
    """(training loader, its sampler, validation loader) of the checkpoint's data; training images augmented as
    in training when `augment` (QAT), as for evaluation otherwise (calibration)."""
    name, bundle = open_data(checkpoint, img_size, config)
    val = eval_loader(bundle.val, eval_transform(img_size), config.batch_size, config.workers)
    defaults = data_defaults(name)
    transform = (train_transform(img_size, defaults["crop_scale"], defaults["randaugment"]) if augment
                 else eval_transform(img_size))
    train, sampler = train_loader(bundle.train, transform, config.batch_size, config.workers, config.seed)
    if len(train) == 0:
        raise ValueError(f"{len(bundle.train)} training images is less than one batch of {config.batch_size}")
    return train, sampler, val


def run(config: QuantizeConfig) -> dict:
    """Quantise and write the artifact; returns the figures (fp32 and int8 validation mAP, per-epoch log)."""
    torch.manual_seed(config.seed)
    source = load_source(config.ckpt, attention_stage=config.attention_stage)
    model, checkpoint = source.model, source.checkpoint
    img_size = model.config.img_size
    float_layers = (default_float_layers(model.config.preset) if config.float_layers is None
                    else tuple(name for name in config.float_layers.split(",") if name))
    qat = not config.ptq
    train, sampler, val = loaders(checkpoint, img_size, config, augment=qat)

    teacher = for_export(model, config.attention_stage, logits=True)
    fp32_map = validation_map(teacher, val, "fp32 validate")
    print(f"fp32 {model.config.preset}: validation mAP {fp32_map:.2f} ({len(val.dataset)} images)")
    if qat:
        prepared = prepare(capture(model, qat, config.attention_stage), qat, float_layers)
        graph, int8_map, best_epoch, log = quantization_aware(prepared, teacher, train, sampler, val, config)
        quantization = quantization_summary("qat", graph, float_layers, int8_rewrites(model.config.preset))
    else:
        graph, quantization = post_training(model, calibration_batches(train, config.calibration_images),
                                            float_layers, config.attention_stage)
        int8_map, best_epoch, log = validation_map(graph, val, "int8 validate"), 0, []
        print(f"PTQ int8 ({config.calibration_images} calibration images): validation mAP {int8_map:.2f}")
    quantization = replace(quantization, figures={
        "epochs": config.epochs if qat else 0, "best_epoch": best_epoch, "distill": config.distill if qat else 0.0,
        "val_mAP_fp32": fp32_map, "val_mAP_int8": int8_map, "log": log})
    manifest = checkpoint_manifest(source, "torch.export", "int8", config.attention_stage, quantization)
    save_artifact(to_program(graph, img_size), config.out, manifest)
    print(f"wrote {config.out} (int8, validation mAP {int8_map:.2f} vs fp32 {fp32_map:.2f}) and its manifest")
    summary = {key: value for key, value in asdict(quantization).items() if key != "figures"}
    return {**summary, **quantization.figures}


def parse_args(argv=None) -> QuantizeConfig:
    defaults = QuantizeConfig(ckpt=Path(), out=Path())
    parser = argparse.ArgumentParser(prog=program("python quant/qat.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, type=Path, help="trained fp32 checkpoint (best.pt)")
    parser.add_argument("--out", required=True, type=Path, help="int8 artifact to write, e.g. qat.pt2")
    parser.add_argument("--ptq", action="store_true", help="post-training quantisation: calibrate, no training")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="QAT epochs")
    parser.add_argument("--lr", type=positive_float, default=defaults.lr,
                        help="peak AdamW learning rate (cosine decay)")
    parser.add_argument("--distill", type=unit_interval, default=defaults.distill,
                        help="weight in [0, 1] of distillation from the fp32 checkpoint (binary KL to its "
                             "probabilities); the labels' loss gets 1 - this (default: 0)")
    parser.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay,
                        help="AdamW weight decay")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="images per step")
    parser.add_argument("--loss", default=defaults.loss, choices=list(LOSSES), help="training loss")
    parser.add_argument("--freeze-bn-after", type=non_negative_int, default=defaults.freeze_bn_after,
                        help="epochs after which batch-norm statistics freeze")
    parser.add_argument("--freeze-observers-after", type=non_negative_int, default=defaults.freeze_observers_after,
                        help="epochs after which quantisation ranges freeze")
    parser.add_argument("--max-steps", type=positive_int, help="at most this many steps per epoch (quick runs)")
    parser.add_argument("--calibration-images", type=positive_int, default=defaults.calibration_images,
                        help="--ptq: training images to calibrate on")
    parser.add_argument("--float-layers", default=defaults.float_layers,
                        help=f"comma-separated layer groups kept in float, from: {', '.join(FLOAT_LAYERS)} "
                             f"(default: the preset's, hsvlt.quant.pt2e.default_float_layers: "
                             f"{','.join(DEFAULT_FLOAT_LAYERS)}, and more where the benchmark measured it "
                             'faster; "" for all int8)')
    parser.add_argument("--attention-stage", type=attention_stage,
                        help="keep the attention output of this stage (0-3) in the program, for the demo")
    parser.add_argument("--data", type=dataset_argument, help="dataset (default: the checkpoint's)")
    parser.add_argument("--root", help="dataset folder (default: the checkpoint's)")
    parser.add_argument("--train-size", type=positive_int,
                        help="generated datasets: training scenes (default: checkpoint's)")
    parser.add_argument("--val-size", type=positive_int,
                        help="generated datasets: validation scenes (default: checkpoint's)")
    parser.add_argument("--workers", type=non_negative_int, default=defaults.workers, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the data order and augmentation")
    return QuantizeConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    run_command(check_output_file, config.out, ARTIFACT_SUFFIX)
    return run_command(run, config)
