"""Cross-Scale Aggregation (CSA) and the per-class head, and beside it its deployable form (the head rewrite of
hsvlt/models/deployable.py)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from hsvlt.models.deployable import TokenNorm, constant


class CrossScaleAggregation(nn.Module):
    """Concatenate the multi-modal features S of several stages along channels and score each class
    with its own weight vector: logit_c = <w_c, s_c> + b_c."""

    def __init__(self, widths: list[int], num_classes: int, normalise: bool = False):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for width in widths) if normalise else None
        total = sum(widths)
        bound = 1.0 / math.sqrt(total)
        self.weight = nn.Parameter(torch.empty(num_classes, total).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, multimodal: list[torch.Tensor]) -> torch.Tensor:
        if self.norms is not None:
            multimodal = [norm(features) for norm, features in zip(self.norms, multimodal)]
        features = torch.cat(multimodal, dim=-1)  # B C sum(d_i)
        return (features * self.weight).sum(dim=-1) + self.bias  # B C

    def deployable(self) -> "ExportHead":
        """The same head for export, without the aten.sum XNNPACK does not delegate (ExportHead)."""
        return ExportHead(self)


class ExportHead(nn.Module):
    """CSA's per-class scores <w_c, s_c> + b_c as mul and a linear layer of ones."""

    def __init__(self, head: CrossScaleAggregation):
        super().__init__()
        self.weight, self.bias = constant(head.weight), constant(head.bias)
        self.register_buffer("ones", torch.ones(1, head.weight.shape[1]))
        self.norms = None if head.norms is None else nn.ModuleList(
            TokenNorm(norm.normalized_shape[0], norm.eps, norm.weight, norm.bias) for norm in head.norms)

    def forward(self, multimodal: list[torch.Tensor]) -> torch.Tensor:
        if self.norms is not None:
            multimodal = [norm(features) for norm, features in zip(self.norms, multimodal)]
        features = torch.cat(multimodal, dim=-1)  # B C sum(d_i)
        return F.linear(features * self.weight, self.ones).reshape(-1, self.bias.shape[0]) + self.bias  # B C
