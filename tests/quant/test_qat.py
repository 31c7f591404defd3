"""quant/: PT2E QAT and PTQ on a tiny model, the int8 artifact, and its lowering."""

import copy
import math

import numpy as np
import pytest
import torch

from hsvlt.checkpoint import file_sha256, load_source
from hsvlt.deploy.manifest import read_manifest
from hsvlt.deploy.runtimes import ExecuTorchModel, TorchModel
from hsvlt.export import to_coreml, to_executorch
from hsvlt.export.parity import scene_images
from hsvlt.models import create_model
from hsvlt.quant import qat
from hsvlt.quant.pt2e import (
    capture,
    convert,
    freeze_batch_norm,
    freeze_observers,
    load_artifact,
    prepare,
    train_mode,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")
MAX_OPS_OUTSIDE = 2


def quantise(checkpoint, out, *extra):
    return qat.main(["--ckpt", str(checkpoint), "--out", str(out), "--workers", "0", "--batch-size", "8",
                     "--train-size", "32", "--val-size", "16", *extra])


@pytest.fixture(scope="module")
def qat_artifact(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "qat.pt2"
    # A learning rate this small keeps the weights where they are: the int8 model is then comparable with the
    # fp32 checkpoint (the schedule, freezing, per-epoch conversion and best-epoch choice all still run).
    figures = quantise(checkpoint, out, "--epochs", "2", "--max-steps", "3", "--freeze-observers-after", "1",
                       "--lr", "1e-7", "--distill", "0.5")
    return out, figures


def test_qat_keeps_the_best_epoch_and_records_it(qat_artifact):
    _, figures = qat_artifact
    assert figures["method"] == "qat" and [e["epoch"] for e in figures["log"]] == [1, 2]
    assert figures["val_mAP_int8"] == max(e["int8_mAP"] for e in figures["log"])
    assert figures["float_layers"] == ["norms"]  # the default: LayerNorm statistics float
    assert figures["distill"] == 0.5 and all(math.isfinite(e["loss"]) for e in figures["log"])


@pytest.mark.parametrize("batch", [1, 3])
def test_artifact_loads_and_runs_close_to_fp32(qat_artifact, checkpoint, batch):
    path, _ = qat_artifact
    program, manifest = load_artifact(path)
    assert manifest["precision"] == "int8" and manifest["checkpoint_sha256"] == file_sha256(checkpoint)
    images = scene_images(batch, load_source(checkpoint).img_size)
    with torch.no_grad():
        int8 = program.module()(torch.from_numpy(images)).numpy()
    fp32 = TorchModel(checkpoint).run(images).probabilities
    assert int8.shape == (batch, 10)
    assert np.abs(int8 - fp32).max() < 0.15  # a 16-channel random model: int8 steps are coarse
    assert np.abs(int8 - fp32).mean() < 0.04


def test_int8_program_lowers_whole_and_matches_its_artifact(qat_artifact, checkpoint, tmp_path):
    path, _ = qat_artifact
    out = tmp_path / "int8.pte"
    result = to_executorch.main(["--ckpt", str(checkpoint), "--int8", str(path), "--out", str(out),
                                 "--parity-images", "4"])
    assert result["delegation"]["ops_outside"] <= MAX_OPS_OUTSIDE, result["delegation"]["outside_by_op"]
    images = scene_images(3, load_source(checkpoint).img_size)
    program, _ = load_artifact(path)
    with torch.no_grad():
        expected = program.module()(torch.from_numpy(images)).numpy()
    runtime = ExecuTorchModel(out)
    # XNNPACK's int8 kernels round like the reference q/dq graph up to a step here and there: on this random
    # 16-channel model a step moves a probability by up to a few hundredths (mean 0.009-0.011 on these scenes).
    for batch in (1, 3):
        difference = np.abs(runtime.run(images[:batch]).probabilities - expected[:batch])
        assert difference.max() < 0.06 and difference.mean() < 0.02
    assert runtime.manifest["precision"] == "int8"
    quantization = runtime.manifest["quantization"]  # the artifact's summary, without its run's figures
    assert {**load_artifact(path)[1]["quantization"], "figures": None} == quantization
    assert (quantization["method"], quantization["activations"]) == ("qat", "int8")


def test_int8_program_converts_to_core_ml_with_int8_weights(qat_artifact, checkpoint, tmp_path):
    path, _ = qat_artifact
    out = tmp_path / "int8.mlpackage"
    to_coreml.main(["--ckpt", str(checkpoint), "--int8", str(path), "--out", str(out), "--parity-images", "0"])
    assert set(to_coreml.QUANTIZED_WEIGHT_OPS) & to_coreml.inspect_package(out)["ops"]
    manifest = read_manifest(out)
    assert manifest["precision"] == "int8" and manifest["quantization"]["method"] == "qat"


def test_artifact_of_another_checkpoint_is_refused(qat_artifact, checkpoint, checkpoint_maker, tmp_path):
    other = checkpoint_maker(tmp_path / "other.pt", seed=1)
    path, _ = qat_artifact
    with pytest.raises(ValueError, match="quantised from another checkpoint"):
        to_executorch.main(["--ckpt", str(other), "--int8", str(path), "--out", str(tmp_path / "x.pte")])


def test_ptq_baseline(checkpoint, tmp_path):
    figures = quantise(checkpoint, tmp_path / "ptq.pt2", "--ptq", "--calibration-images", "16")
    assert figures["method"] == "ptq" and figures["epochs"] == 0
    program, manifest = load_artifact(tmp_path / "ptq.pt2")
    assert manifest["quantization"]["method"] == "ptq"


def test_float_layers_stay_float(checkpoint):
    """With "norms" float, no statistics convolution of ChannelNorm takes int8 weights; without, they do."""
    graph = capture(load_source(checkpoint).model, qat=False)
    for float_layers, int8_norms in (((), True), (("norms",), False)):
        prepared = prepare(copy.deepcopy(graph), qat=False, float_layers=float_layers)
        prepared(torch.rand(2, 3, 32, 32))
        converted = convert(prepared)
        norm_convs = [n for n in converted.graph.nodes if n.target == torch.ops.aten.conv2d.default
                      and any("ChannelNorm" in str(kind) for _, kind in n.meta.get("nn_module_stack", {}).values())]
        dequantised = ["dequantize" in str(getattr(n.args[1], "target", "")) for n in norm_convs]
        assert norm_convs and any(dequantised) == int8_norms, float_layers


def test_quantised_variance_of_zero_stays_finite():
    """int8 rounds the small variances of a tensor with a wide range to 0: the norms clamp before rsqrt, so
    fake quantisation (QAT) gives finite outputs where rsqrt(0) used to give inf and a NaN loss."""
    from hsvlt.models.deployable import ChannelNorm, TokenNorm

    for norm, example in ((TokenNorm(8, 1e-6), torch.randn(2, 5, 8)), (ChannelNorm(8, 1e-6), torch.randn(2, 8, 4, 4))):
        graph = torch.export.export(norm, (example,)).module()
        prepared = prepare(graph, qat=True, float_layers=())  # the norms int8: the case the clamp guards
        tokens = example.clone()
        tokens[0] *= 1e6  # one sample's variance sets the scale; the other's rounds to 0
        assert torch.isfinite(prepared(tokens)).all(), type(norm).__name__


def test_observer_and_batch_norm_freezing():
    torch.manual_seed(0)
    model = create_model("hsvlt_lite0", torch.randn(4, 384), img_size=32).eval()
    prepared = prepare(capture(model, qat=True), qat=True)
    train_mode(prepared, True)
    assert freeze_batch_norm(prepared) > 0
    assert freeze_batch_norm(prepared) == 0  # all frozen already
    freeze_observers(prepared)
    fake_quantizers = [m for m in prepared.modules() if hasattr(m, "observer_enabled")]
    assert fake_quantizers and all(int(m.observer_enabled) == 0 for m in fake_quantizers)
    statistics = {k: v.clone() for k, v in prepared.state_dict().items() if "running_mean" in k}
    prepared(torch.rand(4, 3, 32, 32))
    assert statistics and all(torch.equal(v, prepared.state_dict()[k]) for k, v in statistics.items())


def test_fake_quantised_graph_trains():
    """QAT's premise: gradients flow through the fake quantisers into the weights, and the loss falls."""
    torch.manual_seed(0)
    model = create_model("hsvlt_pico", torch.randn(4, 384), img_size=32).eval()
    prepared = prepare(capture(model, qat=True), qat=True)
    train_mode(prepared, True)
    images, targets = torch.rand(8, 3, 32, 32), (torch.rand(8, 4) > 0.5).float()
    optimizer = torch.optim.AdamW(prepared.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(prepared(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses  # without gradients it would not move at all


@pytest.mark.parametrize("problem", ["missing checkpoint", "wrong suffix"])
def test_command_line_errors_are_one_line(problem, checkpoint, tmp_path):
    ckpt = tmp_path / "gone.pt" if problem == "missing checkpoint" else checkpoint
    out = tmp_path / ("qat.pte" if problem == "wrong suffix" else "qat.pt2")
    expected = {
        "missing checkpoint": f"error: {ckpt}: checkpoint not found",
        "wrong suffix": f"error: {out}: output must end in .pt2",
    }[problem]
    with pytest.raises(SystemExit) as exit_info:
        qat.main(["--ckpt", str(ckpt), "--out", str(out)])
    assert str(exit_info.value.code) == expected


def test_distillation_weight_outside_0_1_is_a_usage_error(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        qat.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "qat.pt2"), "--distill", "1.5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: argument --distill: 1.5 is not between 0 and 1")
