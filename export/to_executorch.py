"""Export a checkpoint to an ExecuTorch program (.pte), fp32 or int8, delegated to XNNPACK (or Core ML).

    python export/to_executorch.py --ckpt runs/hsvlt/best.pt --out model.pte
    python export/to_executorch.py --ckpt runs/hsvlt/best.pt --int8 qat.pt2 --out model_int8.pte
    python export/to_executorch.py --ckpt best.pt --out model.pte --attention-stage 2   # + attention maps

Load the checkpoint, wrap it for export, torch.export it, lower it to the delegate, save the .pte and its
manifest, check it against PyTorch: hsvlt.export.to_executorch (--help explains every flag).
"""

from hsvlt.cli import run_command
from hsvlt.export.to_executorch import main

if __name__ == "__main__":
    run_command(main)
