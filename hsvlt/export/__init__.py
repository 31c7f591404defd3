"""From a checkpoint to a deployed file, one module a target, each the code of its script in export/:

    to_executorch.py       an ExecuTorch program (.pte), XNNPACK or Core ML delegate, fp32 or int8
    to_onnx.py             an ONNX file, checked in ONNX Runtime
    to_coreml.py           a Core ML package (.mlpackage)
    evaluate_artifact.py   mAP of an exported file through its own runtime
    common.py              what they share: their settings and flags (ExportConfig)
    parity.py              the check each ends with: the file in its runtime against PyTorch

Import the module you need: this package imports none of them, so no exporter's toolchain loads with another's.
"""
