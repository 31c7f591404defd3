import pytest
import torch

from hsvlt.models import HSVLT, PRESETS, HSVLTConfig, create_model
from hsvlt.models.ivla import IVLABlock

torch.set_flush_denormal(True)
TINY = HSVLTConfig(preset="tiny-test", depths=(1, 1, 2, 1), widths=(16, 32, 48, 64), img_size=64)


def embeddings(classes: int = 5, dim: int = 384) -> torch.Tensor:
    return torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_logits_and_attention_per_stage(preset):
    model = create_model(preset, embeddings(7)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, attention = model(images, return_attention=True)
    assert logits.shape == (2, 7)
    strides = (4, 8, 16, 32)
    heads = model.config.num_heads
    assert [tuple(a.shape) for a in attention] == [(2, heads, 7, 64 // s, 64 // s) for s in strides]
    assert torch.isfinite(logits).all()


def test_small_matches_the_paper_parameter_count():
    model = create_model("hsvlt_small", embeddings(80), language_update="paper")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 97.2e6) / 97.2e6 < 0.03, count


@pytest.mark.parametrize("heads", [1, 4])
def test_attention_of_each_label_sums_to_one_over_positions(heads):
    model = HSVLT(HSVLTConfig(**{**TINY.__dict__, "num_heads": heads}), embeddings()).eval()
    with torch.no_grad():
        _, attention = model(torch.rand(3, 3, 64, 64), return_attention=True)
    for stage in attention:
        assert stage.shape[1] == heads
        sums = stage.flatten(3).sum(-1)  # B heads C
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert (stage >= 0).all()


def test_gradients_reach_every_learnable_parameter():
    """Zero-initialised gates give their inner layers a gradient from the second step on: take one SGD step,
    then every parameter must have received a gradient in step one or step two."""
    model = HSVLT(TINY, embeddings())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.rand(2, 3, 64, 64)
    reached = set()
    for _ in range(2):
        optimizer.zero_grad()
        model(images).sum().backward()
        reached |= {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    assert sorted(set(dict(model.named_parameters())) - reached) == []
    assert "label_embeddings" not in dict(model.named_parameters())  # a constant buffer
    assert "label_embeddings" in model.state_dict()


def test_visual_feedback_starts_as_the_reference_and_then_learns():
    reference = HSVLT(TINY, embeddings()).eval()
    feedback = HSVLT(HSVLTConfig(**{**TINY.__dict__, "visual_feedback": True}), embeddings()).eval()
    missing = feedback.load_state_dict(reference.state_dict(), strict=False).missing_keys
    assert missing and all(".feedback." in key for key in missing)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(feedback(images), reference(images), rtol=0, atol=0)
    feedback.train()
    feedback(images).sum().backward()
    projections = [m.feedback.attention.proj.weight for m in feedback.modules()
                   if isinstance(m, IVLABlock) and m.feedback is not None]
    assert len(projections) == sum(TINY.depths) - 1  # the last block's V is not used after it
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projections)


def test_aggregating_fewer_stages_narrows_the_head():
    model = HSVLT(HSVLTConfig(**{**TINY.__dict__, "aggregate_stages": (3,)}), embeddings())
    assert model.head.weight.shape == (5, 64)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 5)


def test_config_round_trips_through_a_dict():
    config = PRESETS["hsvlt_tiny"]
    assert HSVLTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown HSVLT config keys"):
        HSVLTConfig.from_dict({**config.to_dict(), "colour": 3})


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'hsvlt_huge'"):
        create_model("hsvlt_huge", embeddings())


def test_a_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = HSVLT(TINY, embeddings(6))
    images = torch.rand(8, 3, 64, 64)
    targets = (torch.rand(8, 6) < 0.4).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]
