"""Evaluate a checkpoint: `python -m hsvlt.evaluate --ckpt runs/hsvlt/best.pt`.

Prints mAP, CP, CR, CF1, OP, OR, OF1 at threshold 0.5 and for the top-3 labels, and the AP of every class.
Without --data, the checkpoint's own validation set is used (for `shapes`, the same generated scenes).
"""

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hsvlt import distributed
from hsvlt.checkpoint import load_model
from hsvlt.cli import exit_on_bad_input
from hsvlt.data import DATASETS, build_data
from hsvlt.data.base import to_model_input
from hsvlt.data.loader import eval_loader
from hsvlt.data.transforms import eval_transform
from hsvlt.metrics import evaluate_scores


@dataclass
class Predictions:
    scores: np.ndarray  # N x C probabilities, in dataset order
    targets: np.ndarray  # N x C, 1 / 0 / -1 (ignored)
    loss: float = float("nan")
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (index, reason) of unreadable images


def uses_bf16(device: torch.device, enabled: bool = True, cpu: bool = False) -> bool:
    """Whether `autocast` computes in bf16: on CUDA (unless disabled); on the CPU only with `cpu` (training) and
    where the CPU has native bf16 (AVX512-BF16 or AMX; emulated bf16 is slower than float32). Evaluation keeps
    the CPU in float32, the precision of the exported models."""
    native_cpu = cpu and device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return enabled and (device.type == "cuda" or native_cpu)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when `bf16` (decided once by `uses_bf16`), else full precision."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def predict(model, loader, runtime: distributed.Runtime, loss_fn=None, progress: bool = True) -> Predictions:
    """Run `model` over a (sharded) loader and gather every rank's results, ordered by dataset index."""
    model.eval()
    bf16 = uses_bf16(runtime.device)
    indices, scores, targets, losses, skipped = [], [], [], [], []
    for batch in tqdm(loader, desc="validate", leave=False, disable=not (progress and runtime.is_main)):
        skipped += batch["bad"]
        if batch["images"] is None:
            continue
        with autocast(runtime.device, bf16):
            logits = model(to_model_input(batch["images"], runtime.device)).float()
        batch_targets = batch["targets"].to(runtime.device)
        if loss_fn is not None:
            losses.append(float(loss_fn(logits, batch_targets)) * len(logits))
        indices.append(batch["indices"].numpy())
        scores.append(torch.sigmoid(logits).cpu().numpy())
        targets.append(batch["targets"].numpy())
    part = (
        np.concatenate(indices) if indices else np.zeros(0, int),
        np.concatenate(scores) if scores else None,
        np.concatenate(targets) if targets else None,
        sum(losses),
        skipped,
    )
    parts = distributed.gather_objects(part, runtime)
    order = np.concatenate([p[0] for p in parts])
    keep = np.argsort(order, kind="stable")
    all_scores = np.concatenate([p[1] for p in parts if p[1] is not None])[keep]
    all_targets = np.concatenate([p[2] for p in parts if p[2] is not None])[keep]
    total_loss = sum(p[3] for p in parts) / max(len(order), 1)
    return Predictions(all_scores, all_targets, total_loss, [s for p in parts for s in p[4]])


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hsvlt.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by hsvlt.train (best.pt or last.pt)")
    parser.add_argument("--data", choices=DATASETS, help="dataset (default: the one the checkpoint trained on)")
    parser.add_argument("--root", help="dataset folder (default: the checkpoint's)")
    parser.add_argument("--val-size", type=int, help="generated datasets: number of validation scenes")
    parser.add_argument("--img-size", type=int, help="input size (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold for CP..OF1")
    parser.add_argument("--json", type=Path, help="write the figures (percent) to this JSON file")
    parser.add_argument("--save-scores", type=Path, help="write scores (N x C) and targets (1/0/-1) to this .npz")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    runtime = distributed.setup(args.device)
    model, checkpoint = load_model(args.ckpt)
    trained_on = checkpoint.get("data", {})
    name = args.data or trained_on.get("name", "shapes")
    same_data = name == trained_on.get("name")
    img_size = args.img_size or model.config.img_size
    bundle = build_data(
        name,
        root=args.root or (trained_on.get("root") if same_data else None),
        image_size=img_size,
        seed=trained_on.get("seed", 0) if same_data else 0,
        val_size=args.val_size or trained_on.get("val_size", 1000),
        label_file=trained_on.get("label_file") if same_data else None,
    )
    if bundle.labels != list(checkpoint["labels"]):
        raise ValueError(f"{args.ckpt}: trained on other labels than {name}'s ({len(checkpoint['labels'])} vs "
                         f"{len(bundle.labels)} classes)")
    model.to(runtime.device)
    loader = eval_loader(bundle.val, eval_transform(img_size), args.batch_size, args.workers,
                         runtime.rank, runtime.world_size)
    predictions = predict(model, loader, runtime)
    result = evaluate_scores(predictions.scores, predictions.targets, args.threshold)
    if runtime.is_main:
        print(format_report(result, bundle.labels, f"{Path(args.ckpt).name} on {name} validation "
                                                   f"({result['num_images']} images)"))
        if predictions.skipped:
            print(f"skipped {len(predictions.skipped)} unreadable images (first: {predictions.skipped[0][1]})")
        if args.json:
            args.json.write_text(json.dumps({"labels": bundle.labels, **result}, indent=2) + "\n")
        if args.save_scores:
            np.savez(args.save_scores, scores=predictions.scores, targets=predictions.targets,
                     labels=np.array(bundle.labels))
    distributed.teardown()
    return result


def main(argv=None) -> None:
    exit_on_bad_input(run, parse_args(argv))


if __name__ == "__main__":
    main()
