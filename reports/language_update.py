"""Which language update trains from scratch: `python reports/language_update.py` trains the from-scratch family
(--model, default hsvlt_nano) once per update of HSVLTConfig.language_update, on the same data, budget, rate and
seed, and writes the table that chose the default into docs/RESULTS.md (its own section; the evidence study keeps
it when it rewrites the page).

Per update, from its best checkpoint and one batch of validation images (hsvlt.engine.learning_signals):
the label-token RMS after every block (the paper's update doubles it per block once its gate saturates), the RMS
of the multi-modal feature S that each stage hands to the head (near 0: a stage the head cannot use), the
gradient norm of each backbone stage (a spread of 100x: some stages no longer learn), and validation mAP at this
fixed budget. An update passes when L stays below L_RMS_BOUND after every block, every stage's S is above
S_ALIVE, and the stages' gradient norms are within GRAD_SPREAD of each other.

--lr-factors trains every update at more rates than the recipe's (robustness: the paper's update degrades as the
rate rises).
"""

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from hsvlt.bench.measure import write_section
from hsvlt.checkpoint import load_model
from hsvlt.cli import image_size, positive_float, positive_int, run_command
from hsvlt.data import build_data
from hsvlt.data.base import to_model_input
from hsvlt.data.loader import eval_loader
from hsvlt.data.transforms import eval_transform
from hsvlt.engine import learning_signals
from hsvlt.machine import describe
from hsvlt.models.config import LANGUAGE_UPDATES
from hsvlt.outputs import run_folder, write_json
from hsvlt.train import TrainConfig, train
from hsvlt.train import parse_args as parse_train_flags

L_RMS_BOUND = 10.0  # label tokens start at RMS ~1; 10 leaves room for what training learns, not for compounding
S_ALIVE = 0.1  # a dead stage measured 0.02; healthy ones 0.3-1
GRAD_SPREAD = 10.0  # largest / smallest backbone-stage gradient norm
SECTION = "language-update"


# Sizes of the full run (the defaults) and of --quick (a check of the pipeline, numbers mean nothing).
FULL = {"model": "hsvlt_nano", "train_size": 4000, "val_size": 400, "epochs": 3}
QUICK = {"model": "hsvlt_pico", "train_size": 64, "val_size": 32, "epochs": 1}


@dataclass
class LanguageUpdateConfig:
    """One run of this report, as `python reports/language_update.py` takes it (flags parse into one,
    `parse_args`); tools build one directly: `run(LanguageUpdateConfig(updates=("paper",), quick=True))`. None
    means the full run's size (FULL) or, with `quick`, the quick one's (QUICK); `resolved()` fills those in."""

    updates: tuple[str, ...] = LANGUAGE_UPDATES
    model: str | None = None
    data: str = "shapes"
    img_size: int = 64
    train_size: int | None = None
    val_size: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr_factors: tuple[float, ...] = (1.0,)
    seed: int = 0
    train_args: str = ""
    out: Path = Path("runs/language-update")
    doc: Path = Path("docs/RESULTS.md")
    quick: bool = False
    rewrite: Path | None = None  # an earlier run's results.json: write its section again, train nothing
    command: str = "python reports/language_update.py"  # how the page says to reproduce the run

    def resolved(self) -> "LanguageUpdateConfig":
        """A copy with every None filled from the run's sizes (FULL, or QUICK with `quick`)."""
        sizes = QUICK if self.quick else FULL
        filled = {key: value for key, value in sizes.items() if getattr(self, key) is None}
        return replace(self, **filled, updates=tuple(self.updates), lr_factors=tuple(self.lr_factors))


def parse_args(argv=None) -> LanguageUpdateConfig:
    defaults = LanguageUpdateConfig()
    parser = argparse.ArgumentParser(prog="python reports/language_update.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", nargs="+", choices=LANGUAGE_UPDATES, default=list(defaults.updates))
    parser.add_argument("--model")
    parser.add_argument("--data", default=defaults.data)
    parser.add_argument("--img-size", type=image_size, default=defaults.img_size)
    parser.add_argument("--train-size", type=positive_int)
    parser.add_argument("--val-size", type=positive_int)
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--lr-factors", type=positive_float, nargs="+", default=list(defaults.lr_factors),
                        help="train each update at these multiples of the recipe's rate (default: 1)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-args", default=defaults.train_args, help="more hsvlt.train flags for every run, "
                                                                          "one string")
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--doc", type=Path, default=defaults.doc)
    parser.add_argument("--quick", action="store_true", help="hsvlt_pico on a few scenes: checks the pipeline")
    parser.add_argument("--rewrite", type=Path, metavar="RESULTS_JSON",
                        help="train nothing: write the page's section again from an earlier run's results.json")
    flags = vars(parser.parse_args(argv))
    command = shlex.join(["python", "reports/language_update.py", *(sys.argv[1:] if argv is None else argv)])
    return LanguageUpdateConfig(**flags, command=command).resolved()


