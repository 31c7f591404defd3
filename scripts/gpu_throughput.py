"""Training throughput and peak memory of HSVLT on this machine's GPU, and the batch size and data-loading workers
a COCO run on one GPU should start with; writes them with the machine's description to docs/GPU.md.

    python scripts/gpu_throughput.py                                  # what scripts/gpu_check.sh runs
    python scripts/gpu_throughput.py --config hsvlt_nano:224:64,128 --out /tmp/GPU.md

A measurement is hsvlt.train's training step (hsvlt.engine: autocast in the dtype hsvlt.evaluate.autocast_dtype
picks, with a gradient scaler in float16, gradient clipping, AdamW) on random batches with the 80 COCO labels,
already in pinned memory, timed over --steps steps after --warmup. The batch recommended for a configuration is
the largest whose images/s is within --within of the best among those whose peak reserved memory stays within
--memory-fraction of the GPU's. The workers recommended are the data-loading processes that keep up with that
batch's rate x --headroom: decoding and augmenting COCO-sized JPEGs (640 x 480) as hsvlt.train does, at most one
per core less the training process.
"""

import argparse
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch

from hsvlt.data import data_defaults
from hsvlt.data.base import FileDataset, to_model_input
from hsvlt.data.loader import train_loader
from hsvlt.data.transforms import train_transform
from hsvlt.distributed import Placement
from hsvlt.engine import Engine
from hsvlt.evaluate import autocast_dtype
from hsvlt.labels import load_label_set
from hsvlt.machine import cpu_name, usable_cores
from hsvlt.models import PRESETS, create_model
from hsvlt.outputs import write_text
from hsvlt.train import TrainConfig

DEFAULT_CONFIGS = ("hsvlt_nano:224:32,64,128,256,512", "hsvlt_small:448:8,16,32,64,128")
GIB = 2**30
LOADER_BATCH = 16  # batches of the loader measurement: small, so that workers fit a small /dev/shm


@dataclass(frozen=True)
class Config:
    preset: str
    img_size: int
    batches: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.preset} at {self.img_size} px"


@dataclass
class Measurement:
    config: Config
    batch: int
    images_per_s: float = math.nan
    step_ms: float = math.nan
    allocated_gib: float = math.nan  # peak memory held by tensors
    reserved_gib: float = math.nan  # peak memory the caching allocator took from the GPU (what nvidia-smi counts)
    error: str | None = None


def config(text: str) -> Config:
    """argparse type: PRESET:SIZE:B1,B2,..."""
    try:
        preset, size, batches = text.split(":")
        parsed = Config(preset, int(size), tuple(sorted(int(b) for b in batches.split(","))))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PRESET:SIZE:B1,B2,... (e.g. hsvlt_nano:224:32,64)") from None
    if preset not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {preset}; choose from {', '.join(sorted(PRESETS))}")
    if parsed.img_size % 32 or min(parsed.batches) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be a multiple of 32 and batches positive")
    return parsed


@dataclass(frozen=True)
class ThroughputConfig:
    """What one measurement run measures and how it recommends (the flags parse into one, `parse_args`)."""

    configs: tuple[Config, ...] = tuple(config(text) for text in DEFAULT_CONFIGS)
    steps: int = 10
    warmup: int = 3
    memory_fraction: float = 0.8
    within: float = 0.03
    headroom: float = 1.25
    device: str = "cuda"
    tests: str | None = None
    out: Path = Path("docs/GPU.md")


def parse_args(argv=None) -> ThroughputConfig:
    defaults = ThroughputConfig()
    parser = argparse.ArgumentParser(prog="python scripts/gpu_throughput.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", dest="configs", type=config, action="append",
                        help=f"PRESET:SIZE:B1,B2,... to measure, repeatable (default: "
                             f"{' and '.join(DEFAULT_CONFIGS)}); batches run in increasing order and stop at the "
                             f"first that does not fit")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed training steps per batch size")
    parser.add_argument("--warmup", type=int, default=defaults.warmup,
                        help="untimed steps first (allocation, cuDNN choices)")
    parser.add_argument("--memory-fraction", type=float, default=defaults.memory_fraction,
                        help="a batch fits comfortably when its peak reserved memory is at most this share of "
                             "the GPU's")
    parser.add_argument("--within", type=float, default=defaults.within,
                        help="recommend the largest fitting batch whose images/s is within this fraction of the best")
    parser.add_argument("--headroom", type=float, default=defaults.headroom,
                        help="recommend workers that load this many times the training rate")
    parser.add_argument("--device", default=defaults.device, help="cuda or cuda:N")
    parser.add_argument("--tests", help="the GPU tests' result line, quoted on the page (scripts/gpu_check.sh)")
    parser.add_argument("--out", type=Path, default=defaults.out, help="page to write")
    args = vars(parser.parse_args(argv))
    return ThroughputConfig(**{**args, "configs": tuple(args["configs"] or defaults.configs)})


