"""Cross-Scale Aggregation (CSA) and the per-class head."""

import math

import torch
from torch import nn


class CrossScaleAggregation(nn.Module):
    """Concatenate the multi-modal features S of several stages along channels and score each class
    with its own weight vector: logit_c = <w_c, s_c> + b_c."""

    def __init__(self, widths: list[int], num_classes: int):
        super().__init__()
        total = sum(widths)
        bound = 1.0 / math.sqrt(total)
        self.weight = nn.Parameter(torch.empty(num_classes, total).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, multimodal: list[torch.Tensor]) -> torch.Tensor:
        features = torch.cat(multimodal, dim=-1)  # B C sum(d_i)
        return (features * self.weight).sum(dim=-1) + self.bias  # B C
