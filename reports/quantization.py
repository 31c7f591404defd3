"""The int8 evidence: fp32 vs PTQ int8 vs QAT int8, each measured as an ExecuTorch program through the
ExecuTorch runtime on the checkpoint's validation set; written to docs/QUANT.md (+ .png).

    python -m hsvlt.train --model hsvlt_nano --out runs/nano
    python -m hsvlt.train --model hsvlt_lite0 --pretrained imagenet --out runs/lite0
    python reports/quantization.py --ckpt runs/nano/best.pt runs/lite0/best.pt
    python reports/quantization.py --ckpt runs/nano/best.pt --float-study     # which layers should stay float
    python reports/quantization.py --ckpt runs/nano/best.pt --eager-study     # torchao's eager QAT flow against PT2E

For each checkpoint: quant/qat.py --ptq and quant/qat.py (QAT, --qat-epochs), both exported with
export/to_executorch.py --int8 and evaluated by export/evaluate_artifact.py's code, next to the fp32 program.
--float-study quantises (PTQ) with each group of hsvlt.quant.pt2e.FLOAT_LAYERS kept in float, one at a time and
all together, and reports the converted model's validation mAP: the measurement behind
hsvlt.quant.pt2e.DEFAULT_FLOAT_LAYERS, written to docs/QUANT_FLOAT_LAYERS.md.
--eager-study trains torchao's eager QAT flow (hsvlt/quant/eager.py) as long as quant/qat.py's PT2E QAT and measures
both programs and the fp32 one through the ExecuTorch runtime: validation mAP, batch-1 latency at the
checkpoint's input size, file size and how whole the XNNPACK delegation is; written to docs/QUANT_EAGER.md.
"""

import argparse
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from hsvlt.checkpoint import load_source
from hsvlt.cli import non_negative_int, positive_float, positive_int, run_command
from hsvlt.export.common import size_mb
from hsvlt.outputs import save_figure, write_bytes, write_text
from hsvlt.quant.pt2e import DEFAULT_FLOAT_LAYERS, FLOAT_LAYERS
from hsvlt.quant.qat import QuantizeConfig

STUDY = [()] + [(name,) for name in FLOAT_LAYERS] + [tuple(FLOAT_LAYERS)]


@dataclass
class QuantReportConfig:
    """One run of the report, as `python reports/quantization.py` takes it (its flags parse into one,
    `parse_args`). None means: qat_lr quant/qat.py's rate, out the page of the chosen study, workdir a temporary
    folder, train_size and val_size each checkpoint's; `resolved()` fills in the first two."""

    ckpt: tuple[Path, ...]  # trained fp32 checkpoints (best.pt)
    qat_epochs: int = 3
    max_steps: int | None = None  # at most this many QAT steps per epoch (quick runs)
    qat_lr: tuple[float, ...] | None = None  # one for all checkpoints, or one per checkpoint
    float_study: bool = False
    eager_study: bool = False
    train_size: int | None = None
    val_size: int | None = None
    workers: int = 1
    out: Path | None = None
    workdir: Path | None = None

    def resolved(self) -> "QuantReportConfig":
        """A copy with the page to write and a learning rate (or None) for each checkpoint."""
        default = ("docs/QUANT_FLOAT_LAYERS.md" if self.float_study else
                   "docs/QUANT_EAGER.md" if self.eager_study else "docs/QUANT.md")
        rates = tuple(self.qat_lr) * (len(self.ckpt) if len(self.qat_lr) == 1 else 1) if self.qat_lr else None
        return replace(self, ckpt=tuple(self.ckpt), qat_lr=rates, out=Path(self.out or default))

    def runs(self) -> list[tuple[Path, float | None]]:
        """(checkpoint, its QAT learning rate or None for quant/qat.py's) of each --ckpt."""
        return list(zip(self.ckpt, self.qat_lr or [None] * len(self.ckpt)))


def qat_config(checkpoint: Path, out: Path, config: QuantReportConfig, **settings) -> QuantizeConfig:
    """quant/qat.py's run of `checkpoint` for this report: its data sizes, and `settings`."""
    return QuantizeConfig(ckpt=checkpoint, out=out, workers=config.workers, val_size=config.val_size,
                          train_size=config.train_size, **settings)