# ---- training throughput --------------------------------------------------------------------------------------

def time_training(cfg: Config, batch: int, device: torch.device, embeddings: torch.Tensor, steps: int,
                  warmup: int) -> Measurement:
    """hsvlt.train's step (hsvlt.engine, with what a COCO run from scratch configures) on one random batch,
    repeated; raises torch.OutOfMemoryError when it does not fit."""
    torch.manual_seed(0)
    model = create_model(cfg.preset, embeddings, img_size=cfg.img_size).to(device).train()
    config = TrainConfig(data="coco", model=cfg.preset, img_size=cfg.img_size, batch_size=batch,
                         no_pretrained=True).resolved()
    engine = Engine.for_config(model, config, Placement(device))
    images = torch.randint(0, 256, (batch, cfg.img_size, cfg.img_size, 3), dtype=torch.uint8).pin_memory()  # B H W 3
    targets = (torch.rand(batch, len(embeddings)) < 0.04).float().pin_memory()  # ~3 of 80 labels, as on COCO

    def step() -> None:
        engine.step(to_model_input(images, device), targets.to(device, non_blocking=True))

    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    return Measurement(cfg, batch, batch * steps / elapsed, 1000 * elapsed / steps,
                       torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB)


def measure_config(cfg: Config, device: torch.device, embeddings: torch.Tensor,
                   args: ThroughputConfig) -> list[Measurement]:
    results = []
    for batch in cfg.batches:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            result = time_training(cfg, batch, device, embeddings, args.steps, args.warmup)
        except RuntimeError as error:  # torch.OutOfMemoryError, or a cuBLAS / cuDNN workspace that could not be had
            if not isinstance(error, torch.OutOfMemoryError) and "ALLOC_FAILED" not in str(error):
                raise
            result = Measurement(cfg, batch, error="out of memory")
        torch.cuda.empty_cache()  # what the failed or finished batch held, before the next model
        results.append(result)
        shown = (f"{result.images_per_s:8.1f} images/s  {result.step_ms:7.1f} ms/step  peak "
                 f"{result.reserved_gib:6.2f} GiB reserved" if result.error is None else result.error)
        print(f"{cfg.name:26s} batch {batch:4d}  {shown}", flush=True)
        if result.error is not None:
            break  # larger batches need more memory still
    return results


def recommend_batch(results: list[Measurement], total_gib: float, fraction: float, within: float):
    """(the largest batch that fits within `fraction` of the memory and runs within `within` of the best images/s
    among those that fit, that best images/s); None when none fits."""
    fitting = [m for m in results if m.error is None and m.reserved_gib <= fraction * total_gib]
    if not fitting:
        return None
    fastest = max(m.images_per_s for m in fitting)
    return max((m for m in fitting if m.images_per_s >= (1 - within) * fastest), key=lambda m: m.batch), fastest


# ---- data loading ---------------------------------------------------------------------------------------------

