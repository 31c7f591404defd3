"""The one training step (hsvlt.engine) on hsvlt_pico at 32 px: what every trainer of the project relies on."""

import copy

import pytest
import torch

from hsvlt.engine import Engine
from hsvlt.labels import load_label_set
from hsvlt.losses import BCELoss
from hsvlt.models import create_model
from hsvlt.run_log import TrainingWatch
from hsvlt.train import TrainConfig


@pytest.fixture
def batch():
    torch.manual_seed(0)
    model = create_model("hsvlt_pico", torch.from_numpy(load_label_set("shapes").embeddings), img_size=32)
    images, targets = torch.rand(4, 3, 32, 32), (torch.rand(4, 10) < 0.3).float()
    return model, images, targets


def parameters(model):
    return [p.detach().clone() for p in model.parameters()]


def test_a_non_finite_loss_stops_before_the_weights_change(batch):
    model, images, targets = batch
    engine = Engine(model, BCELoss(), torch.optim.AdamW(model.parameters(), lr=1e-3))
    before = parameters(model)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        engine.step(images, targets)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_configured_step_clips_schedules_and_averages(batch):
    """for_config: warm-up, then the plateau schedule's (the per-step schedule stops), clipped gradients, EMA, and
    the label tokens recorded on the guardrail's steps."""
    model, images, targets = batch
    config = TrainConfig(model="hsvlt_pico", schedule="plateau", warmup_epochs=1, epochs=4, ema=0.5, clip_grad=1e-3,
                         no_amp=True).resolved()
    engine = Engine.for_config(model, config, steps_per_epoch=2, watch=TrainingWatch(None))
    start = parameters(model)
    rates = [engine.learning_rate]
    for _ in range(4):
        engine.step(images, targets)
        rates.append(engine.learning_rate)
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        assert norm <= config.clip_grad * 1.001
    assert rates == [config.lr / 2] + [config.lr] * 4 and engine.schedule.last_epoch == 2
    assert set(engine.watch.label_scale) == {"0", "1", "2", "3"}  # step 0 is one of every LABEL_SCALE_EVERY
    averaged = dict(engine.ema.module.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(start, model.parameters()))
    assert any(not torch.equal(p, averaged[name]) for name, p in model.named_parameters())


def test_distillation_from_an_identical_teacher_adds_nothing(batch):
    model, images, targets = batch
    model.eval()  # no stochastic depth: the teacher computes what the student does
    teacher = copy.deepcopy(model)
    labels_only, _ = Engine(model, BCELoss()).forward(images, targets)
    half, _ = Engine(model, BCELoss(), teacher=teacher, distill=0.5).forward(images, targets)
    torch.testing.assert_close(half, 0.5 * labels_only)
