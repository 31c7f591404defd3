"""export/to_executorch.py: a .pte that the ExecuTorch runtime runs, matching PyTorch, fully delegated."""

import warnings

import numpy as np
import pytest
import torch

from hsvlt.bench import op_profile
from hsvlt.bench.measure import cpu_threads
from hsvlt.checkpoint import file_sha256, load_source
from hsvlt.deploy.manifest import read_manifest
from hsvlt.deploy.runtimes import ExecuTorchModel, TorchModel
from hsvlt.export import evaluate_artifact, to_executorch
from hsvlt.export.parity import scene_images

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
MAX_OPS_OUTSIDE = 2


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("pte") / "model.pte"
    result = to_executorch.main(["--ckpt", str(checkpoint), "--out", str(out), "--attention-stage", "1",
                                 "--parity-images", "8", "--max-batch", "4"])
    return out, result


def test_the_graph_runs_inside_the_xnnpack_delegate(exported):
    _, result = exported
    assert result["delegation"]["ops_outside"] <= MAX_OPS_OUTSIDE, result["delegation"]["outside_by_op"]
    assert result["delegation"]["subgraphs"] == 1 and result["delegation"]["backends"] == ["XnnpackBackend"]


def test_exporter_reports_parity_with_pytorch(exported):
    _, result = exported
    assert result["parity"]["images"] == 8
    assert result["parity"]["max_abs_diff"] < 1e-4
    assert result["parity"]["label_set_agreement"] == 1.0


@pytest.mark.parametrize("batch", [1, 3])
def test_runtime_outputs_match_pytorch(exported, checkpoint, batch):
    """Batch 1 (the camera) and a batch of 3 in one call, against the trained model in eager PyTorch."""
    out, _ = exported
    source = load_source(checkpoint)
    images = scene_images(batch, source.img_size)
    program = ExecuTorchModel(out)
    reference = TorchModel(checkpoint, attention_stage=1).run(images)
    output = program.run(images)
    assert output.probabilities.shape == (batch, 10)
    assert output.attention.shape == (batch, 10, 4, 4)  # stage 1: stride 8 on 32 px
    np.testing.assert_allclose(output.probabilities, reference.probabilities, atol=1e-4)
    np.testing.assert_allclose(output.attention, reference.attention, atol=1e-5)
    np.testing.assert_allclose(output.attention.sum(axis=(2, 3)), 1.0, atol=1e-4)


def test_larger_batches_run_in_chunks(exported, checkpoint):
    out, _ = exported
    images = scene_images(6, load_source(checkpoint).img_size)
    program = ExecuTorchModel(out)
    assert program.max_batch == 4
    whole = program.run(images).probabilities
    one_by_one = np.concatenate([program.run(images[i:i + 1]).probabilities for i in range(6)])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-6)


def test_manifest_describes_the_program(exported, checkpoint):
    out, _ = exported
    manifest = read_manifest(out)
    checkpoint_state = torch.load(checkpoint, weights_only=True)
    assert manifest["labels"] == checkpoint_state["labels"]
    assert manifest["thresholds"] == pytest.approx(checkpoint_state["thresholds"])
    assert manifest["preset"] == "hsvlt_pico" and manifest["precision"] == "fp32"
    assert manifest["checkpoint_sha256"] == file_sha256(checkpoint)
    assert manifest["input"]["shape"] == ["N", 3, 32, 32]
    outputs = {o["name"]: o["shape"] for o in manifest["outputs"]}
    program = ExecuTorchModel(out).run(scene_images(1, load_source(checkpoint).img_size))
    assert outputs["probabilities"][1:] == list(program.probabilities.shape[1:])
    assert outputs["attention"][1:] == list(program.attention.shape[1:])


def test_map_through_the_runtime_equals_pytorch(exported, checkpoint):
    out, _ = exported
    from_program = evaluate_artifact.main(["--model", str(out), "--limit", "16"])
    from_pytorch = evaluate_artifact.main(["--model", str(checkpoint), "--limit", "16"])
    assert from_program["at_0.5"]["num_images"] == 16
    assert from_program["at_0.5"]["mAP"] == pytest.approx(from_pytorch["at_0.5"]["mAP"], abs=1e-3)


def test_core_ml_backend_gives_a_core_ml_delegated_program(checkpoint, tmp_path):
    """--backend coreml: the whole graph in one Core ML delegate (for iOS / macOS). This runtime can run it only
    where it has the Core ML backend (Apple platforms); there the exporter also checks parity."""
    from executorch.runtime import Runtime

    out = tmp_path / "model_coreml.pte"
    result = to_executorch.main(["--ckpt", str(checkpoint), "--out", str(out), "--backend", "coreml",
                                 "--parity-images", "4"])
    delegation = result["delegation"]
    assert delegation["backends"] == ["CoreMLBackend"] and delegation["subgraphs"] == 1
    assert delegation["ops_outside"] <= MAX_OPS_OUTSIDE, delegation["outside_by_op"]
    assert out.stat().st_size > 100_000  # the weights travel inside the Core ML blob
    manifest = read_manifest(out)
    assert manifest["format"] == "executorch-coreml" and manifest["precision"] == "fp16"
    assert manifest["max_batch"] == 1
    if Runtime.get().backend_registry.is_available("CoreMLBackend"):
        assert result["parity"]["label_set_agreement"] >= 0.75 and result["parity"]["max_abs_diff"] < 2e-2
    else:
        assert result["parity"] is None


def test_op_profile_accounts_for_the_delegate_call(exported):
    """reports/op_profile.py: the delegate's operators, by kind, from a real ETDump; their times fit in the call."""
    out, _ = exported
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = op_profile.profile(out, threads=cpu_threads(), runs=3)
    assert not [str(w.message) for w in caught if issubclass(w.category, UserWarning)]  # the toolchain's are hidden
    counts = {kind: count for kind, count, _ in result["kinds"]}
    assert counts["Fully Connected (NC, F32) GEMM"] > 0 and counts["Softmax (NC, F32)"] > 0
    operators_ms = sum(ms for _, _, ms in result["kinds"])
    assert 0 < operators_ms <= result["delegate_ms"]
    assert "| Fully Connected (NC, F32) GEMM |" in op_profile.format_profile(result)
