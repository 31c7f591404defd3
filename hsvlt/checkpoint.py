"""Checkpoints: written atomically, read as untrusted input (weights_only=True), turned back into models.

A checkpoint is a dict of tensors and plain Python values:
    format, version        "hsvlt-checkpoint", 1
    config                 HSVLTConfig.to_dict()
    labels                 class names; the label embeddings are the model buffer `label_embeddings`
    model                  state dict of the weights to deploy (the EMA weights when EMA was on)
    thresholds             per-class thresholds calibrated on validation (best.pt)
    metrics, epoch         validation figures of this epoch
    train_state            (last.pt only) optimiser, schedulers, EMA, RNG and sampler position for --resume
"""

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from hsvlt.models.factory import build_model
from hsvlt.models.hsvlt import HSVLT, HSVLTConfig

FORMAT, VERSION = "hsvlt-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`: a crash at
    any moment leaves either the old file or the new one, never a broken one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format": FORMAT, "version": VERSION, **state}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an HSVLT checkpoint (made by hsvlt.train)")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this code ({VERSION})")
    for key in ("config", "labels", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return state


def model_from_checkpoint(state: dict, path: str | Path = "checkpoint") -> HSVLT:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    try:
        config = HSVLTConfig.from_dict(state["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: bad model config ({error})") from None
    weights = state["model"]
    if "label_embeddings" not in weights:
        raise CheckpointError(f"{path}: weights lack label_embeddings")
    model = build_model(config, weights["label_embeddings"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(f"{path}: weights do not fit the {config.preset} model ({first[:200]})") from None
    if len(state["labels"]) != model.num_classes:
        raise CheckpointError(f"{path}: {len(state['labels'])} label names but {model.num_classes} classes")
    return model.eval()


def load_model(path: str | Path) -> tuple[HSVLT, dict]:
    """Checkpoint file -> (model in eval mode, checkpoint dict)."""
    state = load_checkpoint(path)
    return model_from_checkpoint(state, path), state
