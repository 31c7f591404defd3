"""Keeping the toolchain's own noise out of the user's way.

ExecuTorch, torchao, coremltools and torch.export print, on import and on every load, lines that tell a user
nothing: optional native libraries absent on this platform (torchao's mxfp8 and CUTLASS kernels), deprecation
notices from inside the libraries, the CPU probe of ExecuTorch's thread pool ([cpuinfo_utils.cpp] lines on
every .pte load), and coremltools' note that fp16 clips a bound of float32 (the norms' epsilon clamps, harmless).
"""

import contextlib
import logging
import os
import sys
import tempfile
import warnings

NATIVE_NOISE = ("[cpuinfo_utils.cpp",)


def quiet_toolchain() -> None:
    """Silence the libraries' Python-side notices; call before importing any of them."""
    for name in ("torchao", "coremltools", "torch.utils._pytree", "torch._export", "torch.export", "torch.onnx",
                 "onnxscript", "executorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*overflow.*fp16.*")
    warnings.filterwarnings("ignore", message=".*casted to fp16.*")


@contextlib.contextmanager
def native_stderr_filtered(noise: tuple[str, ...] = NATIVE_NOISE):
    """Hold back the lines that native code writes to standard error (file descriptor 2, which Python's own
    redirections do not reach) while the block runs; afterwards pass on every line that is not `noise`."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real standard error (an embedding host): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