def write_coco_like_jpegs(folder: Path, count: int = 48, seed: int = 0) -> list[Path]:
    """640 x 480 JPEGs (quality 90) of smooth colour fields with grain: about the size and decoding cost of COCO's
    photos, which this machine may not hold."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (640, 480), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        image += rng.normal(0, 12, image.shape)
        path = folder / f"{i:03d}.jpg"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def loading_rate(paths: list[Path], labels: list[str], img_size: int, workers: int) -> float:
    """Images/s that `workers` loader processes deliver (decode, COCO's training augmentation, collate, pinned),
    timed once each worker has delivered its first batch."""
    batches = 4 * workers
    repeated = [paths[i % len(paths)] for i in range(batches * LOADER_BATCH)]
    dataset = FileDataset(labels, repeated, np.zeros((len(repeated), len(labels)), np.float32))
    defaults = data_defaults("coco")
    loader, _ = train_loader(dataset, train_transform(img_size, defaults["crop_scale"], defaults["randaugment"]),
                             LOADER_BATCH, workers, seed=0)
    started, images = None, 0
    for number, batch in enumerate(loader, 1):
        if number == workers:
            started = time.perf_counter()
        elif started is not None:
            images += len(batch["images"])
    rate = images / (time.perf_counter() - started)
    del loader  # ends the persistent workers
    return rate


def recommend_workers(train_rate: float, paths, labels, img_size: int, headroom: float, cores: int) -> dict:
    """Workers for `train_rate` images/s x headroom, from one worker's measured rate (at most cores - 1: the
    training process needs one), and the rate that many deliver, measured. A loader that fails (a worker killed
    because /dev/shm is too small for its batches, say) leaves its figures NaN and says why."""
    limit = max(1, cores - 1)
    result = {"workers": limit, "one_worker": math.nan, "measured": math.nan, "capped": False, "error": None}
    try:
        result["one_worker"] = loading_rate(paths, labels, img_size, 1)
        wanted = math.ceil(headroom * train_rate / result["one_worker"])
        result["workers"], result["capped"] = max(1, min(limit, wanted)), wanted > limit
        result["measured"] = loading_rate(paths, labels, img_size, result["workers"])
    except RuntimeError as failure:
        result["error"] = str(failure).strip().splitlines()[0][:200]
    return result


# ---- the page -------------------------------------------------------------------------------------------------

def driver_version(index: int) -> str:
    if shutil.which("nvidia-smi") is None:
        return "unknown (no nvidia-smi)"
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i",
                                 str(index)], capture_output=True, text=True, timeout=30, check=True)
        return result.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi failed)"


def machine(device: torch.device, cores: int) -> dict:
    properties = torch.cuda.get_device_properties(device)
    shm = shutil.disk_usage("/dev/shm").total / GIB if Path("/dev/shm").is_dir() else math.nan
    return {"gpu": properties.name, "memory_gib": properties.total_memory / GIB,
            "capability": f"{properties.major}.{properties.minor}", "driver": driver_version(device.index or 0),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu_name(), "cores": cores, "shm_gib": shm,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}


def number(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def page(info: dict, results: list[Measurement], choices: dict, args: ThroughputConfig,
         dtype: torch.dtype) -> str:
    rows = ["| model | input (px) | batch | images/s | ms/step | peak allocated (GiB) | peak reserved (GiB) |",
            "|---|---|---|---|---|---|---|"]
    for m in results:
        if m.error is not None:
            rows.append(f"| {m.config.preset} | {m.config.img_size} | {m.batch} | {m.error} | | | |")
        else:
            rows.append(f"| {m.config.preset} | {m.config.img_size} | {m.batch} | {m.images_per_s:.0f} | "
                        f"{m.step_ms:.1f} | {m.allocated_gib:.2f} | {m.reserved_gib:.2f} |")
    loading = ["| model | input (px) | one worker (images/s) | recommended workers | they deliver (images/s) |",
               "|---|---|---|---|---|"]
    advice = []
    for cfg in args.configs:
        choice = choices[cfg]
        if choice is None:
            advice.append(f"- {cfg.name}: no measured batch fits within {args.memory_fraction:.0%} of this GPU's "
                          f"memory; measure smaller ones (`--config {cfg.preset}:{cfg.img_size}:4,8`).")
            continue
        best, loader = choice["best"], choice["loader"]
        loading.append(f"| {cfg.preset} | {cfg.img_size} | {number(loader['one_worker'], 0)} | {loader['workers']} | "
                       f"{number(loader['measured'], 0)} |")
        model_flag = "" if cfg.preset == "hsvlt_nano" else f" --model {cfg.preset}"
        size_flag = "" if cfg.img_size == PRESETS[cfg.preset].img_size else f" --img-size {cfg.img_size}"
        line = (f"- {cfg.name}: `python -m hsvlt.train --data coco --root ~/data/coco{model_flag}{size_flag} "
                f"--batch-size {best.batch} --workers {loader['workers']}`. Batch {best.batch}: "
                f"{best.images_per_s:.0f} images/s ({best.images_per_s / choice['fastest']:.0%} of the best that "
                f"fits), peak {best.reserved_gib:.1f} of {info['memory_gib']:.0f} GiB.")
        if loader["measured"] < best.images_per_s:
            line += (f" Loading is the limit here: {loader['workers']} workers deliver {loader['measured']:.0f} "
                     f"images/s of the {best.images_per_s:.0f} the GPU takes; more cores, or images stored at a "
                     f"lower resolution, would train faster.")
        elif loader["capped"]:
            line += (f" That is all the cores less one, and short of {args.headroom:g}x the GPU's rate: "
                     f"{loader['measured']:.0f} images/s.")
        if loader["error"]:
            line += f" The loader with {loader['workers']} workers failed here ({loader['error']})."
        shm_gib = loader["workers"] * 4 * best.batch * cfg.img_size**2 * 3 / GIB  # 4 batches in flight per worker
        line += (f" Its workers hold up to {shm_gib:.1f} GiB of batches in /dev/shm (here "
                 f"{number(info['shm_gib'])} GiB).")
        advice.append(line)
    tests = f"Tests on this machine: `pytest tests/gpu`: {args.tests}.\n\n" if args.tests else ""
    precision = {torch.bfloat16: "bf16 autocast", torch.float16: "float16 autocast with gradient scaling"}.get(
        dtype, "float32")
    return f"""# GPU: training throughput, memory and where to start

