"""ConvNeXt pieces HSVLT is built from: the stem, the downsampling layers and the visual block.

Parameter names follow the original ConvNeXt release (dwconv, norm, pwconv1, pwconv2, gamma) so that
ImageNet checkpoints map onto them one to one (see hsvlt/models/pretrained.py).
"""

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability `p` while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a B x C x H x W map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # B H W C
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def stem(width: int) -> nn.Sequential:
    """4x4 stride-4 patchify conv + channels-first LayerNorm."""
    return nn.Sequential(nn.Conv2d(3, width, kernel_size=4, stride=4), LayerNorm2d(width, eps=1e-6))


def downsample(in_width: int, out_width: int) -> nn.Sequential:
    """LayerNorm + 2x2 stride-2 conv between stages."""
    return nn.Sequential(LayerNorm2d(in_width, eps=1e-6), nn.Conv2d(in_width, out_width, kernel_size=2, stride=2))


class DepthwiseConv2d(nn.Conv2d):
    """The block's 7x7 depthwise conv. Under CPU bf16 autocast (hsvlt.evaluate.autocast) it runs in float32:
    oneDNN's bf16 depthwise backward is slower than its float32 one (hsvlt_nano's blocks at 88 px, batch 32,
    2 threads of an AVX512-BF16 EPYC: 76 vs 50 ms per training step, forward and backward)."""

    def __init__(self, dim: int):
        super().__init__(dim, dim, kernel_size=7, padding=3, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class ConvNeXtBlock(nn.Module):
    """The visual update of an IVLA block: 7x7 depthwise conv, LayerNorm, inverted MLP, layer scale."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = DepthwiseConv2d(dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B d H W -> B d H W
        residual = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # B H W d
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = (self.gamma * x).permute(0, 3, 1, 2)
        return residual + self.drop_path(x)
