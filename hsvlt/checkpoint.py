"""Checkpoints: written atomically, read as untrusted input (weights_only=True), turned back into models, and
opened as the source of the tools that make files from them (load_source: the model, the values, the file's hash).

A checkpoint is a dict of tensors and plain Python values:
    format, version        "hsvlt-checkpoint", 1
    config                 HSVLTConfig.to_dict()
    labels                 class names; the label embeddings are the model buffer `label_embeddings`
    model                  state dict of the weights to deploy (the EMA weights when EMA was on)
    thresholds             per-class thresholds calibrated on validation (best.pt)
    metrics, epoch         validation figures of this epoch
    train_state            (last.pt only) optimiser, schedulers, EMA, RNG and sampler position for --resume
"""

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from hsvlt.cli import UsageError
from hsvlt.models.classifier import MultiLabelClassifier
from hsvlt.models.config import HSVLTConfig
from hsvlt.models.factory import build_model
from hsvlt.outputs import atomic_write

FORMAT, VERSION = "hsvlt-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


class CheckpointFlagError(CheckpointError, UsageError):
    """A flag that does not fit the checkpoint (exit status 2, hsvlt.cli)."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Written through hsvlt.outputs.atomic_write: a crash or a full disk at any moment leaves either the old
    file or the new one, never a broken one."""
    with atomic_write(path) as stream:
        torch.save({"format": FORMAT, "version": VERSION, **state}, stream)


def load_untrusted(path: str | Path, error_type: type[ValueError] = CheckpointError, what: str = "checkpoint",
                   missing: str = "checkpoint not found"):
    """torch.load with weights_only=True, every failure turned into one line naming the file. The unpickler
    raises many types for a file that is not a checkpoint (IndexError and KeyError among them); a file that
    holds Python objects is refused without the library's advice to load it unsafely, which would run its
    code."""
    path = Path(path)
    if not path.is_file():
        raise error_type(f"{path}: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # a class or function to import and call: what a malicious pickle needs
            raise error_type(f"{path}: not a plain {what}: it holds Python objects whose loading could run code, "
                             f"so it is not loaded") from None
        raise error_type(f"{path}: not a readable {what} (not a file written by torch.save)") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise error_type(f"{path}: not a readable {what} ({_first_line(error)})") from None
    except Exception:  # IndexError, KeyError, ... from deep in the unpickler: the bytes are not torch.save's
        raise error_type(f"{path}: not a readable {what} (not a file written by torch.save)") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check_finite(tensors: dict, path: str | Path, error_type: type[ValueError] = CheckpointError) -> None:
    """Refuse weights holding NaN or infinity (a damaged file): every prediction would be NaN."""
    for key, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise error_type(f"{path}: weight {key!r} holds NaN or infinite values (a damaged file?)")


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    state = load_untrusted(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an HSVLT checkpoint (made by hsvlt.train)")
    if not isinstance(state.get("version", 0), int) or state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this code ({VERSION})")
    for key in ("config", "labels", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise CheckpointError(f"{path}: its 'model' is not a state dict of tensors")
    check_finite(state["model"], path)
    return state


def model_from_checkpoint(state: dict, path: str | Path = "checkpoint") -> MultiLabelClassifier:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    try:
        config = HSVLTConfig.from_dict(state["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path}: bad model config ({error})") from None
    weights = state["model"]
    if "label_embeddings" not in weights:
        raise CheckpointError(f"{path}: weights lack label_embeddings")
    try:
        model = build_model(config, weights["label_embeddings"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: bad model config ({_first_line(error)})") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which the model does not"
        count = len(missing) + len(unexpected)
        raise CheckpointError(f"{path}: weights do not fit the {config.preset} model: it {what}"
                              + (f" ({count - 1} more keys differ)" if count > 1 else ""))
    for key, tensor in weights.items():
        if tensor.shape != own[key].shape:
            raise CheckpointError(f"{path}: weight {key!r} has shape {tuple(tensor.shape)}, the {config.preset} "
                                  f"model needs {tuple(own[key].shape)}")
    model.load_state_dict(weights)
    if len(state["labels"]) != model.num_classes:
        raise CheckpointError(f"{path}: {len(state['labels'])} label names but {model.num_classes} classes")
    return model.eval()


def load_model(path: str | Path) -> tuple[MultiLabelClassifier, dict]:
    """Checkpoint file -> (model in eval mode, checkpoint dict)."""
    state = load_checkpoint(path)
    return model_from_checkpoint(state, path), state


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file: how an exported file names the checkpoint it was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_thresholds(checkpoint: dict, num_classes: int) -> list[float]:
    """The per-label thresholds calibrated on validation (best.pt has them), else 0.5 for every label."""
    return [float(t) for t in (checkpoint.get("thresholds") or [0.5] * num_classes)]


@dataclass
class SourceCheckpoint:
    """A checkpoint opened as the source of an export, a quantisation or a PyTorch runtime: the model, the
    checkpoint's own values, and its hash (which every file made from it records)."""

    path: Path
    model: MultiLabelClassifier
    checkpoint: dict
    sha256: str

    @property
    def labels(self) -> list[str]:
        return list(self.checkpoint["labels"])

    @property
    def thresholds(self) -> list[float]:
        return checkpoint_thresholds(self.checkpoint, self.model.num_classes)

    @property
    def preset(self) -> str:
        return self.model.config.preset

    @property
    def img_size(self) -> int:
        return self.model.config.img_size


def load_source(path: str | Path, preset: str | None = None, attention_stage: int | None = None) -> SourceCheckpoint:
    """Open a checkpoint as the source of a tool's work, and refuse it where it does not fit the tool's flags: a
    checkpoint of another preset than `preset` (--preset), or a model without the stage `attention_stage`
    (--attention-stage, exit status 2)."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    sha256 = file_sha256(path)
    model = model_from_checkpoint(checkpoint, path)
    if preset is not None and model.config.preset != preset:
        raise CheckpointError(f"{path}: a {model.config.preset} checkpoint, not {preset}")
    stages = len(model.config.widths)
    if attention_stage is not None and not 0 <= attention_stage < stages:
        raise CheckpointFlagError(f"--attention-stage must be 0..{stages - 1} for {path}, got {attention_stage}")
    return SourceCheckpoint(path, model, checkpoint, sha256)
