"""How the reports measure: latency of PyTorch modules and of exported files (each runtime in its own process,
timed in turns), this machine's GEMM ceiling, and bootstrap intervals. Every figure the generated pages print
comes through here, so two pages that time the same thing time it the same way.

A figure is true for the machine that produced it; compare runtimes as ratios within one run.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hsvlt.machine import usable_cores
from hsvlt.outputs import write_text
from hsvlt.toolchain import quiet_toolchain_calls

IMAGES = 10  # distinct random images each runtime cycles through
ROUNDS = 10  # every runtime is timed in this many turns of runs / ROUNDS calls

# Pause before timing anything: threads busy a moment ago (PyTorch's libgomp after an export, ONNX Runtime's pool)
# spin on a core for a while, and a runtime timed meanwhile gets one core instead of two.
SETTLE_S = 0.1


cpu_threads = usable_cores  # the threads a measurement gives each runtime: every core this process may use


# ---- PyTorch modules, in this process --------------------------------------------------------------------


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def batch1_latency_ms(models: list[torch.nn.Module], sizes: list[int], runs: int, warmup: int = 5) -> list[float]:
    """Median ms per call of each model at batch 1 on random images of its size, the models called in turns."""
    inputs = [torch.rand(1, 3, size, size) for size in sizes]
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for step in range(warmup + runs):
            for model, images, spent in zip(models, inputs, times):
                started = time.perf_counter()
                model(images)
                if step >= warmup:
                    spent.append(1000 * (time.perf_counter() - started))
    return [statistics.median(spent) for spent in times]


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
    with quiet_toolchain_calls():
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
        command = [sys.executable, "-m", "hsvlt.bench.measure", "--serve", str(path), "--threads", str(threads),
                   "--warmup", str(warmup)]
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


def time_in_turns(paths: dict[str, Path], threads: int, runs: int, warmup: int) -> dict[str, dict]:
    """Time every file at batch 1, each in its own process, all loaded at once and timed in turns: ROUNDS
    rounds of runs / ROUNDS calls each, the order rotated every round. On a shared machine whose speed drifts
    from one minute to the next, every runtime then sees the same minutes, and the ratios between them hold."""
    if not paths:  # every export failed (or none was asked for): nothing to time
        return {}
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


def best_rate(run, flops: float, repeats: int) -> float:
    """GFLOP/s of the fastest of `repeats` calls of `run` (after 5 untimed ones)."""
    best = float("inf")
    for i in range(repeats + 5):
        started = time.perf_counter()
        run()
        if i >= 5:
            best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


@quiet_toolchain_calls()
def gemm_ceiling(threads: int, repeats: int = 20) -> dict[str, float]:
    """What this machine's cores reach on the friendliest workload, fp32 with `threads`, by two libraries: a
    2048 x 2048 matrix product in PyTorch (oneDNN / MKL), and XNNPACK's fully connected operator through the
    ExecuTorch runtime on four layers shaped like hsvlt_nano's stage-3 pointwise MLP at 224 px (196 x 192 -> 768
    -> 192, twice). A nominal peak (cores x FLOP/cycle x clock) cannot be read reliably on a virtual machine whose
    clock boosts."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer, _unsafe_reset_threadpool

    from hsvlt.export.to_executorch import lower

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


# ---- generated pages -------------------------------------------------------------------------------------


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def marked_section(name: str, text: str) -> str:
    """`text` between the markers of section `name`: a part of a page that write_section can replace later."""
    start, end = section_markers(name)
    return f"{start}\n{text.strip()}\n{end}"


def write_section(path: Path, name: str, text: str, new_page: str = "") -> None:
    """Put `text` into the page at `path` (`new_page` where there is none yet) between the markers of section
    `name`, in place of that section's earlier text or, the first time, after the rest, keeping the rest of the
    page as it was: one report can own part of a page another report writes."""
    start, end = section_markers(name)
    page = path.read_text() if path.is_file() else new_page
    block = marked_section(name, text)
    if start in page and end in page:
        before, rest = page.split(start, 1)
        page = before + block + rest.split(end, 1)[1]
    else:
        page = page.rstrip("\n") + ("\n\n" if page else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)


def kept_sections(path: Path) -> str:
    """Every marked section of the page at `path`, markers included, for a report that rewrites the page whole."""
    page = path.read_text() if path.is_file() else ""
    sections = []
    for opening in re.finditer(r"<!-- ([\w.-]+) -->", page):
        end = section_markers(opening.group(1))[1]
        stop = page.find(end, opening.end())
        if stop >= 0:
            sections.append(page[opening.start():stop + len(end)])
    return "".join(f"\n{section}\n" for section in sections)


# ---- statistics ------------------------------------------------------------------------------------------


def bootstrap_samples(count: int, rounds: int, seed: int) -> np.ndarray:
    """`rounds` resamples (with replacement) of `count` test images, the same for every variant."""
    return np.random.default_rng(seed).integers(0, count, (rounds, count))


def bootstrap_interval(values: list[float]) -> tuple[float, float]:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)



@dataclass
class ServeConfig:
    """What `RuntimeProcess` starts its worker process with (`python -m hsvlt.bench.measure --serve PROGRAM ...`)."""

    program: Path
    threads: int
    warmup: int


def parse_args(argv=None) -> ServeConfig:
    parser = argparse.ArgumentParser(description=serve.__doc__)
    parser.add_argument("--serve", dest="program", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    return ServeConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> None:
    """The worker process of `RuntimeProcess` (`serve`)."""
    config = parse_args(argv)
    serve(config.program, config.threads, config.warmup)


if __name__ == "__main__":
    main()
