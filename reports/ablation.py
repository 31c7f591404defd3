"""The ablation study: `python reports/ablation.py` trains HSVLT and its ablations on the same data and writes
docs/RESULTS.md (table, command, machine) and docs/ablation.png, every number from this run.

    (a) hsvlt       HSVLT (--model, default hsvlt_nano)
    (b) no-csa      without Cross-Scale Aggregation: the head sees the last stage's S only
    (c) no-ivla     without interaction: the same backbone, global pooling and a linear head
    (d) late        late fusion (Query2Label-style): label queries meet the last stage's map only
    (e) feedback    HSVLT with the visual feedback path on
    (f) lite0       hsvlt_lite0 with its ImageNet-pretrained EfficientNet-Lite0 backbone

Every variant trains through hsvlt.train (same data, epochs, image size and seed; --lr and --train-args apply
to all), its best epoch by validation mAP is then scored on a separate test split (scenes built from item photos
no training or validation scene uses), with mAP and its 95% bootstrap interval, CF1 and OF1 at threshold 0.5,
AP by object size, parameters, GFLOPs and CPU latency at batch 1. Each comparison with (a) gets a paired
bootstrap interval of its mAP difference, so the table says which differences this test set can resolve.

The defaults are sized for under an hour on 2 CPU cores; --quick checks the whole pipeline in a minute or two.
"""

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from hsvlt import distributed
from hsvlt.checkpoint import load_model
from hsvlt.cli import image_size, non_negative_int, positive_float, positive_int, run_command
from hsvlt.data.base import MultiLabelDataset
from hsvlt.data.loader import eval_loader
from hsvlt.data.transforms import eval_transform
from hsvlt.evaluate import predict
from hsvlt.machine import count_gflops, describe
from hsvlt.metrics import average_precision_by_size, average_precisions, evaluate_scores, size_bucket_edges
from hsvlt.models import PRESETS
from hsvlt.outputs import save_figure, save_npz, write_json, write_text
from hsvlt.train import TrainConfig, train
from hsvlt.train import parse_args as parse_train_flags
from reports.measure import batch1_latency_ms, bootstrap_interval, bootstrap_samples

SIZE_BUCKETS = ("small", "medium", "large")
DATASET_NOTES = {
    "fashion-mosaic": "Data: `fashion-mosaic` (hsvlt/data/fashion_mosaic.py), composed scenes of real item photos: "
                      "1 to 4 Fashion-MNIST product photos (10 classes) per scene, item sizes log-uniform over a 4x "
                      "range, on textured surfaces; training scenes use the train split's photos, validation and "
                      "test scenes disjoint halves of t10k.",
    "shapes": "Data: `shapes` (hsvlt/data/shapes.py), generated scenes of 1 to 4 of 10 shape classes, sizes "
              "log-uniform over a 4x range.",
}


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    settings: tuple[tuple[str, object], ...] = ()  # TrainConfig fields that make the variant
    model: str | None = None  # a preset of its own; None: the study's --model


VARIANTS = (
    Variant("hsvlt", "(a) HSVLT"),
    Variant("no-csa", "(b) without CSA (last scale's S)", (("aggregate_stages", (3,)),)),
    Variant("no-ivla", "(c) without IVLA (pool + linear)", (("fusion", "none"),)),
    Variant("late", "(d) late fusion (Query2Label-style)", (("fusion", "late"),)),
    Variant("feedback", "(e) HSVLT + visual feedback", (("visual_feedback", True),)),
    Variant("lite0", "(f) hsvlt_lite0, ImageNet-pretrained", (("pretrained", "imagenet"),), model="hsvlt_lite0"),
)
# The paper's claims, as comparisons with (a): (variant, what (a) shows over it if the claim holds).
CLAIMS = (
    ("no-csa", "aggregating S across scales (CSA) beats the last scale alone, most for small items"),
    ("late", "interleaving the interaction with feature extraction beats one late fusion step"),
    ("no-ivla", "vision-language interaction beats a plain pooled classifier on the same backbone"),
    ("feedback", "the optional visual feedback path (V attends to L) changes the result"),
    ("lite0", "an ImageNet-pretrained edge backbone compares with the from-scratch model"),
)
# Sizes of a full study (the defaults) and of --quick (a smoke test of the pipeline, numbers mean nothing).
# The full study took 57.5 minutes pinned to one core of a 2-core AMD EPYC. At 96 px and 3000 scenes x 5 epochs
# (15000 images per variant) hsvlt_nano stayed near chance (test mAP 37.8); 64 px buys 40000 images per variant.
FULL = dict(model="hsvlt_nano", img_size=64, train_size=8000, val_size=500, test_size=1000, epochs=5,
            latency_runs=30)
