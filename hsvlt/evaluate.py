"""Evaluate a checkpoint: `python -m hsvlt.evaluate --ckpt runs/hsvlt/best.pt`.

Prints mAP, CP, CR, CF1, OP, OR, OF1 at threshold 0.5 and for the top-3 labels, and the AP of every class.
Without --data, the checkpoint's own validation set is used (for `shapes`, the same generated scenes).
"""

import argparse
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hsvlt import distributed
from hsvlt.checkpoint import load_model
from hsvlt.cli import image_size, non_negative_int, positive_int, program, run_command, unit_interval
from hsvlt.data import VAL_SIZE, build_data, dataset_argument
from hsvlt.data.base import to_model_input
from hsvlt.data.loader import eval_loader
from hsvlt.data.transforms import eval_transform
from hsvlt.metrics import evaluate_scores
from hsvlt.outputs import check_output_file, save_npz, write_json


@dataclass
class Scores:
    """What a model said about every image of a loader (score_loader), beside what the images hold."""

    scores: np.ndarray  # N x C probabilities, in dataset order
    targets: np.ndarray  # N x C, 1 / 0 / -1 (ignored)
    loss: float = float("nan")
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (index, reason) of unreadable images
    model_seconds: float = 0.0  # time inside the model alone (the slowest rank's)


def uses_reduced_precision(device: torch.device, enabled: bool = True, cpu: bool = False) -> bool:
    """Whether `autocast` computes in reduced precision, bf16 or float16: on CUDA (unless disabled); on the CPU
    only with `cpu` (training) and where the CPU has native bf16 (AVX512-BF16 or AMX; emulated bf16 is slower
    than float32). Evaluation keeps the CPU in float32, the precision of the exported models. The dtype is
    `autocast_dtype`'s: bf16, except float16 on CUDA devices without native bf16."""
    native_cpu = cpu and device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return enabled and (device.type == "cuda" or native_cpu)


uses_bf16 = uses_reduced_precision  # the earlier name, which also answered for float16; kept for existing callers


def autocast_dtype(device: torch.device, enabled: bool = True, cpu: bool = False) -> torch.dtype | None:
    """The dtype `autocast` computes in where `uses_reduced_precision` says so, else None (float32): bf16, or
    float16 on a CUDA device without native bf16 (older than Ampere: it emulates bf16, slowly where at all).
    Training in float16 needs a gradient scaler, or small gradients underflow to 0."""
    if not uses_reduced_precision(device, enabled, cpu):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast on `device` in `dtype` (decided once by `autocast_dtype`); None: full precision."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def batch_scorer(model, device: torch.device):
    """images (N x 3 x S x S in [0, 1], on `device`) -> (logits N x C or None, probabilities N x C) for
    anything `score_loader` scores: a PyTorch module returning logits (a trained model, the deployable wrapper with
    logits=True, a quantised torch.export graph), or a deployed program opened by hsvlt.deploy.runtimes
    (ExecuTorch, ONNX Runtime), which returns probabilities."""
    if not isinstance(model, torch.nn.Module):
        def run_program(images):
            return None, torch.from_numpy(model.run(images.cpu().numpy()).probabilities)

        return run_program
    if not isinstance(model, torch.fx.GraphModule):  # an exported graph has no train / eval switch
        model.eval()
    dtype = autocast_dtype(device)

    def run_module(images):
        with autocast(device, dtype):
            outputs = model(images)
        logits = (outputs[0] if isinstance(outputs, (tuple, list)) else outputs).float()
        return logits, torch.sigmoid(logits)

    return run_module


@torch.no_grad()
def score_loader(model, loader, placement: distributed.Placement | None = None, loss_fn=None, progress: bool = True,
                 desc: str = "validate") -> Scores:
    """Score a (sharded) loader with `model` (see `batch_scorer`) and gather every rank's results, ordered by
    dataset index. The one evaluation loop: training's validation, hsvlt.evaluate, QAT and exported programs."""
    placement = placement or distributed.Placement(torch.device("cpu"))
    score = batch_scorer(model, placement.device)
    indices, scores, targets, losses, skipped, seconds = [], [], [], [], [], 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not (progress and placement.is_main)):
        skipped += batch["bad"]
        if batch["images"] is None:
            continue
        images = to_model_input(batch["images"], placement.device)
        started = time.perf_counter()
        logits, probabilities = score(images)
        seconds += time.perf_counter() - started
        if loss_fn is not None:
            losses.append(float(loss_fn(logits, batch["targets"].to(placement.device))) * len(logits))
        indices.append(batch["indices"].numpy())
        scores.append(probabilities.cpu().numpy())
        targets.append(batch["targets"].numpy())
    part = (
        np.concatenate(indices) if indices else np.zeros(0, int),
        np.concatenate(scores) if scores else None,
        np.concatenate(targets) if targets else None,
        sum(losses),
        skipped,
        seconds,
    )
    parts = distributed.gather_objects(part, placement)
    order = np.concatenate([p[0] for p in parts])
    if len(order) == 0:
        bad = [s for p in parts for s in p[4]]
        raise ValueError(f"none of the {len(bad)} validation images could be read (first: {bad[0][1]})" if bad
                         else "the validation set is empty")
    keep = np.argsort(order, kind="stable")
    all_scores = np.concatenate([p[1] for p in parts if p[1] is not None])[keep]
    all_targets = np.concatenate([p[2] for p in parts if p[2] is not None])[keep]
    total_loss = sum(p[3] for p in parts) / max(len(order), 1)
    return Scores(all_scores, all_targets, total_loss, [s for p in parts for s in p[4]], max(p[5] for p in parts))


# The earlier name, kept for one release: "predict" now names the `hsvlt predict` command alone.
predict = score_loader


