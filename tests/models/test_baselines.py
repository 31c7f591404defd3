"""The ablation baselines (config.fusion "late" and "none"): built by build_model(config), trained, saved and
exported like HSVLT itself."""

import copy

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hsvlt.checkpoint import load_model, save_checkpoint
from hsvlt.deploy.wrapper import for_export
from hsvlt.models import HSVLT, HSVLTConfig, MultiLabelClassifier, build_model, create_model
from hsvlt.models.baselines import LateFusionHSVLT, PooledClassifier

torch.set_flush_denormal(True)
TINY = HSVLTConfig(preset="tiny-test", depths=(1, 1, 2, 2), widths=(16, 32, 48, 64), img_size=64)
CLASSES = {"ivla": HSVLT, "late": LateFusionHSVLT, "none": PooledClassifier}


def embeddings(classes: int = 5, dim: int = 384) -> torch.Tensor:
    return torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))


def build(fusion: str, **overrides) -> MultiLabelClassifier:
    return build_model(HSVLTConfig(**{**TINY.__dict__, "fusion": fusion, **overrides}), embeddings())


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_config_picks_the_baseline_and_logits_have_the_right_shape(fusion):
    model = build(fusion).eval()
    assert type(model) is CLASSES[fusion] and isinstance(model, MultiLabelClassifier)
    with torch.no_grad():
        logits = model(torch.rand(3, 3, 64, 64))
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_gradients_reach_every_parameter(fusion):
    """As for HSVLT: zero-initialised gates pass gradient to their inner layers from the second step on."""
    model = build(fusion)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, reached = torch.rand(2, 3, 64, 64), set()
    for _ in range(2):
        optimizer.zero_grad()
        model(images).sum().backward()
        reached |= {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    assert reached == {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_backbone_parameters_keep_hsvlt_names_and_shapes(fusion):
    """So ImageNet weights, backbone learning rates and frozen stages apply to the baselines unchanged."""

    def backbone(model):
        return {name: p.shape for name, p in model.named_parameters() if ".visual." in name or ".downsample." in name}

    assert backbone(build(fusion)) == backbone(build("ivla"))


def test_late_fusion_meets_the_labels_after_the_last_stage_only():
    model = build("late")
    assert all(not hasattr(block, "cross_attention") for stage in model.stages for block in stage.blocks)
    assert len(model.interaction) == TINY.depths[-1]
    assert model.language_projections[0].out_features == TINY.widths[-1]
    with torch.no_grad():
        logits, (attention,) = model.eval()(torch.rand(2, 3, 64, 64), return_attention=True)
    assert attention.shape == (2, 1, 5, 2, 2)  # stride 32
    torch.testing.assert_close(attention.flatten(3).sum(-1), torch.ones(2, 1, 5))


def test_late_fusion_sees_labels_and_pooling_does_not():
    images = torch.rand(2, 3, 64, 64)
    for fusion, depends in (("late", True), ("none", False)):
        torch.manual_seed(0)
        model = build(fusion).eval()
        other = copy.deepcopy(model)
        other.label_embeddings.copy_(torch.randn_like(other.label_embeddings))
        with torch.no_grad():
            changed = not torch.allclose(model(images), other(images))
        assert changed == depends, fusion


def test_pooled_classifier_has_no_attention_to_return():
    with pytest.raises(ValueError, match="no label-to-pixel attention"):
        build("none")(torch.rand(1, 3, 64, 64), return_attention=True)


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_checkpoint_round_trip_rebuilds_the_same_baseline(tmp_path, fusion):
    model = build(fusion).eval()
    path = tmp_path / "best.pt"
    save_checkpoint({"config": model.config.to_dict(), "labels": list("abcde"), "model": model.state_dict()}, path)
    loaded, checkpoint = load_model(path)
    assert type(loaded) is CLASSES[fusion] and checkpoint["config"]["fusion"] == fusion
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_ema_copy_and_deployable_wrapper(fusion):
    model = build(fusion).eval()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    assert type(ema.module) is CLASSES[fusion]
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(for_export(model)(images), torch.sigmoid(model(images)))


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_baseline_learns_a_batch(fusion):
    torch.manual_seed(0)
    model = build(fusion)
    images, targets = torch.rand(8, 3, 64, 64), (torch.rand(8, 5) < 0.4).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, losses[::10]


@pytest.mark.parametrize("fusion", ["late", "none"])
def test_baselines_build_on_the_efficientnet_lite0_backbone(fusion):
    model = create_model("hsvlt_lite0", embeddings(), fusion=fusion, img_size=64).eval()
    assert type(model) is CLASSES[fusion]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 5)


def test_bad_fusion_and_stage_choices_are_clear_errors():
    with pytest.raises(ValueError, match="unknown fusion 'early'"):
        HSVLTConfig(fusion="early")
    with pytest.raises(ValueError, match=r"aggregate_stages \(4,\) must name stages 0-3"):
        HSVLTConfig(aggregate_stages=(4,))
