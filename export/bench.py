"""Benchmark the deployment targets of each preset in one run: one table, written to docs/EXPORT.md.

    python export/bench.py                                    # hsvlt_nano and hsvlt_lite0 at 224 px
    python export/bench.py --presets hsvlt_lite0 --runs 200
    python export/bench.py --ablation                         # also: each export-time rewrite switched off

Per preset: eager PyTorch fp32 (the trained model as is), ExecuTorch XNNPACK fp32, ExecuTorch XNNPACK int8
(PT2E static int8, calibrated) and ONNX Runtime fp32: p50 / p90 / best latency at batch 1, file size, peak memory
(growth of the process's peak resident memory from loading the model to the end of the timed runs) and
achieved GFLOP/s (the model's multiply-add FLOPs / p50 latency) against this machine's GEMM ceiling (the best
fp32 matrix-product rate of PyTorch or XNNPACK with the same threads, measured in the same run). Every runtime
runs in its own process with the same number of threads, on the same images; all are loaded at once and timed
in turns (rounds of a few calls each, the order rotated every round), so that on a shared machine whose speed
drifts they all see the same minutes. Below the table, export/op_profile.py's breakdown of each fp32 .pte by
operator kind.

Latency and size do not depend on the weights' values, so the models are built from the presets with random
weights and 80 COCO labels (--labels); export/evaluate_artifact.py measures accuracy.
The targets this project sets itself (2-core CPU, 224 px): hsvlt_lite0 .pte fp32 <= 20 ms; hsvlt_nano .pte <=
0.5 x eager; ExecuTorch no slower than ONNX Runtime; int8 .pte at most half the fp32 .pte's latency and 30% of
its file. Latency targets are judged at p50 and on the best call (see `targets`).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export import op_profile
from export.common import SETTLE_S, SourceCheckpoint, cpu_threads, load_source, manifest_for, size_mb
from hsvlt.checkpoint import save_checkpoint
from hsvlt.cli import image_size, non_negative_int, positive_int, program, run_command
from hsvlt.machine import count_gflops, describe
from hsvlt.models import PRESETS, create_model
from hsvlt.outputs import save_figure, write_bytes, write_text

DEFAULT_PRESETS = ("hsvlt_nano", "hsvlt_lite0")
IMAGES = 10  # distinct random images each runtime cycles through
ROUNDS = 10  # every runtime is timed in this many turns of runs / ROUNDS calls
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


def int8_artifact(source: SourceCheckpoint, out: Path, calibration_images: int = 32) -> Path:
    """PT2E static int8 (quant/pt2e.py defaults) calibrated on generated scenes: what quant/qat.py --ptq makes,
    without the accuracy evaluation."""
    from export.common import validation_images
    from quant.pt2e import capture, convert, prepare, save_artifact, to_program

    prepared = prepare(capture(source.model, qat=False), qat=False)
    images = torch.from_numpy(validation_images(source, calibration_images))
    with torch.no_grad():
        for start in range(0, len(images), 8):
            prepared(images[start:start + 8])
    manifest = manifest_for(source, "torch.export", "int8", None)
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


def serve(path: Path, threads: int, warmup: int) -> None:
    """The worker side of `RuntimeProcess`: load `path` with its runtime (hsvlt.deploy.runtimes), warm it up, then for
    each number read from stdin time that many calls at batch 1 and print their seconds as JSON; on "done" print the
    peak memory. Peak memory: the peak resident memory from loading on (the peak is reset first) less the
    resident memory before loading, the runtime library already imported."""
    from hsvlt.deploy.runtimes import open_model

    torch.set_flush_denormal(True)
    if path.suffix.lower() == ".pte":  # the runtimes' own imports are not the model's memory
        from executorch.runtime import Runtime

        Runtime.get()
    elif path.suffix.lower() == ".onnx":
        import onnxruntime  # noqa: F401
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = memory_mb("VmRSS")
    model = open_model(path, threads)
    images = np.random.default_rng(0).random((IMAGES, 1, 3, model.input_size, model.input_size), dtype=np.float32)
    for i in range(warmup):
        model.run(images[i % IMAGES])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "done":
            break
        times = []
        for i in range(int(line)):
            started = time.perf_counter()
            model.run(images[i % IMAGES])
            times.append(time.perf_counter() - started)
        print(json.dumps({"times": times}), flush=True)
    print(json.dumps({"peak_mb": memory_mb("VmHWM") - before}), flush=True)


class RuntimeProcess:
    """One exported file loaded in its own process (`serve`), timed on request."""

    def __init__(self, path: Path, threads: int, warmup: int):
        self.path, self.log = path, tempfile.TemporaryFile(mode="w+")
        command = [sys.executable, __file__, "--serve", str(path), "--threads", str(threads), "--warmup", str(warmup)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True)
        self.reply()

    def reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.log.seek(0)
        raise RuntimeError(f"measuring {self.path.name} failed: {self.log.read().strip().splitlines()[-1:]}")

    def time(self, runs: int) -> list[float]:
        self.process.stdin.write(f"{runs}\n")
        self.process.stdin.flush()
        return self.reply()["times"]

    def close(self) -> float:
        """Stop the process; its peak memory in MB."""
        self.process.stdin.write("done\n")
        self.process.stdin.flush()
        peak = self.reply()["peak_mb"]
        self.process.wait()
        self.log.close()
        return peak


def measure(paths: dict[str, Path], threads: int, runs: int, warmup: int) -> dict[str, dict]:
    """Time every file at batch 1, each in its own process, all loaded at once and timed in turns: ROUNDS
    rounds of runs / ROUNDS calls each, the order rotated every round. On a shared machine whose speed drifts
    from one minute to the next, every runtime then sees the same minutes, and the ratios between them hold."""
    runtimes = {key: RuntimeProcess(path, threads, warmup) for key, path in paths.items()}
    times = {key: [] for key in runtimes}
    keys = list(runtimes)
    for turn in tqdm(range(ROUNDS), desc="timing in turns", leave=False):
        for key in keys[turn % len(keys):] + keys[:turn % len(keys)]:
            time.sleep(SETTLE_S)
            times[key] += runtimes[key].time(max(1, runs // ROUNDS))
    return {key: {"p50_ms": 1e3 * float(np.percentile(times[key], 50)),
                  "p90_ms": 1e3 * float(np.percentile(times[key], 90)), "best_ms": 1e3 * min(times[key]),
                  "peak_mb": runtime.close()}
            for key, runtime in runtimes.items()}


# ---- the tables ------------------------------------------------------------------------------------------


def best_rate(run, flops: float, repeats: int) -> float:
    """GFLOP/s of the fastest of `repeats` calls of `run` (after 5 untimed ones)."""
    best = float("inf")
    for i in range(repeats + 5):
        started = time.perf_counter()
        run()
        if i >= 5:
            best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


def gemm_ceiling(threads: int, repeats: int = 20) -> dict[str, float]:
    """What this machine's cores reach on the friendliest workload, fp32 with `threads`, by two libraries: a
    2048 x 2048 matrix product in PyTorch (oneDNN / MKL), and XNNPACK's fully connected operator through the
    ExecuTorch runtime on four layers shaped like hsvlt_nano's stage-3 pointwise MLP at 224 px (196 x 192 -> 768
    -> 192, twice). A nominal peak (cores x FLOP/cycle x clock) cannot be read reliably on a virtual machine whose
    clock boosts."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer, _unsafe_reset_threadpool

    from export.to_executorch import lower

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    rates = {"torch.mm": best_rate(lambda: torch.mm(a, b), 2 * 2048**3, repeats)}
    tokens, width = 196, 192
    layers = torch.nn.Sequential(*[torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)] * 2).eval()
    sample = torch.randn(1, tokens, width)
    buffer, _ = lower(torch.export.export(layers, (sample,)))
    _unsafe_reset_threadpool(threads)
    program = _load_for_executorch_from_buffer(buffer)
    time.sleep(SETTLE_S)
    rates["XNNPACK"] = best_rate(lambda: program.forward([sample]), 4 * 2 * tokens * width * 4 * width, repeats)
    return rates