def checkpoint_data(checkpoint: dict, path, img_size: int, data: str | None = None, root: str | None = None,
                    val_size: int | None = None, train_size: int | None = None):
    """(dataset name, DataBundle) of the data a checkpoint was trained and validated on, as it recorded them
    (for a generated dataset, the very same scenes), or of `data` / `root` when given. Every command that
    scores or fine-tunes a checkpoint (evaluation, QAT, export parity, artifact evaluation) opens its data here."""
    trained_on = checkpoint.get("data") or {}
    name = data or trained_on.get("name") or "shapes"
    same = name == trained_on.get("name")
    recorded_root = trained_on.get("root") if same else None
    try:
        bundle = build_data(name, root=root or recorded_root, image_size=img_size,
                            seed=trained_on.get("seed", 0) if same else 0,
                            train_size=train_size or (trained_on.get("train_size") if same else None) or 1,
                            val_size=val_size or (trained_on.get("val_size") if same else None) or VAL_SIZE,
                            label_file=trained_on.get("label_file") if same else None)
    except FileNotFoundError as error:
        if root is None and recorded_root is not None:
            raise FileNotFoundError(f"{error} (the folder {path} was trained on; pass --root where the dataset is "
                                    f"on this machine)") from None
        raise
    if bundle.labels != list(checkpoint["labels"]):
        raise ValueError(f"{path}: trained on other labels than {name}'s ({len(checkpoint['labels'])} vs "
                         f"{len(bundle.labels)} classes)")
    return name, bundle


def format_report(result: dict, labels: list[str] | None = None, title: str = "") -> str:
    """The figures as a text table (percent), optionally followed by per-class AP."""
    keys = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]
    top = next(key for key in result if key.startswith("top") and isinstance(result[key], dict))
    lines = [title] if title else []
    lines.append(f"{'':>12} " + " ".join(f"{key:>7}" for key in keys))
    lines.append(f"{'@0.5':>12} " + " ".join(f"{result[key]:7.2f}" for key in keys))
    lines.append(f"{top:>12} " + f"{'':>7} " + " ".join(f"{result[top][key]:7.2f}" for key in keys[1:]))
    if labels is not None:
        lines.append("per-class AP:")
        width = max(len(name) for name in labels)
        for name, ap, count in zip(labels, result["AP"], result["positives"]):
            shown = "   n/a" if ap is None else f"{ap:6.2f}"
            lines.append(f"  {name:<{width}}  {shown}  ({count} positives)")
    return "\n".join(lines)


@dataclass
class EvaluateConfig:
    """One evaluation, as `python -m hsvlt.evaluate` takes it (its flags parse into one, `parse_args`); tools build
    one directly: `run(EvaluateConfig(ckpt=Path("runs/hsvlt/best.pt"), json=Path("eval.json")))`."""

    ckpt: str | Path  # kept as given, so that messages name the file as the user wrote it
    data: str | None = None  # None: the dataset the checkpoint trained on
    root: str | None = None  # None: the checkpoint's dataset folder
    val_size: int | None = None
    img_size: int | None = None  # None: the checkpoint's
    batch_size: int = 64
    workers: int = 1
    device: str = "auto"
    threshold: float = 0.5
    json: Path | None = None
    save_scores: Path | None = None


def parse_args(argv=None) -> EvaluateConfig:
    defaults = EvaluateConfig(ckpt="")
    parser = argparse.ArgumentParser(prog=program("python -m hsvlt.evaluate"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by hsvlt.train (best.pt or last.pt)")
    parser.add_argument("--data", type=dataset_argument, help="dataset (default: the one the checkpoint trained on)")
    parser.add_argument("--root", help="dataset folder (default: the checkpoint's)")
    parser.add_argument("--val-size", type=positive_int, help="generated datasets: number of validation scenes")
    parser.add_argument("--img-size", type=image_size, help="input size (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="images per batch")
    parser.add_argument("--workers", type=non_negative_int, default=defaults.workers, help="data-loading processes")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threshold", type=unit_interval, default=defaults.threshold,
                        help="decision threshold for CP..OF1")
    parser.add_argument("--json", type=Path, help="write the figures (percent) to this JSON file")
    parser.add_argument("--save-scores", type=Path, help="write scores (N x C) and targets (1/0/-1) to this .npz")
    return EvaluateConfig(**vars(parser.parse_args(argv)))


def run(config: EvaluateConfig) -> dict:
    for path, suffix in ((config.json, ".json"), (config.save_scores, ".npz")):
        if path is not None:
            check_output_file(path, suffix)  # before the work, not after it
    placement = distributed.setup(config.device)
    model, checkpoint = load_model(config.ckpt)
    img_size = config.img_size or model.config.img_size
    name, bundle = checkpoint_data(checkpoint, config.ckpt, img_size, config.data, config.root, config.val_size)
    model.to(placement.device)
    loader = eval_loader(bundle.val, eval_transform(img_size), config.batch_size, config.workers,
                         placement.rank, placement.world_size)
    scored = score_loader(model, loader, placement)
    result = evaluate_scores(scored.scores, scored.targets, config.threshold)
    if placement.is_main:
        print(format_report(result, bundle.labels, f"{Path(config.ckpt).name} on {name} validation "
                                                   f"({result['num_images']} images)"))
        if scored.skipped:
            print(f"skipped {len(scored.skipped)} unreadable images (first: {scored.skipped[0][1]})")
        if config.json:
            write_json(config.json, {"labels": bundle.labels, **result})
        if config.save_scores:
            save_npz(config.save_scores, scores=scored.scores, targets=scored.targets,
                     labels=np.array(bundle.labels))
    distributed.teardown()
    return result


def main(argv=None) -> None:
    run_command(run, parse_args(argv))


if __name__ == "__main__":
    main()