def qat_training(checkpoint: Path, out: Path, qat_lr: float | None, config: QuantReportConfig) -> QuantizeConfig:
    """quant/qat.py's QAT run of `checkpoint` for this report: its epochs and step limit, at `qat_lr` (None:
    quant/qat.py's rate)."""
    return qat_config(checkpoint, out, config, epochs=config.qat_epochs, max_steps=config.max_steps,
                      **({"lr": qat_lr} if qat_lr else {}))


def program_map(program: Path, val_size: int | None) -> float:
    """Validation mAP of a .pte through the ExecuTorch runtime (export/evaluate_artifact.py's code)."""
    from hsvlt.deploy.runtimes import ExecuTorchModel
    from hsvlt.export.evaluate_artifact import evaluate, validation_set

    model = ExecuTorchModel(program)
    _, dataset = validation_set(model, val_size=val_size)
    return evaluate(model, dataset)["at_0.5"]["mAP"]


def runtime_map(checkpoint: Path, program: Path, int8: Path | None, val_size: int | None) -> tuple[float, float]:
    """(validation mAP through the ExecuTorch runtime, .pte size in MB) of the fp32 or int8 program."""
    from hsvlt.export import to_executorch

    to_executorch.export(to_executorch.ExecuTorchConfig(checkpoint, program, int8=int8, parity_images=0))
    return program_map(program, val_size), size_mb(program)


def compare(checkpoint: Path, qat_lr: float | None, config: QuantReportConfig, workdir: Path) -> dict:
    from hsvlt.quant import qat

    source = load_source(checkpoint)
    stem = f"{source.preset}_{checkpoint.parent.name}"
    print(f"{checkpoint}: PTQ")
    qat.run(qat_config(checkpoint, workdir / f"{stem}_ptq.pt2", config, ptq=True))
    print(f"{checkpoint}: QAT, {config.qat_epochs} epochs")
    qat_run = qat_training(checkpoint, workdir / f"{stem}_qat.pt2", qat_lr, config)
    figures = qat.run(qat_run)
    row = {"preset": source.preset, "checkpoint": str(checkpoint), "qat_epochs": config.qat_epochs,
           "qat_lr": qat_run.lr, "qat_best_epoch": figures["best_epoch"]}
    for key, int8 in (("fp32", None), ("ptq", workdir / f"{stem}_ptq.pt2"), ("qat", workdir / f"{stem}_qat.pt2")):
        row[f"{key}_mAP"], row[f"{key}_mb"] = runtime_map(checkpoint, workdir / f"{stem}_{key}.pte", int8,
                                                          config.val_size)
    return row


def study(checkpoint: Path, config: QuantReportConfig, workdir: Path) -> list[tuple[tuple, float, float]]:
    """(float layers, PTQ int8 mAP, fp32 mAP) per STUDY entry, from the converted model (eager)."""
    from hsvlt.quant import qat

    rows = []
    for layers in STUDY:
        figures = qat.run(qat_config(checkpoint, workdir / "study.pt2", config, ptq=True,
                                     float_layers=",".join(layers)))
        rows.append((layers, figures["val_mAP_int8"], figures["val_mAP_fp32"]))
    return rows


def eager_study(checkpoint: Path, qat_lr: float | None, config: QuantReportConfig,
                workdir: Path) -> tuple[list[dict], int]:
    """The fp32 program, PT2E QAT (quant/qat.py) and eager QAT (hsvlt/quant/eager.py), trained alike, each lowered to
    XNNPACK and measured through the ExecuTorch runtime; with the checkpoint's input size."""
    from hsvlt.deploy.manifest import Quantization, checkpoint_manifest, write_manifest
    from hsvlt.export import to_executorch
    from hsvlt.quant import eager, qat

    source = load_source(checkpoint)
    stem = f"{source.preset}_{checkpoint.parent.name}"
    qat_run = qat_training(checkpoint, workdir / f"{stem}_qat.pt2", qat_lr, config)
    print(f"{checkpoint}: PT2E QAT, {config.qat_epochs} epochs")
    qat.run(qat_run)
    rows = []
    for name, key, int8 in (("fp32", "fp32", None), ("PT2E QAT int8 (quant/qat.py)", "pt2e", qat_run.out)):
        path = workdir / f"{stem}_{key}.pte"
        export_config = to_executorch.ExecuTorchConfig(checkpoint, path, int8=int8, parity_images=0)
        delegation = to_executorch.export(export_config)["delegation"]
        rows.append(measure_program(name, path, delegation, config.val_size))
    print(f"{checkpoint}: eager QAT, {config.qat_epochs} epochs")
    model, _ = eager.quantization_aware(qat_run)
    path = workdir / f"{stem}_eager.pte"
    buffer, delegation = to_executorch.lower(eager.program(model, source.img_size))
    write_bytes(path, buffer)
    # torchao's eager int8 configuration quantises activations per token at run time (hsvlt/quant/eager.py).
    write_manifest(path, checkpoint_manifest(source, "executorch-xnnpack", "int8",
                                             quantization=Quantization(method="qat", activations="int8-dynamic")))
    rows.append(measure_program("eager QAT int8 (hsvlt/quant/eager.py)", path, delegation, config.val_size))
    return rows, source.img_size


