"""Int8 models for the exporters, each the code behind quant/qat.py:

    qat.py    quantisation-aware training (and PTQ, calibration only) of a checkpoint -> an int8 program (.pt2)
    pt2e.py   the PT2E steps it takes: capture, the quantizer and the layers kept float, convert, the artifact
    eager.py  torchao's eager QAT flow, the comparison behind PT2E as the default
"""
