"""Where an ExecuTorch program spends its time: the XNNPACK delegate's own per-operator times, read from the
runtime's ETDump, summed by operator kind.

    python reports/op_profile.py model.pte              # 2 threads (the cores of this machine), 20 runs
    python reports/op_profile.py model.pte --threads 1

One table: per kind (fully connected, depthwise conv, ...) the number of operators, the mean time per run summed
over them, and the share. Means, not medians: the sum of means is the mean of the sums, whereas on two threads
each operator's time has a tail (a thread descheduled for a moment), which every median leaves out, so the sum
of medians falls short of the call's time. Below the table, the delegate call as a whole. The time
outside the operators is what the call spends around them: reshaping and setting up every operator on each
call, the profiler's bookkeeping, and the rounding of each operator's time down to a whole microsecond
(XNNPACK's profiling unit), about 0.5 us per operator.
"""

import argparse
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hsvlt.bench.measure import SETTLE_S, cpu_threads
from hsvlt.cli import positive_int, program
from hsvlt.deploy.manifest import read_manifest
from hsvlt.deploy.runtimes import cannot_load
from hsvlt.toolchain import quiet_toolchain_calls

RUNTIME_EVENTS = ("DELEGATE_CALL", "Method::execute")


@dataclass
class ProfileConfig:
    """One profile, as `python reports/op_profile.py` takes it (its flags parse into one, `parse_args`)."""

    program: Path
    threads: int = field(default_factory=cpu_threads)  # every core this process may use, read when the run starts
    runs: int = 20


def operator_kind(event_name: str) -> str:
    """'Fully Connected (NC, F32) GEMM #12' -> 'Fully Connected (NC, F32) GEMM'."""
    return re.sub(r" #\d+$", "", event_name)


@quiet_toolchain_calls()
def profile(path: str | Path, threads: int, runs: int = 20) -> dict:
    """Run the program `runs` times at batch 1 with event tracing on; mean milliseconds per run of each operator
    kind and of the whole delegate call."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch, _unsafe_reset_threadpool

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: program not found")
    size = int(read_manifest(path)["input"]["shape"][-1])
    _unsafe_reset_threadpool(threads)
    try:
        program = _load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
    except RuntimeError as error:
        raise cannot_load(path, "the ExecuTorch runtime", error) from None
    image = torch.rand(1, 3, size, size)
    time.sleep(SETTLE_S)
    for _ in range(runs):
        program.forward([image])
    with tempfile.TemporaryDirectory() as folder:
        dump = Path(folder) / "run.etdp"
        program.write_etdump_result_to_file(str(dump))
        events = next(block for block in Inspector(etdump_path=str(dump)).event_blocks if block.name == "Execute")
    kinds, counts, delegate_ms = defaultdict(float), defaultdict(int), 0.0
    for event in events.events:
        if event.perf_data is None:
            continue
        if event.name == "DELEGATE_CALL":
            delegate_ms += event.perf_data.avg
        elif event.name not in RUNTIME_EVENTS:
            kind = operator_kind(event.name)
            kinds[kind] += event.perf_data.avg
            counts[kind] += 1
    return {"threads": threads, "runs": runs, "delegate_ms": delegate_ms,
            "kinds": sorted(((kind, counts[kind], ms) for kind, ms in kinds.items()), key=lambda row: -row[2])}


def format_profile(result: dict) -> str:
    operators_ms = sum(ms for _, _, ms in result["kinds"])
    lines = ["| operator kind | operators | ms per run | share |", "|---|---:|---:|---:|"]
    lines += [f"| {kind} | {count} | {ms:.3f} | {100 * ms / operators_ms:.1f}% |"
              for kind, count, ms in result["kinds"]]
    operators = sum(count for _, count, _ in result["kinds"])
    outside = result["delegate_ms"] - operators_ms
    lines += ["", f"{operators} operators: {operators_ms:.2f} ms; the delegate call: {result['delegate_ms']:.2f} ms "
              f"({outside:.2f} ms outside the operators); mean of {result['runs']} runs, {result['threads']} threads"]
    return "\n".join(lines)


def parse_args(argv=None) -> ProfileConfig:
    defaults = ProfileConfig(program=Path())
    parser = argparse.ArgumentParser(prog=program("python reports/op_profile.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program", type=Path, help="an ExecuTorch program (.pte) with its manifest beside it")
    parser.add_argument("--threads", type=positive_int, default=defaults.threads, help="XNNPACK threads")
    parser.add_argument("--runs", type=positive_int, default=defaults.runs, help="runs to average over")
    return ProfileConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    torch.set_flush_denormal(True)
    result = profile(config.program, config.threads, config.runs)
    print(format_profile(result))
    return result
