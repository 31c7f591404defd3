"""What the deployable (export-time) forms of the blocks share: the Rewrites switches, ChannelNorm and TokenNorm,
and the helpers that fold one layer into the next.

A trained HSVLT's deployable form, `HSVLT.deployable()`, is a new module tree computing the same function
with operators that the XNNPACK delegate runs whole (and that Core ML and int8 quantisation take). Each block
builds its own beside it, as timm's blocks fuse or reparameterise themselves: ConvNeXtBlock.deployable
(hsvlt/models/convnext.py), IVLABlock.deployable (hsvlt/models/ivla.py), CrossScaleAggregation.deployable
(hsvlt/models/csa.py), ConvBNAct.fuse (hsvlt/models/efficientnet_lite.py). `hsvlt.deploy.wrapper.for_export`
applies them, so the exporters and the quantiser trace the same graph; the trained model is not changed.

Each rewrite keeps the math (same outputs up to float rounding, tests/export/test_rewrites.py) and was kept
because it measured better: `python reports/export_bench.py --ablation` switches each off alone and writes the
delegated subgraphs, operators left outside the delegate and latency of every variant into docs/EXPORT.md
("Export-time rewrites"). Without them, the model as trained (hsvlt.deploy.wrapper.AsTrainedHSVLT) leaves
expand copies, LayerNorms and a sum outside the delegate, which splits the graph into many XNNPACK subgraphs
with a trip through the portable operators between each; with them, both presets lower to one subgraph with
nothing outside it.

    normalisation    The input normalisation (x - mean) / std folded into the stem's conv where it does not pad
                     (ConvNeXt's 4 x 4 patchify; EfficientNet-Lite0's padded stem keeps it, zero padding would
                     change meaning): one subtract and one divide over the image fewer, a saving below the
                     benchmark's noise (docs/EXPORT.md, "without normalisation"), kept because it is free.
    batch_norm       BatchNorm folded into the conv before it (EfficientNet-Lite0).
    layer_norm       XNNPACK 1.5 delegates no LayerNorm. Channel statistics are computed by a 1 x 1 conv with
                     weights 1/C (mean.dim is delegated only over H and W), the rest is sub, mul and rsqrt;
                     the variance is clamped to eps before rsqrt (a no-op in float, where the conv adds eps;
                     int8 rounds small variances to 0, and rsqrt(0) made QAT's loss NaN);
                     the affine part folds into the next 1 x 1 / unpadded conv, the layer scale into the last
                     one. The ConvNeXt block runs channels-first with 1 x 1 convs (no permutes).
    depthwise        XNNPACK's fast depthwise kernels take at most 25 taps; a 7 x 7 one (49) falls to a slow
                     path, the largest single cost the rewrites remove (docs/EXPORT.md, "without
                     depthwise"; `python reports/op_profile.py` shows it by operator kind). The 7 x 7 kernel is
                     split by rows into three dilated kernels with symmetric padding, rows {0, 3, 6}, {1, 5}
                     and {2, 4} (21 + 14 + 14 taps), summed.
    attention        Label-to-pixel attention with its projections reassociated onto the label side:
                     scores = (L Wq' Wk) V^T and out = (A V) Wv' Wo' + b, where V are the raw pixel features.
                     Exact, and C x d^2 instead of HW x d^2 multiply-adds per projection (C labels, HW pixels).
                     Where the map has fewer pixels than there are labels (80 labels on hsvlt_nano's 7 x 7 map
                     at 224 px) and one head, the products go onto the pixel side instead: keys P QK^T and
                     values P VO, two 1 x 1 convs. Written with 3-D bmm: 4-D matmul leaves undelegated expand
                     copies.
    label_constants  Whatever depends on the labels only is computed once: stage 1's label tokens, the first
                     block's query-key product (its attention scores become a 1 x 1 conv of the image
                     features) and its language projection GELU(W_l L).
    head             CSA's per-class dot product as mul + a linear layer of ones (aten.sum is not delegated).
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Rewrites:
    """Which rewrites to apply (all by default; switching one off is for measuring it, or, for batch_norm,
    for quantisation-aware training, which simulates the folding itself)."""

    normalisation: bool = True
    batch_norm: bool = True
    layer_norm: bool = True
    depthwise: bool = True
    attention: bool = True
    label_constants: bool = True
    head: bool = True


def constant(tensor: torch.Tensor) -> nn.Parameter:
    """A detached copy as a parameter (trainable by quantisation-aware training, a constant once exported)."""
    return nn.Parameter(tensor.detach().clone())


# ---- norms --------------------------------------------------------------------------------------------------


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of B x C x H x W without native_layer_norm: the mean and the variance
    are 1 x 1 convolutions with weights 1/C. The affine part is optional (often folded into the next layer)."""

    def __init__(self, width: int, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("average", torch.full((1, width, 1, 1), 1.0 / width))
        self.register_buffer("eps", torch.full((1,), eps))  # added as the variance conv's bias
        self.min_variance = eps
        self.weight = None if weight is None else constant(weight.view(1, width, 1, 1))
        self.bias = None if bias is None else constant(bias.view(1, width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B C H W -> B C H W
        centred = x - F.conv2d(x, self.average)
        x = centred * torch.rsqrt(F.conv2d(centred * centred, self.average, self.eps).clamp(min=self.min_variance))
        return x if self.weight is None else x * self.weight + self.bias


class TokenNorm(nn.Module):
    """LayerNorm over the last axis without native_layer_norm: the statistics are linear layers with weights
    1/d. The affine part is optional (often folded into the next layer)."""

    def __init__(self, width: int, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("average", torch.full((1, width), 1.0 / width))
        self.register_buffer("eps", torch.full((1,), eps))  # added as the variance layer's bias
        self.min_variance = eps
        self.weight = None if weight is None else constant(weight)
        self.bias = None if bias is None else constant(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # ... d -> ... d
        centred = x - F.linear(x, self.average)
        x = centred * torch.rsqrt(F.linear(centred * centred, self.average, self.eps).clamp(min=self.min_variance))
        return x if self.weight is None else x * self.weight + self.bias


# ---- folding one layer into the next ------------------------------------------------------------------------


def conv_after_affine(weight: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d) -> nn.Conv2d:
    """conv(weight * x + bias) (per input channel) as one conv; exact for a conv that does not pad."""
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        shift = (conv.weight * bias.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        folded.weight.mul_(weight.view(1, -1, 1, 1))
        if folded.bias is None:
            folded.bias = constant(shift)
        else:
            folded.bias.add_(shift)
    return folded


def pointwise(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A Linear's weight (out x in) and bias as a 1 x 1 conv."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1)
    conv.weight, conv.bias = constant(weight[:, :, None, None]), constant(bias)
    return conv


def fold_input_affine(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """linear(weight * x + bias) as one Linear."""
    folded = nn.Linear(linear.in_features, linear.out_features)
    shift = linear.weight.detach() @ bias
    folded.weight = constant(linear.weight * weight)
    folded.bias = constant(shift if linear.bias is None else linear.bias + shift)
    return folded


def linear_from(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = constant(weight)
    if bias is not None:
        layer.bias = constant(bias)
    return layer
