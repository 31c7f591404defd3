"""ConvNeXt pieces HSVLT is built from: the stem, the downsampling layers and the visual block, and beside
them their deployable forms (the layer_norm and depthwise rewrites of hsvlt/models/deployable.py).

Parameter names follow the original ConvNeXt release (dwconv, norm, pwconv1, pwconv2, gamma) so that
ImageNet checkpoints map onto them one to one (see hsvlt/models/pretrained.py).
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from hsvlt.models.config import HSVLTConfig
from hsvlt.models.deployable import ChannelNorm, Rewrites, constant, conv_after_affine, pointwise
from hsvlt.models.stages import StageSpec


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


# Maps of at most this many pixels take SmallMapDepthwise's backward on CPU.
SMALL_MAP_PIXELS = 25


@functools.cache
def tap_sums(height: int, width: int, kernel: int = 7) -> torch.Tensor:
    """(H W)^2 x kernel^2 matrix of 0 and 1: which tap of a `kernel`-square depthwise conv (padding kernel // 2)
    joins output pixel p to input pixel q, for every pair (p, q) (row p * H W + q)."""
    radius = kernel // 2
    pixel = torch.arange(height * width)
    dy = (pixel // width)[None, :] - (pixel // width)[:, None]  # p q
    dx = (pixel % width)[None, :] - (pixel % width)[:, None]
    inside = (dy.abs() <= radius) & (dx.abs() <= radius)
    sums = torch.zeros(height * width * height * width, kernel * kernel)
    pair = torch.arange(sums.shape[0]).view_as(dy)
    sums[pair[inside], ((dy + radius) * kernel + dx + radius)[inside]] = 1.0
    return sums


class SmallMapDepthwise(torch.autograd.Function):
    """A 7x7 depthwise conv (padding 3) whose backward suits maps of a few pixels on CPU, where most of the
    kernel lies on padding (hsvlt_nano's last two stages at 88 px: 5 x 5 and 2 x 2). oneDNN's backward costs
    there nearly what it costs on a map many times larger and many times its own forward. This backward takes
    the input gradient as a forward conv with the flipped kernel, and the weight gradient as the product of
    every (output, input) pixel pair summed over the batch, then summed per tap. The gradients are the same
    up to float rounding; reports/train_speed.py times the step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=3, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        batch, channels, height, width = x.shape
        grad_x = F.conv2d(grad, weight.flip(2, 3), padding=3, groups=channels) if ctx.needs_input_grad[0] else None
        pixels = height * width
        grad_rows = grad.permute(0, 2, 3, 1).reshape(batch, pixels, 1, channels)  # B p 1 C
        x_rows = x.permute(0, 2, 3, 1).reshape(batch, 1, pixels, channels)  # B 1 q C
        pairs = (grad_rows * x_rows).sum(0).reshape(pixels * pixels, channels)  # (p q) C
        grad_weight = (tap_sums(height, width).to(pairs).T @ pairs).T.reshape_as(weight)  # C 1 7 7
        return grad_x, grad_weight, grad.sum((0, 2, 3))


class DepthwiseConv2d(nn.Conv2d):
    """The block's 7x7 depthwise conv. Under CPU bf16 autocast (hsvlt.evaluate.autocast) it runs in float32:
    oneDNN's bf16 depthwise backward is slower than its float32 one (a one-off measurement of hsvlt_nano's
    training step, forward and backward, on an AVX512-BF16 CPU). In training on CPU, maps of at most
    SMALL_MAP_PIXELS pixels take SmallMapDepthwise's backward."""

    def __init__(self, dim: int):
        super().__init__(dim, dim, kernel_size=7, padding=3, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        if torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.forward(x.float())
        if self.training and torch.is_grad_enabled() and x.shape[-2] * x.shape[-1] <= SMALL_MAP_PIXELS:
            return SmallMapDepthwise.apply(x, self.weight, self.bias)
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

    def deployable(self, rewrites: Rewrites) -> "ExportConvNeXtBlock":
        """The same block for export: channels-first, norm and layer scale folded (ExportConvNeXtBlock)."""
        return ExportConvNeXtBlock(self, rewrites)


def convnext_stages(config: HSVLTConfig, drop_rates: list[float]) -> list[StageSpec]:
    """HSVLT backbone builder (hsvlt.models.classifier.BACKBONES['convnext']): the stem, then a downsampling
    layer before each later stage; one ConvNeXt block per IVLA block, `config.depths[i]` in stage i."""
    specs, block = [], 0
    for i, (depth, width) in enumerate(zip(config.depths, config.widths)):
        down = stem(width) if i == 0 else downsample(config.widths[i - 1], width)
        visual = [ConvNeXtBlock(width, drop_rates[block + j], config.layer_scale_init) for j in range(depth)]
        specs.append(StageSpec(down, visual))
        block += depth
    return specs


# ---- deployable form -------------------------------------------------------------------------------------


class SplitDepthwise7(nn.Module):
    """A 7 x 7 depthwise conv (padding 3) as the sum of three row-dilated depthwise convs of at most 25 taps
    (XNNPACK's fast kernels): kernel rows {0, 3, 6} (dilation 3), {1, 5} (dilation 4), {2, 4} (dilation 2)."""

    ROWS = ((0, 3, 6), (1, 5), (2, 4))
    DILATIONS = (3, 4, 2)

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.groups = conv.groups
        self.weights = nn.ParameterList(constant(conv.weight[:, :, list(rows)]) for rows in self.ROWS)
        self.bias = constant(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for weight, dilation, rows in zip(self.weights, self.DILATIONS, self.ROWS):
            part = F.conv2d(x, weight, self.bias if out is None else None, padding=(3 - rows[0], 3),
                            dilation=(dilation, 1), groups=self.groups)
            out = part if out is None else out + part
        return out


def splittable(conv: nn.Module) -> bool:
    """Whether SplitDepthwise7 computes what `conv` computes."""
    return (isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels == conv.out_channels
            and conv.kernel_size == (7, 7) and conv.padding == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.bias is not None)


class ExportConvNeXtBlock(nn.Module):
    """ConvNeXt block, channels-first: depthwise conv, ChannelNorm (affine folded into the first 1 x 1 conv),
    1 x 1 conv, GELU, 1 x 1 conv (layer scale folded in), residual."""

    def __init__(self, block: ConvNeXtBlock, rewrites: Rewrites):
        super().__init__()
        dim = block.dwconv.in_channels
        self.dwconv = SplitDepthwise7(block.dwconv) if rewrites.depthwise and splittable(block.dwconv) else block.dwconv
        w1, b1 = block.pwconv1.weight.detach(), block.pwconv1.bias.detach()
        if rewrites.layer_norm:
            self.norm = ChannelNorm(dim, block.norm.eps)
            w1, b1 = w1 * block.norm.weight.detach(), b1 + w1 @ block.norm.bias.detach()
        else:
            self.norm = LayerNorm2d(dim, eps=block.norm.eps)
            self.norm.load_state_dict(block.norm.state_dict())
        gamma = block.gamma.detach()
        self.pwconv1 = pointwise(w1, b1)
        self.act = nn.GELU()
        self.pwconv2 = pointwise(block.pwconv2.weight.detach() * gamma[:, None], block.pwconv2.bias.detach() * gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B d H W -> B d H W
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


def rewrite_visual(module: nn.Module, rewrites: Rewrites) -> nn.Module:
    """Stems, downsampling layers and visual updates: ConvNeXt blocks and LayerNorm2d are rewritten (a
    LayerNorm2d's affine part folds into an unpadded conv right after it); anything else is kept."""
    if isinstance(module, ConvNeXtBlock):
        return module.deployable(rewrites)
    if isinstance(module, LayerNorm2d) and rewrites.layer_norm:
        return ChannelNorm(module.normalized_shape[0], module.eps, module.weight, module.bias)
    if not isinstance(module, nn.Sequential):
        return module
    children, layers = list(module), []
    for i, child in enumerate(children):
        following = children[i + 1] if i + 1 < len(children) else None
        if (rewrites.layer_norm and isinstance(child, LayerNorm2d) and isinstance(following, nn.Conv2d)
                and following.padding == (0, 0)):
            layers.append(ChannelNorm(child.normalized_shape[0], child.eps))
            children[i + 1] = conv_after_affine(child.weight.detach(), child.bias.detach(), following)
        else:
            layers.append(rewrite_visual(child, rewrites))
    return nn.Sequential(*layers)