QUICK = dict(model="hsvlt_pico", img_size=64, train_size=96, val_size=32, test_size=48, epochs=1, latency_runs=3)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python reports/ablation.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mosaic", choices=["fashion-mosaic", "shapes"],
                        help="a generated dataset that knows its object sizes")
    parser.add_argument("--root", help="fashion-mosaic: the Fashion-MNIST IDX folder "
                                       "(default: /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--variants", nargs="+", choices=[v.key for v in VARIANTS], metavar="KEY",
                        help=f"which variants, in table order (default: all; {', '.join(v.key for v in VARIANTS)}; "
                             f"lite0 only when the hsvlt_lite0 preset exists)")
    parser.add_argument("--model", help=f"preset of (a)-(e) (default: {FULL['model']}, quick: {QUICK['model']})")
    parser.add_argument("--img-size", type=image_size, help=f"input size (default: {FULL['img_size']})")
    parser.add_argument("--train-size", type=positive_int, help=f"training scenes (default: {FULL['train_size']})")
    parser.add_argument("--val-size", type=positive_int, help=f"validation scenes, pick the best epoch "
                                                     f"(default: {FULL['val_size']})")
    parser.add_argument("--test-size", type=positive_int, help=f"test scenes, scored in the table "
                                                      f"(default: {FULL['test_size']})")
    parser.add_argument("--epochs", type=positive_int, help=f"epochs per variant (default: {FULL['epochs']})")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="training batch size")
    parser.add_argument("--lr", type=positive_float,
                        help="peak learning rate for every variant (default: hsvlt.train's)")
    parser.add_argument("--train-args", default="", help="more hsvlt.train flags for every variant, one string, "
                                                         "written with =: --train-args=\"--ema 0.999 --loss asl\"")
    parser.add_argument("--seed", type=int, default=0, help="seeds data, weights and order (same for all)")
    parser.add_argument("--workers", type=non_negative_int, default=1, help="data-loading processes")
    parser.add_argument("--device", default="auto", help="training and test device: auto, cpu, cuda "
                                                         "(latency is always measured on the CPU)")
    parser.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples of the test set")
    parser.add_argument("--latency-runs", type=positive_int, help=f"timed batch-1 CPU runs per variant, the median is "
                                                         f"reported (default: {FULL['latency_runs']})")
    parser.add_argument("--out", type=Path, help="run folder, one subfolder per variant "
                                                 "(default: runs/ablation, quick: runs/ablation-quick)")
    parser.add_argument("--doc", type=Path, help="results page (default: docs/RESULTS.md, quick: OUT/RESULTS.md)")
    parser.add_argument("--plot", type=Path, help="results plot (default: docs/ablation.png, quick: OUT/ablation.png)")
    parser.add_argument("--resume", action="store_true", help="keep variants already finished in OUT and resume "
                                                              "an interrupted one from its last.pt")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the whole pipeline in a minute or two")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out = args.out or Path("runs/ablation-quick" if args.quick else "runs/ablation")
    args.doc = args.doc or (args.out / "RESULTS.md" if args.quick else Path("docs/RESULTS.md"))
    args.plot = args.plot or (args.out / "ablation.png" if args.quick else Path("docs/ablation.png"))
    keys = args.variants or [v.key for v in VARIANTS if v.model is None or v.model in PRESETS]
    args.variant_list = [v for v in VARIANTS if v.key in keys]
    missing = [v.model for v in args.variant_list if v.model is not None and v.model not in PRESETS]
    if missing:
        parser.error(f"preset {missing[0]} does not exist in this version")
    if args.model not in PRESETS:
        parser.error(f"unknown --model {args.model}; choose from {', '.join(sorted(PRESETS))}")
    args.command = "python reports/ablation.py" + (" " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    return args


# ---- data ---------------------------------------------------------------------------------------------------

def build_test_split(args) -> tuple[MultiLabelDataset, tuple[float, ...]]:
    """The test scenes and the size-bucket edges (log-thirds of the dataset's object size range)."""
    if args.data == "fashion-mosaic":
        from hsvlt.data.fashion_mosaic import DEFAULT_ROOT, SIZE_EDGES, FashionMosaicDataset

        dataset = FashionMosaicDataset("test", args.test_size, args.img_size, args.seed, args.root or DEFAULT_ROOT)
        return dataset, SIZE_EDGES
    from hsvlt.data.shapes import MAX_SIZE, MIN_SIZE, ShapesDataset

    return ShapesDataset("test", args.test_size, args.img_size, args.seed), size_bucket_edges(MIN_SIZE, MAX_SIZE)


def object_sizes(dataset: MultiLabelDataset) -> np.ndarray:
    """N x C object sizes from the scene descriptions (NaN where a class is absent)."""
    if hasattr(dataset, "object_sizes"):
        return dataset.object_sizes()
    sizes = np.full((len(dataset), dataset.num_classes), np.nan)
    for i in range(len(dataset)):
        for obj in dataset.scene(i).objects:
            sizes[i, obj.label] = obj.size
    return sizes


# ---- measurements -------------------------------------------------------------------------------------------

def mean_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    aps = average_precisions(scores, targets)
    return float(100 * np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")


# ---- one variant --------------------------------------------------------------------------------------------

def variant_config(variant: Variant, args, folder: Path) -> TrainConfig:
    """The training config of one variant: the study's shared settings, the variant's own, then --train-args."""
    config = TrainConfig(data=args.data, root=args.root, model=variant.model or args.model, img_size=args.img_size,
                         train_size=args.train_size, val_size=args.val_size, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, workers=args.workers,
                         device=args.device, out=folder, **dict(variant.settings))
    return parse_train_flags(shlex.split(args.train_args), base=config)


def train_variant(variant: Variant, args, folder: Path) -> float:
    """Train through hsvlt.train (its Trainer, checkpoints and logs); returns minutes spent."""
    timing = folder / "train_minutes.txt"
    if args.resume and timing.is_file():
        print(f"  {folder} holds a finished run: keeping it (--resume)")
        return float(timing.read_text())
    config = variant_config(variant, args, folder)
    if args.resume and (folder / "last.pt").is_file():
        config = replace(config, resume="last")
    print(f"  python -m hsvlt.train {shlex.join(config.flags())}")
    started = time.perf_counter()
    train(config)
    minutes = (time.perf_counter() - started) / 60
    write_text(timing, f"{minutes:.3f}\n")
    return minutes


def score_variant(variant: Variant, args, folder: Path, placement, test, sizes, edges) -> dict:
    """Test-set figures, size, cost and speed of the variant's best checkpoint; scores saved beside it."""
    model, checkpoint = load_model(folder / "best.pt")
    model.to(placement.device)
    loader = eval_loader(test, eval_transform(args.img_size), 2 * args.batch_size, args.workers)
    predictions = predict(model, loader, placement)
    save_npz(folder / "test_scores.npz", scores=predictions.scores, targets=predictions.targets)
    figures = evaluate_scores(predictions.scores, predictions.targets)
    by_size = average_precision_by_size(predictions.scores, predictions.targets, sizes, edges)
    model.cpu().eval()
    return {
        "key": variant.key, "title": variant.title, "preset": model.config.preset,
        "best_epoch": checkpoint.get("epoch"), "val_mAP": checkpoint.get("metrics", {}).get("mAP"),
        "mAP": figures["mAP"], "CF1": figures["CF1"], "OF1": figures["OF1"],
        **{f"AP_{name}": float(value) for name, value in zip(SIZE_BUCKETS, by_size)},
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "GFLOPs": count_gflops(model, args.img_size),
        "latency_ms": batch1_latency_ms([model], [args.img_size], args.latency_runs, warmup=3)[0],
    }


def add_bootstrap(results: list[dict], folders: dict[str, Path], rounds: int, seed: int) -> None:
    """mAP 95% intervals, and paired intervals of each variant's mAP minus (a)'s (same resampled images)."""
    data = {r["key"]: np.load(folders[r["key"]] / "test_scores.npz") for r in results}
    count = len(next(iter(data.values()))["targets"])
    samples = bootstrap_samples(count, rounds, seed)
    resampled = {key: [mean_ap(d["scores"][s], d["targets"][s]) for s in samples] for key, d in data.items()}
    reference = next((r for r in results if r["key"] == "hsvlt"), None)
    for result in results:
        values = resampled[result["key"]]
        result["mAP_ci"] = bootstrap_interval(values)
        if reference is not None and result is not reference:
            result["a_minus_this"] = reference["mAP"] - result["mAP"]
            pairs = zip(resampled["hsvlt"], values)
            result["a_minus_this_ci"] = bootstrap_interval([ref - value for ref, value in pairs])


# ---- the page and the plot ----------------------------------------------------------------------------------

def machine_description(placement) -> str:
    text = f"{describe()}; PyTorch threads: {torch.get_num_threads()}"
    if placement.device.type == "cuda":
        text += f"; training and test on {torch.cuda.get_device_name(placement.device)}"
    return text


def _number(value, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def results_table(results: list[dict]) -> str:
    header = ("| variant | mAP (95% CI) | CF1 | OF1 | AP small | AP medium | AP large | params (M) | GFLOPs | "
              "CPU latency (ms) | train (min) |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        low, high = r["mAP_ci"]
        lines.append(
            f"| {r['title']} | {_number(r['mAP'])} ({_number(low)}-{_number(high)}) | {_number(r['CF1'])} | "
            f"{_number(r['OF1'])} | {_number(r['AP_small'])} | {_number(r['AP_medium'])} | {_number(r['AP_large'])} "
            f"| {_number(r['params_M'], 2)} | {r['GFLOPs']:.3g} | {_number(r['latency_ms'])} | "
            f"{_number(r['train_minutes'])} |")
    return "\n".join(lines)


def claims_section(results: list[dict]) -> str:
    """Each claim as a comparison with (a): the differences, and what the paired interval allows one to say."""
    by_key = {r["key"]: r for r in results}
    if "hsvlt" not in by_key:
        return "(a) was not part of this run, so no comparison with it.\n"
    a = by_key["hsvlt"]
    lines = ["| claim: (a) vs | what (a) should show | mAP difference, (a) minus it (paired 95% CI) | "
             "AP small difference | verdict on this test set |", "|---|---|---|---|---|"]
    for key, claim in CLAIMS:
        if key not in by_key:
            continue
        other = by_key[key]
        delta, (low, high) = other["a_minus_this"], other["a_minus_this_ci"]
        if low > 0:
            verdict = "(a) better: difference resolved"
        elif high < 0:
            verdict = "(a) worse: difference resolved"
        else:
            verdict = "no resolved difference (interval contains 0)"
        small = a["AP_small"] - other["AP_small"]
        lines.append(f"| {other['title']} | {claim} | {delta:+.1f} ({low:+.1f} to {high:+.1f}) | {small:+.1f} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def settings_table(args) -> str:
    recipe = " ".join(part for part in (f"--lr {args.lr}" if args.lr else "", args.train_args) if part)
    rows = [("training scenes", args.train_size), ("validation scenes (pick the best epoch)", args.val_size),
            ("test scenes (the table)", args.test_size), ("epochs", args.epochs), ("batch", args.batch_size),
            ("image size (px)", args.img_size), ("seed", args.seed),
            ("hsvlt.train recipe", f"its defaults {recipe}".strip())]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def write_page(path: Path, args, results: list[dict], machine: str, minutes: float, edges: tuple[float, ...]) -> None:
    quick = ("> **Smoke test (`--quick`)**: tiny model, data and training; these numbers only show that the "
             "pipeline runs. The study's figures come from the command without `--quick`.\n\n" if args.quick else "")
    edge_text = ", ".join(f"{edge:.3f}" for edge in edges)
    variants = "\n".join(f"- {v.title}: `" + shlex.join(["hsvlt.train", "--model", v.model or args.model,
                                                           *TrainConfig(**dict(v.settings)).flags()]) + "`"
                         for v in args.variant_list)
    page = f"""# Results: HSVLT and its ablations on {args.data}

{quick}Generated by `reports/ablation.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {minutes:.1f} minutes;
every number on this page comes from that run. Reproduce it with:

    {args.command}

Machine: {machine}.

## Setup

{DATASET_NOTES[args.data]}

{settings_table(args)}

Every variant trains through `hsvlt.train` with these settings; its best epoch by validation mAP is scored on
test scenes built from item photos that no training or validation scene uses. (a)-(e) use `{args.model}`:

{variants}

Metrics (percent): mAP with its 95% bootstrap interval over test images ({args.bootstrap} resamples); CF1
and OF1 at threshold 0.5; AP small / medium / large: mAP over the classes with an item of that size, the
positives of other sizes ignored (`hsvlt.metrics.average_precision_by_size`; item size as a fraction of the
image side, cuts at {edge_text}; each bucket holds a third of the positives against all the negatives, so its AP
sits below mAP: compare a bucket across variants). GFLOPs: one image, torch.utils.flop_counter (2 per multiply-add of
convolutions and matrix products). CPU latency: median of {args.latency_runs} batch-1 forward passes, eager
PyTorch fp32, {torch.get_num_threads()} threads.

## Table

{results_table(results)}

![mAP and AP by size per variant; mAP against CPU latency]({os.path.relpath(args.plot, path.parent)})

## The paper's claims on this data

Each row compares (a) with one variant on the same test images: a paired bootstrap interval of the mAP
difference that excludes 0 resolves it; one that contains 0 means this test set cannot tell the two apart.

{claims_section(results)}
## The full-size study on a GPU

The defaults are sized for about an hour on 2 CPU cores. On a CUDA GPU, train at the preset's full resolution
with the whole Fashion-MNIST train split behind the scenes and a larger test set, for example:

    python reports/ablation.py --device cuda --img-size 224 --train-size 60000 --val-size 2000 --test-size 5000 \\
        --epochs 30 --batch-size 64 --workers 8 --out runs/ablation-gpu

Training and test then run on the GPU; GFLOPs and CPU latency are still measured on the machine's CPU.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)


def plot_results(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["title"].split(" ", 1)[0] for r in results]
    figure, (bars, speed) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    keys = ["mAP", "AP_small", "AP_medium", "AP_large"]
    width = 0.8 / len(keys)
    x = np.arange(len(results))
    low, high = np.array([r["mAP_ci"] for r in results]).T
    for k, key in enumerate(keys):
        bars.bar(x + (k - 1.5) * width, [r[key] for r in results], width, label=key.replace("_", " "))
    bars.vlines(x - 1.5 * width, low, high, color="black", linewidth=1.5, label="mAP 95% CI")
    bars.set_xticks(x, names)
    bars.set(ylabel="percent (test set)", title="mAP (95% CI) and AP by item size")
    bars.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    bars.grid(axis="y", alpha=0.3)
    for r, name in zip(results, names):
        speed.plot(r["latency_ms"], r["mAP"], "o")
        speed.vlines(r["latency_ms"], *r["mAP_ci"], color="gray", linewidth=1)
        speed.annotate(name, (r["latency_ms"], r["mAP"]), textcoords="offset points", xytext=(5, 3), fontsize=9)
    speed.set(xlabel="CPU latency at batch 1 (ms)", ylabel="mAP", title="accuracy against speed")
    speed.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path, dpi=110)
    plt.close(figure)


# ---- the run ------------------------------------------------------------------------------------------------

def run(args) -> list[dict]:
    started = time.perf_counter()
    placement = distributed.setup(args.device)
    test, edges = build_test_split(args)
    sizes = object_sizes(test)
    results, folders = [], {}
    for number, variant in enumerate(args.variant_list, 1):
        folder = folders[variant.key] = args.out / variant.key
        print(f"[{number}/{len(args.variant_list)}] {variant.title}")
        train_minutes = train_variant(variant, args, folder)
        result = {**score_variant(variant, args, folder, placement, test, sizes, edges),
                  "train_minutes": train_minutes}
        write_json(folder / "ablation.json", result)
        print(f"  test mAP {result['mAP']:.2f}  AP small/medium/large {result['AP_small']:.1f} / "
              f"{result['AP_medium']:.1f} / {result['AP_large']:.1f}  {result['latency_ms']:.1f} ms")
        results.append(result)
    add_bootstrap(results, folders, args.bootstrap, args.seed)
    minutes = (time.perf_counter() - started) / 60
    machine = machine_description(placement)
    write_json(args.out / "results.json", {"command": args.command, "machine": machine, "minutes": minutes,
                                           "results": results})
    title = f"{args.data}, {args.img_size} px, {args.train_size} scenes x {args.epochs} epochs, test {args.test_size}"
    plot_results(results, args.plot, title + (" (quick smoke test)" if args.quick else ""))
    write_page(args.doc, args, results, machine, minutes, edges)
    print(results_table(results))
    print(f"wrote {args.doc}, {args.plot} and {args.out}/results.json in {minutes:.1f} minutes")
    return results


def main(argv=None) -> None:
    run_command(run, parse_args(argv))


if __name__ == "__main__":
    main()
