"""Torch files read as untrusted input: checkpoints (hsvlt.checkpoint) and pretrained weights made elsewhere
(hsvlt.models.pretrained). A file is loaded with weights_only=True, so its pickle can build tensors and plain values
but import and call nothing; every way it can fail is one line naming the file, in the caller's error type."""

import pickle
from pathlib import Path

import torch


def load_untrusted(path: str | Path, error_type: type[ValueError], what: str = "checkpoint",
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
        raise error_type(f"{path}: not a readable {what} ({first_line(error)})") from None
    except Exception:  # IndexError, KeyError, ... from deep in the unpickler: the bytes are not torch.save's
        raise error_type(f"{path}: not a readable {what} (not a file written by torch.save)") from None


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check_finite(tensors: dict, path: str | Path, error_type: type[ValueError]) -> None:
    """Refuse weights holding NaN or infinity (a damaged file): every prediction would be NaN."""
    for key, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise error_type(f"{path}: weight {key!r} holds NaN or infinite values (a damaged file?)")
