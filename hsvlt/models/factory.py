"""Models by name: a preset plus overrides, or whatever a config describes (HSVLT or an ablation baseline)."""

from dataclasses import replace

import torch

from hsvlt.models.baselines import LateFusionHSVLT, PooledClassifier
from hsvlt.models.hsvlt import HSVLT, PRESETS, HSVLTConfig

MODEL_CLASSES: dict[str, type[HSVLT]] = {"ivla": HSVLT, "late": LateFusionHSVLT, "none": PooledClassifier}


def build_model(config: HSVLTConfig, label_embeddings: torch.Tensor) -> HSVLT:
    """The model `config.fusion` names: HSVLT itself, or one of the ablation baselines."""
    return MODEL_CLASSES[config.fusion](config, label_embeddings)


def create_model(preset: str, label_embeddings: torch.Tensor, **overrides) -> HSVLT:
    """Build a preset by name; keyword arguments override config fields (num_heads, drop_path, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    return build_model(replace(PRESETS[preset], **overrides), label_embeddings)