def measure(update: str, lr_factor: float, config: LanguageUpdateConfig, folder: Path) -> dict:
    """Train one update at one rate through hsvlt.train; its validation mAP and learning signals."""
    training = TrainConfig(data=config.data, model=config.model, img_size=config.img_size,
                           train_size=config.train_size, val_size=config.val_size, epochs=config.epochs,
                           batch_size=config.batch_size, seed=config.seed, language_update=update, out=folder,
                           exist_ok=True)
    training = parse_train_flags(shlex.split(config.train_args), base=training)
    training = replace(training, lr=training.resolved().lr * lr_factor)
    started = time.perf_counter()
    summary = train(training)
    minutes = (time.perf_counter() - started) / 60
    model, _ = load_model(folder / "best.pt")
    bundle = build_data(config.data, image_size=config.img_size, seed=config.seed, train_size=config.batch_size,
                        val_size=config.val_size)
    batch = next(iter(eval_loader(bundle.val, eval_transform(config.img_size), config.batch_size, 0)))
    signals = learning_signals(model, to_model_input(batch["images"], torch.device("cpu")), batch["targets"])
    return {"update": update, "lr": training.lr, "lr_factor": lr_factor, "val_mAP": summary["mAP"],
            "val_CF1": summary["CF1"], "train_minutes": minutes, **signals}


def failed_checks(result: dict) -> list[str]:
    """What keeps an update from passing: each check that failed, named by what it saw."""
    blocks = [value for stage in result["L_rms_blocks"] for value in stage]
    grads, features = result["grad_norm"], list(result["S_rms"].values())
    failed = {"L above the bound": max(blocks) >= L_RMS_BOUND, "a stage's S dead": min(features) <= S_ALIVE,
              "gradients uneven": max(grads) / min(grads) > GRAD_SPREAD}
    return [name for name, fails in failed.items() if fails]


def table(results: list[dict]) -> str:
    lines = ["| update | lr | val mAP | CF1 | label-token RMS after each block (stages split by \\|) | S RMS per stage "
             "| gradient norm per stage | grad spread | passes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        blocks = " \\| ".join(", ".join(f"{value:.3g}" for value in stage) for stage in r["L_rms_blocks"])
        features = " / ".join(f"{value:.2g}" for value in r["S_rms"].values())
        grads = " / ".join(f"{value:.2g}" for value in r["grad_norm"])
        spread = max(r["grad_norm"]) / min(r["grad_norm"])
        failed = failed_checks(r)
        verdict = "no: " + ", ".join(failed) if failed else "**yes**"
        lines.append(f"| {r['update']} | {r['lr']:.3g} | {r['val_mAP']:.1f} | {r['val_CF1']:.1f} | {blocks} | "
                     f"{features} | {grads} | {spread:.0f}x | {verdict} |")
    return "\n".join(lines)


def section_name(train_args: str) -> str:
    """One section of the page per set of extra training flags, so that a run with other flags adds its table."""
    flags = "".join(ch if ch.isalnum() else "-" for ch in train_args.strip()).strip("-")
    return SECTION + (f"-{flags}" if flags else "")


def section(config: LanguageUpdateConfig, results: list[dict], machine: str, minutes: float) -> str:
    extra = f", with `{config.train_args.strip()}`" if config.train_args.strip() else ""
    return f"""## The language update: which one trains from scratch{extra}

Generated by `reports/language_update.py` in {minutes:.1f} minutes on {machine}. Reproduce it with:

    {config.command.strip()}

`{config.model}` from scratch on `{config.data}`: {config.train_size} scenes x {config.epochs} epochs at \
{config.img_size} px,
batch {config.batch_size}, seed {config.seed}, validated on {config.val_size} scenes; every update on the same \
data, budget
and seed, at the recipe's rate x each factor. Signals from the best epoch's weights on one batch of validation
images. An update passes when the label tokens stay below RMS {L_RMS_BOUND:g} after every block, every stage's S is
above {S_ALIVE:g} and the backbone stages' gradient norms are within {GRAD_SPREAD:g}x of each other.
The updates (hsvlt/models/ivla.py, GatedResidual): `paper` x = L + S, L <- x + g(x) x; `update_gate`
L <- L + S + g(S) S; `layer_scale` the paper's with a per-channel scale on g(x) x started at 0.01; `post_norm` the
paper's followed by a LayerNorm; `stage_norm` the paper's with a LayerNorm on L where it enters each stage.

{table(results)}
"""


def run(config: LanguageUpdateConfig) -> list[dict]:
    config = config.resolved()
    if config.rewrite:
        record = json.loads(config.rewrite.read_text())
        saved = parse_args(shlex.split(record["command"])[2:])
        write_page(saved, config.doc, record)
        return record["results"]
    started = time.perf_counter()
    out = run_folder(config.out, exist_ok=False)
    record = {"command": config.command.strip(), "machine": describe(), "minutes": 0.0, "results": []}
    for update in config.updates:
        for factor in config.lr_factors:
            print(f"== {update} at {factor:g} x the recipe's rate")
            result = measure(update, factor, config, out / f"{update}-lr{factor:g}")
            print(f"   val mAP {result['val_mAP']:.1f}, L RMS max {max(map(max, result['L_rms_blocks'])):.3g}, "
                  f"failed: {', '.join(failed_checks(result)) or 'none'}")
            record["results"].append(result)
            record["minutes"] = (time.perf_counter() - started) / 60
            write_json(out / "results.json", record)
    write_page(config, config.doc, record)
    print(f"and {out}/results.json")
    return record["results"]


def write_page(config: LanguageUpdateConfig, doc: Path, record: dict) -> None:
    write_section(doc, section_name(config.train_args),
                  section(config, record["results"], record["machine"], record["minutes"]))
    print(table(record["results"]))
    print(f"wrote {doc} (section {section_name(config.train_args)}) in {record['minutes']:.1f} minutes")


def main(argv=None) -> None:
    run_command(run, parse_args(argv))


if __name__ == "__main__":
    main()
