"""HSVLT.deployable / hsvlt.deploy.wrapper.for_export: same outputs as the trained model, whole graph inside XNNPACK."""

from dataclasses import fields, replace

import pytest
import torch

from hsvlt.deploy.wrapper import AsTrainedHSVLT, for_export, trace
from hsvlt.export.to_executorch import lower
from hsvlt.models import create_model
from hsvlt.models.deployable import Rewrites

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
MAX_OPS_OUTSIDE = 2  # operators the XNNPACK delegate may leave to the portable kernels (today: none)


def perturbed(preset: str, img_size: int, **overrides):
    """A model whose every branch matters: open gates and layer scales, non-trivial norms and BN statistics."""
    torch.manual_seed(0)
    model = create_model(preset, torch.randn(6, 384), img_size=img_size, **overrides)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                base = 1.0 if name.endswith(("norm.weight", "bn.weight", "1.weight")) else 0.0
                parameter.normal_(0.0, 0.2).add_(base)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.2)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        model.head.weight.mul_(8.0)
    return model.eval()


CASES = {
    "pico": dict(preset="hsvlt_pico", img_size=64),
    "pico_heads_feedback": dict(preset="hsvlt_pico", img_size=64, num_heads=2, visual_feedback=True),
    "pico_no_pre_norm": dict(preset="hsvlt_pico", img_size=64, pre_norm=False),
    "lite0": dict(preset="hsvlt_lite0", img_size=64, visual_feedback=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rewritten_model_computes_what_the_trained_model_computes(case):
    model = perturbed(**CASES[case])
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected, expected_attention = AsTrainedHSVLT(model, attention_stage=1)(images)
        probabilities, attention = for_export(model, attention_stage=1)(images)
    assert expected.std() > 0.05  # the comparison is not between two constants
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(attention, expected_attention, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rewrite", [f.name for f in fields(Rewrites)])
def test_each_rewrite_alone_keeps_the_math(rewrite):
    model = perturbed(**CASES["lite0"] if rewrite == "batch_norm" else CASES["pico_heads_feedback"])
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = AsTrainedHSVLT(model)(images)
        without = for_export(model, rewrites=replace(Rewrites(), **{rewrite: False}))(images)
    torch.testing.assert_close(without, expected, atol=1e-5, rtol=0)


def test_attention_projected_on_the_pixels_where_the_map_has_fewer_pixels_than_there_are_labels():
    # 6 labels; at 64 px the last map has 2 x 2 pixels. Two blocks there: the first one also feeds back.
    model = perturbed("hsvlt_pico", 64, depths=(1, 1, 1, 2), visual_feedback=True)
    images = torch.rand(3, 3, 64, 64)
    rewritten = for_export(model, attention_stage=3)
    pixel_side = [block.cross_attention.pixel_keys is not None for stage in rewritten.stages for block in stage]
    assert pixel_side == [False, False, False, True, True]
    with torch.no_grad():
        expected, expected_attention = AsTrainedHSVLT(model, attention_stage=3)(images)
        probabilities, attention = rewritten(images)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(attention, expected_attention, atol=1e-6, rtol=0)


def test_logits_output_and_the_trained_model_left_unchanged():
    model = perturbed(**CASES["lite0"])
    before = {key: value.clone() for key, value in model.state_dict().items()}
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits = for_export(model, logits=True)(images)
        torch.testing.assert_close(torch.sigmoid(logits), AsTrainedHSVLT(model)(images), atol=1e-5, rtol=0)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # folding worked on a copy


DELEGATION_CASES = {
    # The two edge presets with their real layouts (depths, widths, heads); 64 px keeps lowering quick, and the
    # operators do not depend on the image size.
    "hsvlt_nano": dict(preset="hsvlt_nano", img_size=64),
    "hsvlt_lite0": dict(preset="hsvlt_lite0", img_size=64),
    # With a dynamic batch: the attention of the last stage projected on the pixels (2 x 2 pixels, 6 labels), and
    # the options the presets leave off: several heads and the visual feedback path.
    "pico": dict(preset="hsvlt_pico", img_size=64),
    "pico_heads_feedback": dict(preset="hsvlt_pico", img_size=64, num_heads=2, visual_feedback=True),
}


@pytest.mark.parametrize("case", sorted(DELEGATION_CASES))
def test_graph_runs_inside_xnnpack(case):
    """get_delegation_info on the lowered program: one XNNPACK subgraph, (almost) nothing left outside it."""
    model = perturbed(**DELEGATION_CASES[case])
    max_batch = 4 if case.startswith("pico") else None
    program = trace(for_export(model, attention_stage=2), 64, max_batch)
    _, summary = lower(program)
    assert summary["ops_outside"] <= MAX_OPS_OUTSIDE, summary["outside_by_op"]
    assert summary["subgraphs"] == 1 and summary["backends"] == ["XnnpackBackend"]
    assert summary["delegated_ops"] > 100  # the whole model, not an empty graph
