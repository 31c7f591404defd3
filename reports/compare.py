"""Compare finished training runs: `python reports/compare.py RUN_DIR [RUN_DIR ...]`.

For each run folder written by `python -m hsvlt.train --out RUN_DIR`: preset, best validation mAP, training
images/s (median over epochs, as logged), and batch-1 CPU latency of its best.pt at its training size and at
224 px (median of --runs calls, the runs' models interleaved so that machine load hits them alike).
"""

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from hsvlt.bench.measure import batch1_latency_ms
from hsvlt.checkpoint import load_model
from hsvlt.cli import positive_int, run_command
from hsvlt.distributed import configure_cpu


@dataclass
class CompareConfig:
    """One comparison, as `python reports/compare.py` takes it (its arguments parse into one, `parse_args`)."""

    runs: tuple[Path, ...]  # run folders holding best.pt and log.jsonl
    calls: int = 30  # timed calls per model (--runs)

    def __post_init__(self):
        self.runs = tuple(self.runs)  # the command line hands over a list


def read_runs(runs: list[Path]) -> tuple[list, list[list[dict]]]:
    """(model, checkpoint) of each run's best.pt and the entries of its log.jsonl."""
    loaded = [load_model(run / "best.pt") for run in runs]
    logs = [[json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for run in runs]
    return loaded, logs


def parse_args(argv=None) -> CompareConfig:
    defaults = CompareConfig(runs=())
    parser = argparse.ArgumentParser(prog="python reports/compare.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding best.pt and log.jsonl")
    parser.add_argument("--runs", dest="calls", type=positive_int, default=defaults.calls,
                        help="timed calls per model")
    return CompareConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> None:
    config = parse_args(argv)
    configure_cpu()
    loaded, logs = run_command(read_runs, list(config.runs))
    models = [model for model, _ in loaded]
    own_sizes = [model.config.img_size for model in models]
    at_own = batch1_latency_ms(models, own_sizes, config.calls)
    at_224 = batch1_latency_ms(models, [224] * len(models), config.calls)
    print(f"{torch.get_num_threads()} threads")
    print(f"{'run':<16} {'preset':<12} {'epochs':>6} {'val mAP':>7} {'train img/s':>11} {'ms b1 @own px':>14} "
          f"{'ms b1 @224':>10}")
    for run, (model, state), log, own, full in zip(config.runs, loaded, logs, at_own, at_224):
        speed = statistics.median(entry["images_per_s"] for entry in log)
        print(f"{run.name:<16} {model.config.preset:<12} {len(log):>6} {state['metrics']['mAP']:7.2f} {speed:11.1f} "
              f"{own:9.1f} @{model.config.img_size:<3} {full:10.1f}")


if __name__ == "__main__":
    main()
