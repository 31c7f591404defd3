"""Export a checkpoint to ONNX (for Android, desktop and web runtimes), checked with ONNX Runtime.

    python export/to_onnx.py --ckpt runs/hsvlt/best.pt --out model.onnx [--attention-stage 2]

The export is hsvlt.export.to_onnx (--help explains every flag).
"""

from hsvlt.cli import run_command
from hsvlt.export.to_onnx import main

if __name__ == "__main__":
    run_command(main)
