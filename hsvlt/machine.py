"""What a measurement ran on, and what a model costs: the shared helpers of every benchmark and report (a figure
is true for the machine that produced it, so every generated page names it)."""

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe(*libraries: str) -> str:
    """'<CPU>, N cores usable of M, Linux <release>, Python x, torch y[, library z ...]' for the libraries named
    (their __version__; a library that is not installed is left out)."""
    import importlib

    versions = [f"Python {platform.python_version()}"]
    for name in ("torch", *libraries):
        try:
            module = importlib.import_module(name if name != "executorch" else "executorch.version")
        except ImportError:
            continue
        versions.append(f"{name} {module.__version__}")
    return (f"{cpu_name()}, {usable_cores()} cores usable of {os.cpu_count()}, {platform.system()} "
            f"{platform.release()}; {', '.join(versions)}")


def count_gflops(model, img_size: int) -> float:
    """GFLOPs of one image by torch.utils.flop_counter: 2 per multiply-add of convolutions and matrix products
    (element-wise ops, norms and softmax are not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, img_size, img_size))
    return counter.get_total_flops() / 1e9
