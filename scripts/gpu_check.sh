#!/usr/bin/env bash
# The GPU check, one command on a machine with a CUDA GPU (a few minutes on one):
#
#     bash scripts/gpu_check.sh                  # or: PYTHON=/path/to/python bash scripts/gpu_check.sh
#     bash scripts/gpu_check.sh --out /tmp/GPU.md   # arguments go to scripts/gpu_throughput.py
#
# 1. Picks the interpreter: $PYTHON, else .venv/bin/python, else python3. Without torch it installs the project
#    (pip install -e ".[dev]"). With torch it uses what is installed, since a GPU machine may have no network,
#    and only when other packages the tests need are missing tries pip install -e ".[dev]" with that torch kept.
#    It prints what it uses.
# 2. Runs the CUDA tests, tests/gpu: training steps in bf16 and float16, EMA, validation, checkpoints across
#    devices, loader workers, torchrun with NCCL, QAT, the ablation study.
# 3. Measures training throughput and peak memory of hsvlt_nano at 224 px and hsvlt_small at 448 px at a few
#    batch sizes (scripts/gpu_throughput.py) and writes docs/GPU.md: the machine, the test result, the figures
#    and the batch size and workers a COCO run should start with.
# Exit status: the tests', or the measurement's when the tests passed.

set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
needed="import numpy, cv2, albumentations, sklearn, matplotlib, tqdm, pytest"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "== $PYTHON has no torch: pip install -e .[dev]"
    if ! "$PYTHON" -m pip install -e ".[dev]"; then
        echo "error: installing failed (no network?); set PYTHON to an interpreter that has torch" >&2
        exit 1
    fi
elif ! "$PYTHON" -c "$needed" 2>/dev/null; then
    # The torch installed stays (a CUDA build chosen for this machine); the rest of .[dev] comes from the registry.
    keep=$(mktemp)
    "$PYTHON" -c "import torch; print('torch==' + torch.__version__)" >"$keep"
    echo "== $PYTHON lacks some of the project's packages: pip install -e .[dev], keeping $(cat "$keep")"
    "$PYTHON" -m pip install -e ".[dev]" -c "$keep" || echo "warning: installing failed (no network?)" >&2
    rm -f "$keep"
    "$PYTHON" -c "$needed" || { echo "error: the packages above are missing and could not be installed" >&2; exit 1; }
fi
# This checkout, whether it is installed or not (tests start child processes that import it).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== using"
"$PYTHON" - <<'EOF' || exit 1
import importlib.metadata
import sys

import torch

print(f"{'python':<22} {sys.executable} ({sys.version.split()[0]})")
print(f"{'torch':<22} {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
for name in ("torchao", "executorch", "numpy", "opencv-python-headless", "albumentations", "pytest"):
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed (the tests that need it skip)"
    print(f"{name:<22} {version}")
if torch.version.cuda is None:
    sys.exit("error: this torch is a CPU-only build; install a CUDA build (pip install torch==2.13.0) or set PYTHON")
if not torch.cuda.is_available():
    sys.exit("error: torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)")
for index in range(torch.cuda.device_count()):
    print(f"{'cuda:' + str(index):<22} {torch.cuda.get_device_name(index)}")
EOF

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== tests/gpu"
started=$SECONDS
timeout 300 "$PYTHON" -m pytest tests/gpu -q -p no:cacheprovider 2>&1 | tee "$log"
tests=${PIPESTATUS[0]}
summary=$(grep -E "(passed|failed|error|skipped)" "$log" | tail -n 1 | sed -e 's/=//g' -e 's/^ *//' -e 's/ *$//')
[ "$tests" -eq 124 ] && summary="stopped after 300 s: ${summary:-no result}"
echo "== tests took $((SECONDS - started)) s"

echo "== throughput"
timeout 240 "$PYTHON" scripts/gpu_throughput.py --tests "${summary:-no result (exit status $tests)}" "$@"
measured=$?
[ "$tests" -ne 0 ] && exit "$tests"
exit "$measured"
