"""Everything a deployed model needs, shared by the exporters (export/), the quantiser (quant/), the Python API
(hsvlt.api) and the demo (edge_demo/):

    preprocess.py   the model's view of an image (resize, layout)
    manifest.py     the JSON beside every exported file
    wrapper.py      the module every exporter traces (for_export: the rewritten RewrittenHSVLT, built from the
                    blocks' deployable forms, hsvlt/models/deployable.py; AsTrainedHSVLT, the model as trained)
    runtimes.py     one interface over ExecuTorch, ONNX Runtime and PyTorch (imported only when used)
    sources.py      frames from a camera, a video, images or the generated `shapes` stream
    overlay.py      drawing labels and where they were found

Import the submodule you need: this package imports none of them, so the training transforms (which need
preprocess) do not load the wrapper, the runtimes or the frame sources.
"""
