"""Keeping the toolchain's own noise out of the user's way, only while the toolchain runs.

ExecuTorch, torchao, coremltools and torch.export print, on import and while they work, lines that tell a user
nothing: optional native libraries absent on this platform (torchao's mxfp8 and CUTLASS kernels, Core ML's
macOS-only runtime), version notes, deprecation notices from one of the libraries about another's API, the CPU
probe of ExecuTorch's thread pool ([cpuinfo_utils.cpp] lines on every .pte load), and coremltools' overflow
when fp16 clips a bound of float32 (the norms' epsilon clamps, harmless).

`quiet_toolchain_calls()` hides exactly those, as a context manager or a decorator around the code that calls
the toolchain; everything else (the user's own warnings, any other library's, a new notice from the toolchain)
still shows, and nothing changes for the rest of the process.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

NATIVE_NOISE = ("[cpuinfo_utils.cpp",)

# (category, message pattern, module pattern) of each notice the toolchain raises, as warnings.filterwarnings
# takes them: the pattern matches the start of the message, the module is the one the warning is attributed to.
TOOLCHAIN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # ExecuTorch reads its packaged files with importlib.resources' legacy functions.
    (DeprecationWarning, r"(read|open)_(text|binary) is deprecated\. Use files\(\) instead",
     r"(executorch|importlib)\."),
    # ExecuTorch's modules are built with torch.jit.script_method.
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated", r"torch\.jit\."),
    # Copying or pickling a traced program asks its pytree specs a question the newer torch deprecates.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r""),
    # ExecuTorch's Python runtime calls itself experimental on import.
    (Warning, r"This API is experimental and subject to change without notice", r"executorch\."),
    # coremltools' torch frontend asks its own deprecated operator registry.
    (DeprecationWarning, r"Function _TORCH_OPS_REGISTRY\.__contains__ is deprecated", r"coremltools\."),
    # fp16 conversion casts the float32 clamp bounds (the norms' variance floor, +-float32 max) to +-inf, which
    # clamps exactly the same.
    (RuntimeWarning, r"overflow encountered in cast", r"coremltools\."),
    # torch.export.save of a program whose constants share storage; the warning is about weights off the CPU,
    # and the programs saved here are CPU programs.
    (UserWarning, r"No complete tensor found in the group", r"torch\.export\."),
    # coremltools leaves the folder it converts in to be removed when it is collected.
    (ResourceWarning, r"Implicitly cleaning up <TemporaryDirectory", r"tempfile"),
    # The Inspector reads an ETDump made without a debug buffer (the operator profile wants timings, not tensors).
    (UserWarning, r"Output Buffer not found\. Tensor Debug Data will not be available", r"executorch\.devtools\."),
)
# (logger, message pattern) of each notice the toolchain logs at WARNING; the pattern matches the start.
TOOLCHAIN_LOG_NOTICES: tuple[tuple[str, str], ...] = (
    # Optional kernels that this platform lacks (mxfp8, CUTLASS, Triton: GPU ones).
    ("torchao", r"Failed to load .*torchao"),
    ("torchao.kernel.intmm", r"Warning: Detected no triton"),
    # The ONNX exporter registers torchvision's operators where torchvision is installed; nothing here uses it.
    ("torch.onnx._internal.exporter._registration", r"torchvision is not installed"),
    # torchao registers an Enum with torch.compile the way torch now deprecates.
    ("torch.utils._pytree", r"<enum '\w+'> is an Enum subclass and is now natively supported"),
    # coremltools: its macOS-only runtime, and versions of torch and scikit-learn it was not tested with.
    ("coremltools", r"Failed to load _ML\w*Proxy"),
    ("coremltools", r"Torch version \S+ has not been tested with coremltools"),
    ("coremltools", r"scikit-learn version \S+ is not supported"),
    # ExecuTorch's Core ML delegate on the deployment target, which export/to_executorch.py chooses on purpose.
    ("executorch.backends.apple.coreml.compiler.coreml_preprocess",
     r"The model with identifier \S+ was exported with CoreML specification version"),
)


class _HiddenNotices(logging.Filter):
    def __init__(self, patterns: list[str]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


@contextlib.contextmanager
def quiet_toolchain_calls():
    """Hide the toolchain's known notices (TOOLCHAIN_WARNINGS, TOOLCHAIN_LOG_NOTICES) while the block or the
    decorated function runs; afterwards the warning filters are as they were (with them go the filters that a
    library adds on its first import inside the block) and the loggers keep no filter. Imports of the toolchain
    belong inside it too: most notices come once, on import."""
    patterns: dict[str, list[str]] = {}
    for name, pattern in TOOLCHAIN_LOG_NOTICES:
        patterns.setdefault(name, []).append(pattern)
    filters = [(logging.getLogger(name), _HiddenNotices(found)) for name, found in patterns.items()]
    with warnings.catch_warnings():
        for category, message, module in TOOLCHAIN_WARNINGS:
            warnings.filterwarnings("ignore", message, category, module)
        for logger, hidden in filters:
            logger.addFilter(hidden)
        try:
            yield
        finally:
            for logger, hidden in filters:
                logger.removeFilter(hidden)


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
