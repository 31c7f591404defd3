"""Multi-label losses that skip ignored targets (-1). Both sum over classes and average over the batch."""

import torch
import torch.nn.functional as F
from torch import nn


class BCELoss(nn.Module):
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mask = (targets >= 0).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0), weight=mask, reduction="sum")
        return loss / logits.shape[0]


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al., ICCV 2021): focusing gamma_neg on negatives, none on positives, and probability
    shifting by `clip` that discards very easy negatives. Defaults are the HSVLT reference's."""

    def __init__(self, gamma_neg: float = 1.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        mask = (targets >= 0).float()
        positive = targets.clamp(min=0).float()
        prob = torch.sigmoid(logits)
        prob_neg = (prob - self.clip).clamp(min=0)  # shifted probability of a negative being called positive
        loss_pos = positive * torch.log(prob.clamp(min=self.eps)) * (1 - prob) ** self.gamma_pos
        loss_neg = (1 - positive) * torch.log((1 - prob_neg).clamp(min=self.eps)) * prob_neg**self.gamma_neg
        return -((loss_pos + loss_neg) * mask).sum() / logits.shape[0]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Binary KL divergence from the teacher's per-class probabilities to the student's, summed over classes and
    averaged over the batch like the losses above; 0 when the student matches the teacher. Every class counts,
    ignored ones included: the teacher has an opinion on each."""
    teacher = torch.sigmoid(teacher_logits.float())
    cross_entropy = F.binary_cross_entropy_with_logits(student_logits.float(), teacher, reduction="sum")
    teacher_entropy = F.binary_cross_entropy_with_logits(teacher_logits.float(), teacher, reduction="sum")
    return (cross_entropy - teacher_entropy) / student_logits.shape[0]


LOSSES = {"bce": BCELoss, "asl": AsymmetricLoss}  # the names --loss takes


def build_loss(name: str) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]()
