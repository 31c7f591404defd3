"""Quantisation-aware training (PT2E) of a trained checkpoint -> an int8 program for the exporters.

    python quant/qat.py --ckpt runs/hsvlt/best.pt --epochs 3 --out qat.pt2
    python quant/qat.py --ckpt runs/hsvlt/best.pt --ptq --out ptq.pt2          # calibration only (baseline)
    python export/to_executorch.py --ckpt runs/hsvlt/best.pt --int8 qat.pt2 --out model_int8.pte

The training is hsvlt.quant.qat (--help explains every flag).
"""

from hsvlt.quant.qat import main

if __name__ == "__main__":
    main()