def bench_preset(preset: str, args: argparse.Namespace, workdir: Path) -> dict:
    checkpoint = random_checkpoint(preset, args.img_size, args.labels, workdir / f"{preset}.pt")
    source = load_source(checkpoint)
    gflops = count_gflops(source.model, source.img_size)
    artifacts = build_artifacts(checkpoint, workdir, {key for key, _, _ in ROWS})
    results = measure(artifacts, args.threads, args.runs, args.warmup)
    for key, result in results.items():
        result["size_mb"] = size_mb(artifacts[key])
        result["gflops_per_s"] = gflops / (result["p50_ms"] / 1e3)
        print(f"  {preset} {key}: p50 {result['p50_ms']:.1f} ms")
    profile = op_profile.profile(artifacts["pte"], args.threads)
    return {"preset": preset, "img_size": args.img_size, "gflops": gflops, "rows": results, "profile": profile}


def table(bench: dict, peak: float) -> str:
    lines = [f"**{bench['preset']}** at {bench['img_size']} px, {bench['gflops']:.2f} GFLOPs per image",
             "", "| runtime | p50 ms | p90 ms | best ms | file MB | peak memory MB | GFLOP/s | % of GEMM ceiling |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, name, _ in ROWS:
        r = bench["rows"][key]
        lines.append(f"| {name} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['best_ms']:.1f} | {r['size_mb']:.2f} | "
                     f"{r['peak_mb']:.0f} | {r['gflops_per_s']:.1f} | {100 * r['gflops_per_s'] / peak:.0f}% |")
    return "\n".join(lines)


def targets(bench: dict) -> list[str]:
    """The stated targets that apply to this preset, each with its measured value and PASS / MISS. A latency
    target must hold at p50 and for the best call, what the machine gives unloaded: on a loaded host eager
    PyTorch slows far more than the .pte (its threads wait for each other at every operator, XNNPACK's steal
    each other's work), so a ratio of medians alone would pass or fail with the host's load."""
    rows, preset, checks = bench["rows"], bench["preset"], []

    def check(name: str, value: str, passed: bool) -> None:
        checks.append(f"- {preset}: {name}: {value} -> {'PASS' if passed else 'MISS'}")

    def latency(key: str) -> dict[str, float]:
        return {"p50": rows[key]["p50_ms"], "best": rows[key]["best_ms"]}

    if preset == "hsvlt_lite0":
        ms = latency("pte")
        check(".pte fp32 <= 20 ms", f"{ms['p50']:.1f} ms at p50, {ms['best']:.1f} best", max(ms.values()) <= 20)
    if preset == "hsvlt_nano":
        for key, name in (("pte", "fp32"), ("pte_int8", "int8")):
            ratio = {stat: ms / latency("eager")[stat] for stat, ms in latency(key).items()}
            check(f".pte {name} <= 0.5 x eager", f"{ratio['p50']:.2f} x at p50, {ratio['best']:.2f} x best",
                  max(ratio.values()) <= 0.5)
    pte, onnx = latency("pte"), latency("onnx")
    check("ExecuTorch no slower than ONNX Runtime",
          f"{pte['p50']:.1f} vs {onnx['p50']:.1f} ms at p50, {pte['best']:.1f} vs {onnx['best']:.1f} best",
          all(pte[stat] <= onnx[stat] for stat in pte))
    speed = {stat: ms / pte[stat] for stat, ms in latency("pte_int8").items()}
    check("int8 .pte <= 0.5 x fp32 .pte", f"{speed['p50']:.2f} x at p50, {speed['best']:.2f} x best",
          max(speed.values()) <= 0.5)
    share = rows["pte_int8"]["size_mb"] / rows["pte"]["size_mb"]
    check("int8 .pte <= 30% of fp32", f"{100 * share:.0f}%", share <= 0.30)
    return checks


def ablation(preset: str, args: argparse.Namespace, workdir: Path) -> str:
    """Each export-time rewrite switched off alone: operators left outside XNNPACK, subgraphs, p50."""
    from dataclasses import fields, replace

    from export.to_executorch import lower
    from hsvlt.deploy.manifest import write_manifest
    from hsvlt.deploy.rewrites import Rewrites
    from hsvlt.deploy.wrapper import for_export, trace

    checkpoint = random_checkpoint(preset, args.img_size, args.labels, workdir / f"{preset}_ablation.pt")
    source = load_source(checkpoint)
    variants = [("all rewrites", Rewrites())]
    variants += [(f"without {f.name}", replace(Rewrites(), **{f.name: False})) for f in fields(Rewrites)]
    variants.append(("no rewrites (plain wrapper)", Rewrites(**{f.name: False for f in fields(Rewrites)})))
    lines = [f"**{preset}** at {args.img_size} px: each rewrite switched off alone (ExecuTorch XNNPACK fp32, batch 1)",
             "", "| variant | delegated subgraphs | operators outside | p50 ms |", "|---|---:|---:|---:|"]
    paths, summaries = {}, {}
    for name, rewrites in variants:
        program = trace(for_export(source.model, rewrites=rewrites), source.img_size)
        buffer, summaries[name] = lower(program)
        paths[name] = workdir / f"{preset}_{name.replace(' ', '_').replace('(', '').replace(')', '')}.pte"
        write_bytes(paths[name], buffer)
        write_manifest(paths[name], manifest_for(source, "executorch-xnnpack", "fp32", None))
    latencies = measure(paths, args.threads, args.runs, args.warmup)
    for name, summary in summaries.items():
        latency = latencies[name]["p50_ms"]
        lines.append(f"| {name} | {summary['subgraphs']} | {summary['ops_outside']} | {latency:.1f} |")
        print(f"  {preset} {name}: {summary['ops_outside']} outside, p50 {latency:.1f} ms")
    return "\n".join(lines)


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
    save_figure(figure, path, dpi=100)
    plt.close(figure)


def write_report(path: Path, command: str, benches: list[dict], checks: list[str], ablations: list[str],
                 rates: dict[str, float], args: argparse.Namespace) -> None:
    peak = max(rates.values())
    machine = describe("executorch", "onnxruntime")
    text = [
        "# Export benchmark", "",
        f"Measured {date.today().isoformat()} by `{command}` on {machine}, {args.threads} threads per runtime, "
        f"{args.runs} timed runs after {args.warmup} warm-up runs, batch 1, each runtime in its own process, all "
        f"timed in turns ({ROUNDS} rounds, order rotated). Models: the presets with random "
        f"weights and {args.labels} labels (latency and size do not depend on the weights). Peak memory: growth "
        f"of the process's peak resident memory from loading the model to the end of the runs. GFLOP/s: the "
        f"model's FLOPs (torch's counter) / p50, against this machine's GEMM ceiling: {peak:.0f} GFLOP/s, the best "
        f"fp32 matrix-product rate measured in this run with {args.threads} threads (torch.mm of 2048 x 2048: "
        f"{rates['torch.mm']:.0f}; XNNPACK fully connected, 196 x 192 -> 768 -> 192: {rates['XNNPACK']:.0f}).", ""]
    for bench in benches:
        text += [table(bench, peak), ""]
    text += ["Measured against the project's stated targets:", "", *checks, ""]
    text += ["## Where the fp32 .pte spends its time (export/op_profile.py)", ""]
    for bench in benches:
        text += [f"**{bench['preset']}**", "", op_profile.format_profile(bench["profile"]), ""]
    if ablations:
        text += ["## Export-time rewrites (hsvlt/deploy/rewrites.py)", "", *[block + "\n" for block in ablations]]
    text += [f"![latency]({path.with_suffix('.png').name})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(text))
    plot(benches, path.with_suffix(".png"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program("python export/bench.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), choices=sorted(PRESETS),
                        help="presets to benchmark")
    parser.add_argument("--img-size", type=image_size, default=224, help="input size")
    parser.add_argument("--labels", default="coco", help="shipped label set the models are built with")
    parser.add_argument("--threads", type=positive_int, default=cpu_threads(), help="CPU threads of every runtime")
    parser.add_argument("--runs", type=positive_int, default=100, help="timed runs per runtime")
    parser.add_argument("--warmup", type=non_negative_int, default=10, help="untimed runs first")
    parser.add_argument("--ablation", action="store_true", help="also measure each rewrite switched off")
    parser.add_argument("--out", type=Path, default=Path("docs/EXPORT.md"), help="report to write (and .png)")
    parser.add_argument("--workdir", type=Path, help="keep the exported files here (default: a temporary folder)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # internal: one runtime's process (serve)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.threads, args.warmup)
        return
    command = "python export/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="hsvlt_bench_") as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        benches, checks, ablations = [], [], []
        rates = gemm_ceiling(args.threads)
        peak = max(rates.values())
        print(f"GEMM ceiling with {args.threads} threads: {peak:.0f} GFLOP/s ({rates})")
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
    write_report(args.out, command.strip(), benches, checks, ablations, rates, args)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    run_command(main)
