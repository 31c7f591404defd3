"""Everything a deployed model needs, shared by the exporters (hsvlt.export), the quantiser (hsvlt.quant), the
Python API (hsvlt.api) and the demos:

    manifest.py     the JSON beside every exported file
    wrapper.py      the module every exporter traces (for_export: the rewritten RewrittenHSVLT, built from the
                    blocks' deployable forms, hsvlt/models/deployable.py; AsTrainedHSVLT, the model as trained)
    runtimes.py     one interface over ExecuTorch, ONNX Runtime and PyTorch (imported only when used)
    sources.py      frames from a camera, a video, images or the generated `shapes` stream
    overlay.py      drawing labels and where they were found
    smoothing.py    labels held on screen with hysteresis, so they do not flicker
    camera.py       the camera demo (edge_demo/camera.py): frames in, labels drawn, detections recorded
    web.py          the web demo's server (edge_demo/web.py), its page in web_page/; chromium.py drives it in tests

The runtimes take images as hsvlt.preprocess prepares them, the model's view of an image that training shares.
Import the submodule you need: this package imports none of them, so the runtimes and the frame sources load only when
used.
"""