def measure_program(name: str, path: Path, delegation: dict, val_size: int | None) -> dict:
    from hsvlt.bench.measure import cpu_threads, time_in_turns

    latency = time_in_turns({"program": path}, cpu_threads(), runs=50, warmup=5)["program"]["p50_ms"]
    return {"program": name, "mAP": program_map(path, val_size), "p50_ms": latency, "mb": size_mb(path),
            "subgraphs": delegation["subgraphs"], "ops_outside": delegation["ops_outside"]}


def eager_table(checkpoint: str, rows: list[dict], img_size: int) -> list[str]:
    text = [f"## {checkpoint}", "",
            f"| program | validation mAP | p50 ms, batch 1, {img_size} px | .pte MB | XNNPACK subgraphs | "
            f"operators outside |", "|---|---:|---:|---:|---:|---:|"]
    text += [f"| {r['program']} | {r['mAP']:.2f} | {r['p50_ms']:.2f} | {r['mb']:.2f} | {r['subgraphs']} | "
             f"{r['ops_outside']} |" for r in rows]
    return text + [""]


def write_report(path: Path, command: str, rows: list[dict], studies: dict, config: QuantReportConfig) -> None:
    measured = f"Measured {date.today().isoformat()} by `{command}`."
    if config.eager_study:
        from hsvlt.bench.measure import cpu_threads

        threads = cpu_threads()
        text = ["# Int8: torchao's eager QAT flow against PT2E", "",
                f"{measured} Both flows trained alike from the same checkpoint ({config.qat_epochs} epoch"
                f"{'s' if config.qat_epochs > 1 else ''}"
                f"{f' of at most {config.max_steps} steps' if config.max_steps else ''}, the peak learning rate of "
                f"quant/qat.py's run); every number from the XNNPACK program through the ExecuTorch runtime: mAP "
                f"(percent) on the checkpoint's validation set, p50 latency of 50 runs at batch 1 with "
                f"{threads} thread{'s' if threads > 1 else ''}. Eager QAT: int8 weights per channel and int8 "
                f"dynamic activations on every linear layer (convolutions stay float), exported through the plain "
                f"wrapper; PT2E: static int8 on the rewritten graph (hsvlt/quant/pt2e.py).", ""]
        for checkpoint, (entries, img_size) in studies.items():
            text += eager_table(checkpoint, entries, img_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, "\n".join(text))
        return
    if rows:
        text = ["# Int8 quantisation", "",
                f"{measured} mAP (percent) on each checkpoint's validation set, every model an ExecuTorch XNNPACK "
                f"program run by the ExecuTorch runtime (export/evaluate_artifact.py). PTQ: "
                f"each preset's float layers kept float (hsvlt.quant.pt2e.default_float_layers: "
                f"{', '.join(DEFAULT_FLOAT_LAYERS)} unless the preset measured faster with more), "
                f"calibrated on up to 512 training images; QAT: {config.qat_epochs} epochs of quant/qat.py"
                f"{f' (at most {config.max_steps} steps each)' if config.max_steps else ''} at the peak learning rate "
                f"in the table, best epoch kept. Size: the .pte file.", "",
                "| preset | fp32 mAP | PTQ int8 mAP | QAT int8 mAP | QAT lr | QAT - fp32 | fp32 MB | int8 MB | "
                "int8 / fp32 |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            text.append(f"| {r['preset']} | {r['fp32_mAP']:.2f} | {r['ptq_mAP']:.2f} | {r['qat_mAP']:.2f} | "
                        f"{r['qat_lr']:g} | "
                        f"{r['qat_mAP'] - r['fp32_mAP']:+.2f} | {r['fp32_mb']:.2f} | {r['qat_mb']:.2f} | "
                        f"{100 * r['qat_mb'] / r['fp32_mb']:.0f}% |")
        text += ["", "Target: QAT int8 within 1.0 mAP point of fp32, and better than PTQ.", "",
                 f"![mAP]({path.with_suffix('.png').name})", ""]
    else:
        text = ["# Int8: which layers stay float", "",
                f"{measured} Post-training quantisation (quant/qat.py --ptq, up to 512 calibration images) with "
                f"each group of hsvlt.quant.pt2e.FLOAT_LAYERS kept float, one at a time and all together; mAP "
                f"(percent) of the converted model (PyTorch, quantise / dequantise graph) on the validation set.", ""]
    for checkpoint, entries in studies.items():
        text += [f"## Which layers stay float ({checkpoint}, PTQ, converted model)", "",
                 "| float layers | int8 mAP | fp32 mAP |", "|---|---:|---:|"]
        text += [f"| {', '.join(layers) or '(none: everything int8)'} | {int8:.2f} | {fp32:.2f} |"
                 for layers, int8, fp32 in entries]
        text.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(text))
    if rows:
        plot(rows, path.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(rows))
    for i, (key, name) in enumerate((("fp32", "fp32"), ("ptq", "PTQ int8"), ("qat", "QAT int8"))):
        axis.bar(x + 0.27 * i, [r[f"{key}_mAP"] for r in rows], 0.27, label=name)
    axis.set_xticks(x + 0.27, [r["preset"] for r in rows])
    axis.set(ylabel="validation mAP (%)", title="int8 through ExecuTorch")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)


