"""Export a checkpoint to Core ML (.mlpackage, ML program) for iOS 17+ and macOS 14+.

    python export/to_coreml.py --ckpt runs/hsvlt/best.pt --out HSVLT.mlpackage                 # fp16
    python export/to_coreml.py --ckpt best.pt --out HSVLT.mlpackage --quantize-weights         # int8 weights
    python export/to_coreml.py --ckpt best.pt --int8 qat.pt2 --out HSVLT.mlpackage             # QAT (or PTQ) int8

The export is hsvlt.export.to_coreml (--help explains every flag).
"""

from hsvlt.cli import run_command
from hsvlt.export.to_coreml import main

if __name__ == "__main__":
    run_command(main)
