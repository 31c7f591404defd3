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


def vector_extensions() -> str:
    """The CPU's widest vector and matrix extensions that PyTorch's kernels use (AVX2, AVX-512, VNNI, bf16, AMX),
    from /proc/cpuinfo's flags: the same code runs several times faster on some of them."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return "unknown extensions"
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "VNNI", "avx512_bf16": "AVX512-BF16",
             "amx_tile": "AMX"}
    found = [name for flag, name in names.items() if flag in flags]
    return "+".join(found) if found else "no AVX2"


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
    return (f"{cpu_name()} ({vector_extensions()}), {usable_cores()} cores usable of {os.cpu_count()}, "
            f"{platform.system()} {platform.release()}; {', '.join(versions)}")


def count_gflops(model, img_size: int) -> float:
    """GFLOPs of one image by torch.utils.flop_counter: 2 per multiply-add of convolutions and matrix products
    (element-wise ops, norms and softmax are not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, img_size, img_size))
    return counter.get_total_flops() / 1e9