Measured by `bash scripts/gpu_check.sh` (`scripts/gpu_throughput.py`) on {info['date']} UTC; every number on this
page comes from that run.

Machine: {info['gpu']} ({info['memory_gib']:.1f} GiB, compute capability {info['capability']}), driver
{info['driver']}, CUDA {info['cuda']} and cuDNN {info['cudnn']} (torch's), torch {info['torch']}, Python
{info['python']}; CPU {info['cpu']}, {info['cores']} cores usable; /dev/shm {number(info['shm_gib'])} GiB.

{tests}## Training throughput

hsvlt.train's training step in {precision} (the choice for this GPU), gradient clipping and AdamW, on random
batches with the 80 COCO labels already in pinned memory: images/s over {args.steps} steps after {args.warmup}
warm-up steps; peak memory from the start of the model's creation. Batch sizes stop at the first that does not fit.

{chr(10).join(rows)}

## Data loading

The training augmentation of a COCO run (random resized crop to 0.7 of the area, flip, 2 RandAugment ops) on
640 x 480 JPEGs, through hsvlt.train's loader (batches of {LOADER_BATCH}, pinned). Workers are recommended for
{args.headroom:g}x the training rate of the recommended batch, at most the cores less one.

{chr(10).join(loading)}

## Where a COCO run on one GPU should start

The largest batch whose peak reserved memory is at most {args.memory_fraction:.0%} of the GPU's and whose images/s is
within {args.within:.0%} of the best such batch, and the workers that feed it:

{chr(10).join(advice)}

The `--lr` defaults were set at batch 32: a larger batch takes fewer, larger steps per epoch, so revisit `--lr` and
`--warmup-epochs` with it. Several GPUs: `torchrun --nproc_per_node N -m hsvlt.train ...`, the batch and workers
above per process.
"""


def main(argv=None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device is visible to torch; this measures a GPU")
    device = torch.device(args.device)
    device = device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    cores = usable_cores()
    info = machine(device, cores)
    dtype = autocast_dtype(device, cpu=True)
    print(f"{info['gpu']}, {info['memory_gib']:.1f} GiB, driver {info['driver']}, torch {info['torch']}", flush=True)
    labels = load_label_set("coco")
    embeddings = torch.from_numpy(labels.embeddings)  # 80 x 384
    results, choices = [], {}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_coco_like_jpegs(Path(folder))
        for cfg in args.configs:
            measured = measure_config(cfg, device, embeddings, args)
            results += measured
            recommended = recommend_batch(measured, info["memory_gib"], args.memory_fraction, args.within)
            if recommended is None:
                choices[cfg] = None
                continue
            best, fastest = recommended
            loader = recommend_workers(best.images_per_s, paths, list(labels.names), cfg.img_size, args.headroom,
                                       cores)
            choices[cfg] = {"best": best, "fastest": fastest, "loader": loader}
            print(f"{cfg.name}: batch {best.batch}, {loader['workers']} workers (one worker "
                  f"{number(loader['one_worker'], 0)} images/s, {loader['workers']} deliver "
                  f"{number(loader['measured'], 0)}{'; ' + loader['error'] if loader['error'] else ''})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, page(info, results, choices, args, dtype))  # an interrupted run leaves the old page whole
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