def parse_args(argv=None) -> QuantReportConfig:
    defaults = QuantReportConfig(ckpt=())
    parser = argparse.ArgumentParser(prog="python reports/quantization.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True, type=Path, help="trained fp32 checkpoints (best.pt)")
    parser.add_argument("--qat-epochs", type=positive_int, default=defaults.qat_epochs, help="QAT epochs")
    parser.add_argument("--max-steps", type=positive_int, default=defaults.max_steps,
                        help="at most this many QAT steps per epoch (quick runs)")
    parser.add_argument("--qat-lr", type=positive_float, nargs="+", default=defaults.qat_lr,
                        help="QAT peak learning rate: one for all checkpoints, "
                                                                "or one per --ckpt (default: quant/qat.py's)")
    parser.add_argument("--float-study", action="store_true", help="only the float-layer study (PTQ)")
    parser.add_argument("--eager-study", action="store_true", help="only the eager-QAT-against-PT2E study")
    parser.add_argument("--train-size", type=positive_int, default=defaults.train_size,
                        help="generated data: training scenes for QAT / calibration")
    parser.add_argument("--val-size", type=positive_int, default=defaults.val_size,
                        help="generated data: validation scenes")
    parser.add_argument("--workers", type=non_negative_int, default=defaults.workers, help="data-loading processes")
    parser.add_argument("--out", type=Path, default=defaults.out,
                        help="report to write (and .png); default docs/QUANT.md, with "
                             "--float-study docs/QUANT_FLOAT_LAYERS.md, with --eager-study "
                             "docs/QUANT_EAGER.md")
    parser.add_argument("--workdir", type=Path, default=defaults.workdir,
                        help="keep the artifacts here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.qat_lr and len(args.qat_lr) not in (1, len(args.ckpt)):
        parser.error(f"--qat-lr: give one rate or one per checkpoint ({len(args.ckpt)})")
    if args.float_study and args.eager_study:
        parser.error("--float-study and --eager-study are separate runs")
    return QuantReportConfig(**vars(args)).resolved()


def main(argv=None) -> None:
    config = parse_args(argv)
    command = "python reports/quantization.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows, studies = [], {}
    with tempfile.TemporaryDirectory(prefix="hsvlt_quant_") as temporary:
        workdir = config.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        for checkpoint, qat_lr in config.runs():
            if config.float_study:
                studies[str(checkpoint)] = study(checkpoint, config, workdir)
            elif config.eager_study:
                studies[str(checkpoint)] = eager_study(checkpoint, qat_lr, config, workdir)
            else:
                rows.append(compare(checkpoint, qat_lr, config, workdir))
    write_report(config.out, command.strip(), rows, studies, config)
    print(config.out.read_text())


if __name__ == "__main__":
    run_command(main)
