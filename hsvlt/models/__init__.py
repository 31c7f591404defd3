from hsvlt.models.classifier import MultiLabelClassifier
from hsvlt.models.config import HSVLTConfig
from hsvlt.models.factory import build_model, create_model
from hsvlt.models.hsvlt import HSVLT, PRESETS

__all__ = ["HSVLT", "HSVLTConfig", "MultiLabelClassifier", "PRESETS", "build_model", "create_model"]
