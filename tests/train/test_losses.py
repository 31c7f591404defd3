"""hsvlt/losses.py against hand-computed values."""

import math

import pytest
import torch

from hsvlt.losses import AsymmetricLoss, BCELoss, distillation_loss


def test_bce_skips_ignored_targets_sums_classes_and_averages_the_batch():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 3.0]])
    targets = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    expected = (-math.log(0.5) - math.log(1 - 1 / (1 + math.e)) - math.log(1 - 1 / (1 + math.exp(-1.0)))
                - math.log(0.5)) / 2
    assert BCELoss()(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_asl_without_focusing_or_clipping_is_bce():
    logits, targets = torch.randn(4, 5), (torch.rand(4, 5) > 0.5).float()
    targets[0, 0] = -1
    asl = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    assert asl(logits, targets).item() == pytest.approx(BCELoss()(logits, targets).item(), rel=1e-5)


def test_distillation_is_the_binary_kl_to_the_teacher():
    teacher, student = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 1.0]])
    p, q = torch.sigmoid(teacher)[0], torch.sigmoid(student)[0]
    expected = sum(pi * math.log(pi / qi) + (1 - pi) * math.log((1 - pi) / (1 - qi)) for pi, qi in zip(p, q))
    assert distillation_loss(student, teacher).item() == pytest.approx(float(expected), rel=1e-5)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_pulls_the_student_towards_the_teacher():
    teacher = torch.tensor([[3.0, -2.0, 0.5]])
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert torch.equal(torch.sign(-student.grad), torch.sign(teacher))
