from hsvlt.models.factory import build_model, create_model
from hsvlt.models.hsvlt import HSVLT, PRESETS, HSVLTConfig

__all__ = ["HSVLT", "HSVLTConfig", "PRESETS", "build_model", "create_model"]
