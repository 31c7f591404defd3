"""Throughput of every preset on this machine: `python reports/train_speed.py`.

For each preset at its own input size: training images/s (hsvlt.train's step: forward, backward, clipping, AdamW),
data-loading images/s (the training pipeline on `shapes`: generation, augmentation, collation, with --workers
processes), inference images/s (batch --batch-size) and batch-1 latency, parameters and GFLOPs of one image.
The last column says whether data loading keeps up with training (it must, for hsvlt_nano at 224).
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from hsvlt.bench.measure import timed
from hsvlt.cli import non_negative_int, positive_int
from hsvlt.data.loader import train_loader
from hsvlt.data.shapes import CLASSES, ShapesDataset
from hsvlt.data.transforms import train_transform
from hsvlt.distributed import configure_cpu
from hsvlt.engine import Engine
from hsvlt.evaluate import autocast_dtype
from hsvlt.labels import load_label_set
from hsvlt.machine import count_gflops, cpu_name
from hsvlt.models import PRESETS, create_model
from hsvlt.train import TrainConfig

DEFAULT_PRESETS = ("hsvlt_nano", "hsvlt_lite0", "hsvlt_tiny", "hsvlt_small")
CPU = torch.device("cpu")


@dataclass
class SpeedConfig:
    """One run of the report, as `python reports/train_speed.py` takes it (its flags parse into one, `parse_args`)."""

    presets: tuple[str, ...] = DEFAULT_PRESETS
    batch_size: int = 8  # for training and inference
    steps: int = 5  # timed repetitions of each measurement
    workers: int = 1  # data-loading processes, as in training

    def __post_init__(self):
        self.presets = tuple(self.presets)  # the command line hands over a list


def measure(preset: str, batch_size: int, steps: int, workers: int) -> dict:
    size = PRESETS[preset].img_size
    embeddings = torch.from_numpy(load_label_set("shapes").embeddings)
    model = create_model(preset, embeddings)
    images = torch.rand(batch_size, 3, size, size)
    targets = (torch.rand(batch_size, len(CLASSES)) < 0.25).float()
    # hsvlt.train's step as a run from scratch on shapes configures it: autocast where the CPU has native bf16,
    # AdamW over its parameter groups, gradient clipping; images in the layout its loader hands over.
    engine = Engine.for_config(model, TrainConfig(model=preset, batch_size=batch_size, no_pretrained=True).resolved())
    train_images = images.contiguous(memory_format=torch.channels_last)

    model.train()
    engine.step(train_images, targets)  # warm-up
    train_times = timed(lambda: engine.step(train_images, targets), steps)

    model.eval()
    one = images[:1]
    with torch.no_grad():
        model(images)
        infer_times = timed(lambda: model(images), steps)
        latency = timed(lambda: model(one), max(steps, 5))

    dataset = ShapesDataset("train", (steps + 2) * batch_size, size)
    loader, sampler = train_loader(dataset, train_transform(size, 1.0, 0), batch_size, workers, seed=0)
    sampler.set_epoch(0)
    batches = iter(loader)
    next(batches)  # worker start-up
    started = time.perf_counter()
    loaded = sum(len(batch["images"]) for _, batch in zip(range(steps), batches))
    data_rate = loaded / (time.perf_counter() - started)
    del batches, loader

    train_rate = batch_size / float(np.median(train_times))
    return {
        "preset": preset,
        "size": size,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "GFLOPs": count_gflops(model, size),
        "train_img_s": train_rate,
        "data_img_s": data_rate,
        "infer_img_s": batch_size / float(np.median(infer_times)),
        "latency_ms": 1000 * float(np.median(latency)),
        "data_keeps_up": data_rate >= train_rate,
    }


def format_table(rows: list[dict]) -> str:
    header = ("| preset | px | params (M) | GFLOPs | train img/s | data img/s | infer img/s | batch-1 ms "
              "| data keeps up |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['size']} | {r['params_M']:.1f} | {r['GFLOPs']:.2f} | "
                     f"{r['train_img_s']:.1f} | {r['data_img_s']:.0f} | {r['infer_img_s']:.1f} | "
                     f"{r['latency_ms']:.1f} | {'yes' if r['data_keeps_up'] else 'NO'} |")
    return "\n".join(lines)


def parse_args(argv=None) -> SpeedConfig:
    defaults = SpeedConfig()
    parser = argparse.ArgumentParser(prog="python reports/train_speed.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(defaults.presets), choices=sorted(PRESETS))
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help="batch for training and inference")
    parser.add_argument("--steps", type=positive_int, default=defaults.steps,
                        help="timed repetitions of each measurement")
    parser.add_argument("--workers", type=non_negative_int, default=defaults.workers,
                        help="data-loading processes (as in training)")
    return SpeedConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> list[dict]:
    config = parse_args(argv)
    configure_cpu()
    dtype = autocast_dtype(CPU, cpu=True)
    rows = [measure(preset, config.batch_size, config.steps, config.workers)
            for preset in tqdm(config.presets, desc="presets")]
    precision = "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {config.batch_size}, "
          f"training in {precision}, inference in float32")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
