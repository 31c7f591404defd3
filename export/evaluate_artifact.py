"""mAP of an exported model, computed through its real runtime.

    python export/evaluate_artifact.py --model model.pte                # ExecuTorch runtime
    python export/evaluate_artifact.py --model model.onnx               # ONNX Runtime
    python export/evaluate_artifact.py --model runs/hsvlt/best.pt       # PyTorch, for comparison

The evaluation is hsvlt.export.evaluate_artifact (--help explains every flag).
"""

from hsvlt.cli import run_command
from hsvlt.export.evaluate_artifact import main

if __name__ == "__main__":
    run_command(main)
