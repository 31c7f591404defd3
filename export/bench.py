"""Benchmark the deployment targets of each preset in one run: one table, written to docs/EXPORT.md.

    python export/bench.py                                    # hsvlt_nano and hsvlt_lite0 at 224 px
    python export/bench.py --presets hsvlt_lite0 --runs 200
    python export/bench.py --ablation                         # also: each export-time rewrite switched off

Per preset: eager PyTorch fp32 (the trained model as is), ExecuTorch XNNPACK fp32, ExecuTorch XNNPACK int8
(PT2E static int8, calibrated) and ONNX Runtime fp32: p50 / p90 latency at batch 1, file size, peak memory
(growth of the process's peak resident memory from loading the model to the end of the timed runs) and
achieved GFLOP/s (the model's multiply-add FLOPs / p50 latency) against this machine's GEMM ceiling (the best
rate of a 2048 x 2048 fp32 matrix product in PyTorch with the same threads, measured in the same run). Every
runtime is measured in its own process with the same number of threads, on the same images. Below the table,
export/op_profile.py's breakdown of each fp32 .pte by operator kind.

Latency and size do not depend on the weights' values, so the models are built from the presets with random
weights and 80 COCO labels (--labels); export/evaluate_artifact.py measures accuracy.
Targets (issue 5, 2-core CPU, 224 px): hsvlt_lite0 .pte fp32 <= 20 ms; hsvlt_nano .pte <= 0.5 x eager;
ExecuTorch no slower than ONNX Runtime; int8 .pte <= 30% of the fp32 file.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from export import op_profile
from export.common import Source, cpu_threads, load_source, size_mb
from hsvlt.checkpoint import save_checkpoint
from hsvlt.cli import exit_on_bad_input
from hsvlt.models import PRESETS, create_model

DEFAULT_PRESETS = ("hsvlt_nano", "hsvlt_lite0")
ROWS = (("eager", "PyTorch eager fp32", ".pt"), ("pte", "ExecuTorch XNNPACK fp32", ".pte"),
        ("pte_int8", "ExecuTorch XNNPACK int8", ".pte"), ("onnx", "ONNX Runtime fp32", ".onnx"))


# ---- models ----------------------------------------------------------------------------------------------


def random_checkpoint(preset: str, img_size: int, labels: str, path: Path, seed: int = 0) -> Path:
    """A checkpoint of `preset` with random weights and the shipped label set `labels`."""
    from hsvlt.labels import load_label_set

    label_set = load_label_set(labels)
    torch.manual_seed(seed)
    model = create_model(preset, torch.from_numpy(label_set.embeddings), img_size=img_size)
    save_checkpoint({"config": model.config.to_dict(), "labels": list(label_set.names),
                     "model": model.state_dict(), "thresholds": [0.5] * len(label_set.names),
                     "data": {"name": "shapes", "seed": seed, "val_size": 64}}, path)
    return path


def model_gflops(source: Source) -> float:
    """Multiply-add FLOPs (2 per MAC) of one image through the trained model (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.rand(1, 3, source.img_size, source.img_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        source.model(images)
    return counter.get_total_flops() / 1e9


def int8_artifact(source: Source, out: Path, calibration_images: int = 32) -> Path:
    """PT2E static int8 (quant/pt2e.py defaults) calibrated on generated scenes: what quant/qat.py --ptq makes,
    without the accuracy evaluation."""
    from export.common import validation_images
    from hsvlt.deploy import build_manifest
    from quant.pt2e import capture, convert, prepare, save_artifact, to_program

    prepared = prepare(capture(source.model, qat=False), qat=False)
    images = torch.from_numpy(validation_images(source, calibration_images))
    with torch.no_grad():
        for start in range(0, len(images), 8):
            prepared(images[start:start + 8])
    manifest = build_manifest(source.model, source.labels, source.thresholds, source.sha256, "torch.export", "int8")
    manifest["attention_stage"] = None
    save_artifact(to_program(convert(prepared), source.img_size), out, manifest)
    return out


def build_artifacts(checkpoint: Path, workdir: Path, rows: set[str]) -> dict[str, Path]:
    """Export the checkpoint to each benchmarked format with the exporters' own code."""
    from export import to_executorch, to_onnx

    source = load_source(checkpoint)
    artifacts = {"eager": checkpoint}
    if "pte" in rows:
        artifacts["pte"] = workdir / f"{checkpoint.stem}_fp32.pte"
        to_executorch.export(source, artifacts["pte"], parity_images=4)
    if "pte_int8" in rows:
        program = int8_artifact(source, workdir / f"{checkpoint.stem}_int8.pt2")
        artifacts["pte_int8"] = workdir / f"{checkpoint.stem}_int8.pte"
        to_executorch.export(source, artifacts["pte_int8"], int8=program, parity_images=4)
    if "onnx" in rows:
        artifacts["onnx"] = workdir / f"{checkpoint.stem}_fp32.onnx"
        to_onnx.export(source, artifacts["onnx"], parity_images=4)
    return artifacts


# ---- measuring (one process per runtime) -----------------------------------------------------------------


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from /proc (Linux)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def measure(path: Path, threads: int, runs: int, warmup: int) -> dict:
    """Load `path` with its runtime (edge_demo.runtimes) and time `runs` calls at batch 1. Peak memory: the
    peak resident memory from loading on (the peak is reset first) less the resident memory before loading,
    the runtime library already imported."""
    from edge_demo.runtimes import load_model

    torch.set_flush_denormal(True)
    if path.suffix.lower() == ".pte":  # the runtimes' own imports are not the model's memory
        from executorch.runtime import Runtime

        Runtime.get()
    elif path.suffix.lower() == ".onnx":
        import onnxruntime  # noqa: F401
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = memory_mb("VmRSS")
    model = load_model(path, threads)
    images = np.random.default_rng(0).random((warmup + runs, 1, 3, model.input_size, model.input_size),
                                           dtype=np.float32)
    for image in images[:warmup]:
        model.run(image)
    times = []
    for image in images[warmup:]:
        started = time.perf_counter()
        model.run(image)
        times.append(time.perf_counter() - started)
    return {"p50_ms": 1e3 * float(np.percentile(times, 50)), "p90_ms": 1e3 * float(np.percentile(times, 90)),
            "peak_mb": memory_mb("VmHWM") - before}


def measure_in_subprocess(path: Path, threads: int, runs: int, warmup: int) -> dict:
    command = [sys.executable, __file__, "--measure", str(path), "--threads", str(threads), "--runs", str(runs),
               "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"measuring {path.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1])


# ---- the tables ------------------------------------------------------------------------------------------


def gemm_ceiling(threads: int, size: int = 2048, repeats: int = 20) -> float:
    """The best fp32 GFLOP/s of a size x size matrix product in PyTorch (oneDNN / MKL) with `threads`: what this
    machine's cores reach on the friendliest workload. A nominal peak (cores x FLOP/cycle x clock) cannot be read
    reliably on a virtual machine whose clock boosts."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 5):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def bench_preset(preset: str, args: argparse.Namespace, workdir: Path) -> dict:
    checkpoint = random_checkpoint(preset, args.img_size, args.labels, workdir / f"{preset}.pt")
    source = load_source(checkpoint)
    gflops = model_gflops(source)
    artifacts = build_artifacts(checkpoint, workdir, {key for key, _, _ in ROWS})
    results = {}
    for key, _, _ in ROWS:
        result = measure_in_subprocess(artifacts[key], args.threads, args.runs, args.warmup)
        result["size_mb"] = size_mb(artifacts[key])
        result["gflops_per_s"] = gflops / (result["p50_ms"] / 1e3)
        results[key] = result
        print(f"  {preset} {key}: p50 {result['p50_ms']:.1f} ms")
    profile = op_profile.profile(artifacts["pte"], args.threads)
    return {"preset": preset, "img_size": args.img_size, "gflops": gflops, "rows": results, "profile": profile}


def table(bench: dict, peak: float) -> str:
    lines = [f"**{bench['preset']}** at {bench['img_size']} px, {bench['gflops']:.2f} GFLOPs per image",
             "", "| runtime | p50 ms | p90 ms | file MB | peak memory MB | GFLOP/s | % of GEMM ceiling |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, name, _ in ROWS:
        r = bench["rows"][key]
        lines.append(f"| {name} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['size_mb']:.2f} | {r['peak_mb']:.0f} | "
                     f"{r['gflops_per_s']:.1f} | {100 * r['gflops_per_s'] / peak:.0f}% |")
    return "\n".join(lines)


def targets(bench: dict) -> list[str]:
    """The issue's targets that apply to this preset, each with its measured value and PASS / MISS."""
    rows, preset, checks = bench["rows"], bench["preset"], []

    def check(name: str, value: str, passed: bool) -> None:
        checks.append(f"- {preset}: {name}: {value} -> {'PASS' if passed else 'MISS'}")

    if preset == "hsvlt_lite0":
        check(".pte fp32 <= 20 ms", f"{rows['pte']['p50_ms']:.1f} ms", rows["pte"]["p50_ms"] <= 20)
    if preset == "hsvlt_nano":
        for key, name in (("pte", "fp32"), ("pte_int8", "int8")):
            ratio = rows[key]["p50_ms"] / rows["eager"]["p50_ms"]
            check(f".pte {name} <= 0.5 x eager", f"{ratio:.2f} x", ratio <= 0.5)
    pte, onnx = rows["pte"]["p50_ms"], rows["onnx"]["p50_ms"]
    check("ExecuTorch no slower than ONNX Runtime", f"{pte:.1f} vs {onnx:.1f} ms", pte <= onnx)
    share = rows["pte_int8"]["size_mb"] / rows["pte"]["size_mb"]
    check("int8 .pte <= 30% of fp32", f"{100 * share:.0f}%", share <= 0.30)
    return checks


def ablation(preset: str, args: argparse.Namespace, workdir: Path) -> str:
    """Each export-time rewrite switched off alone: operators left outside XNNPACK, subgraphs, p50."""
    from dataclasses import fields, replace

    from export.common import export_program
    from export.to_executorch import lower
    from hsvlt.deploy import for_export, write_manifest
    from hsvlt.rewrites import Rewrites

    checkpoint = random_checkpoint(preset, args.img_size, args.labels, workdir / f"{preset}_ablation.pt")
    source = load_source(checkpoint)
    variants = [("all rewrites", Rewrites())]
    variants += [(f"without {f.name}", replace(Rewrites(), **{f.name: False})) for f in fields(Rewrites)]
    variants.append(("no rewrites (plain wrapper)", Rewrites(**{f.name: False for f in fields(Rewrites)})))
    lines = [f"**{preset}** at {args.img_size} px: each rewrite switched off alone (ExecuTorch XNNPACK fp32, batch 1)",
             "", "| variant | delegated subgraphs | operators outside | p50 ms |", "|---|---:|---:|---:|"]
    for name, rewrites in variants:
        program = export_program(for_export(source.model, rewrites=rewrites), source.img_size)
        buffer, summary = lower(program)
        path = workdir / f"{preset}_{name.replace(' ', '_').replace('(', '').replace(')', '')}.pte"
        path.write_bytes(buffer)
        write_manifest(path, {"labels": source.labels, "thresholds": source.thresholds, "preset": preset,
                              "input": {"shape": ["N", 3, args.img_size, args.img_size]}})
        latency = measure_in_subprocess(path, args.threads, args.runs, args.warmup)["p50_ms"]
        lines.append(f"| {name} | {summary['subgraphs']} | {summary['ops_outside']} | {latency:.1f} |")
        print(f"  {preset} {name}: {summary['ops_outside']} outside, p50 {latency:.1f} ms")
    return "\n".join(lines)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    import executorch.version
    import onnxruntime

    return (f"{model}, {cpu_threads()} cores available, {platform.system()} {platform.release()}; torch "
            f"{torch.__version__}, executorch {executorch.version.__version__}, onnxruntime {onnxruntime.__version__}")


def plot(benches: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(ROWS)
    for i, (key, name, _) in enumerate(ROWS):
        values = [b["rows"][key]["p50_ms"] for b in benches]
        axis.bar(np.arange(len(benches)) + i * width, values, width, label=name)
    axis.set_xticks(np.arange(len(benches)) + width * (len(ROWS) - 1) / 2, [b["preset"] for b in benches])
    axis.set(ylabel="p50 latency, batch 1 (ms)", title="HSVLT on this CPU")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(path: Path, command: str, benches: list[dict], checks: list[str], ablations: list[str],
                 peak: float, args: argparse.Namespace) -> None:
    text = [
        "# Export benchmark", "",
        f"Measured {date.today().isoformat()} by `{command}` on {machine()}, {args.threads} threads per runtime, "
        f"{args.runs} timed runs after {args.warmup} warm-up runs, batch 1. Models: the presets with random "
        f"weights and {args.labels} labels (latency and size do not depend on the weights). Peak memory: growth "
        f"of the process's peak resident memory from loading the model to the end of the runs. GFLOP/s: the "
        f"model's FLOPs (torch's counter) / p50, against this machine's GEMM ceiling: {peak:.0f} GFLOP/s, the best "
        f"rate of a 2048 x 2048 fp32 matrix product in PyTorch with {args.threads} threads, measured in this run "
        f"(DESIGN.md's nominal 157 GFLOP/s, 2 cores x 32 FLOP/cycle x 2.45 GHz base clock, is exceeded by boosting "
        f"cores).", ""]
    for bench in benches:
        text += [table(bench, peak), ""]
    text += ["Targets (issue 5):", "", *checks, ""]
    text += ["## Where the fp32 .pte spends its time (export/op_profile.py)", ""]
    for bench in benches:
        text += [f"**{bench['preset']}**", "", op_profile.format_profile(bench["profile"]), ""]
    if ablations:
        text += ["## Export-time rewrites (hsvlt/rewrites.py)", "", *[block + "\n" for block in ablations]]
    text += [f"![latency]({path.with_suffix('.png').name})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))
    plot(benches, path.with_suffix(".png"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python export/bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), choices=sorted(PRESETS),
                        help="presets to benchmark")
    parser.add_argument("--img-size", type=int, default=224, help="input size")
    parser.add_argument("--labels", default="coco", help="shipped label set the models are built with")
    parser.add_argument("--threads", type=int, default=cpu_threads(), help="CPU threads of every runtime")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per runtime")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--ablation", action="store_true", help="also measure each rewrite switched off")
    parser.add_argument("--out", type=Path, default=Path("docs/EXPORT.md"), help="report to write (and .png)")
    parser.add_argument("--workdir", type=Path, help="keep the exported files here (default: a temporary folder)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: time one file, print JSON
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.threads, args.runs, args.warmup)))
        return
    command = "python export/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="hsvlt_bench_") as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        benches, checks, ablations = [], [], []
        peak = gemm_ceiling(args.threads)
        print(f"GEMM ceiling with {args.threads} threads: {peak:.0f} GFLOP/s")
        for preset in args.presets:
            print(f"{preset}: exporting and measuring")
            bench = bench_preset(preset, args, workdir)
            benches.append(bench)
            checks += targets(bench)
            print(table(bench, peak))
            print(op_profile.format_profile(bench["profile"]))
            if args.ablation:
                ablations.append(ablation(preset, args, workdir))
                print(ablations[-1])
    print("\n".join(checks))
    write_report(args.out, command.strip(), benches, checks, ablations, peak, args)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    exit_on_bad_input(main)
