"""Models by name: a preset plus overrides, or whatever a config describes (HSVLT or an ablation baseline)."""

from dataclasses import replace

import torch

from hsvlt.models.baselines import LateFusionHSVLT, PooledClassifier
from hsvlt.models.classifier import MultiLabelClassifier
from hsvlt.models.config import HSVLTConfig
from hsvlt.models.hsvlt import HSVLT, PRESETS

MODEL_CLASSES: dict[str, type[MultiLabelClassifier]] = {"ivla": HSVLT, "late": LateFusionHSVLT,
                                                        "none": PooledClassifier}


def build_model(config: HSVLTConfig, label_embeddings: torch.Tensor) -> MultiLabelClassifier:
    """The model `config.fusion` names: HSVLT itself, or one of the ablation baselines."""
    return MODEL_CLASSES[config.fusion](config, label_embeddings)


def create_model(preset: str, label_embeddings: torch.Tensor, **overrides) -> MultiLabelClassifier:
    """Build a preset by name; keyword arguments override config fields (num_heads, drop_path, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    return build_model(replace(PRESETS[preset], **overrides), label_embeddings)
