"""HSVLT multi-label image classification: `from hsvlt import Classifier` for labels from a deployed model; the
model itself is in hsvlt.models (HSVLT, HSVLTConfig, PRESETS, create_model)."""


def __getattr__(name: str):
    # Lazily: `import hsvlt` (and the `hsvlt` command's --help) loads neither torch nor a runtime.
    if name in ("Classifier", "Prediction"):
        from hsvlt import api

        return getattr(api, name)
    if name in ("HSVLT", "HSVLTConfig", "PRESETS", "build_model", "create_model"):
        from hsvlt import models

        return getattr(models, name)
    raise AttributeError(f"module 'hsvlt' has no attribute {name!r}")


__all__ = ["Classifier", "Prediction", "HSVLT", "HSVLTConfig", "PRESETS", "build_model", "create_model"]
