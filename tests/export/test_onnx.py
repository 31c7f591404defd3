"""export/to_onnx.py: a dynamic-batch ONNX file that ONNX Runtime runs, matching PyTorch."""

import numpy as np
import onnx
import pytest

from hsvlt.checkpoint import load_source
from hsvlt.deploy.manifest import read_manifest
from hsvlt.deploy.runtimes import OnnxModel, TorchModel
from hsvlt.export import to_onnx
from hsvlt.export.parity import scene_images

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = to_onnx.main(["--ckpt", str(checkpoint), "--out", str(out), "--attention-stage", "2",
                           "--parity-images", "8"])
    return out, result


def test_file_has_a_dynamic_batch_and_named_outputs(exported):
    out, result = exported
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic, not a number
    assert [o.name for o in graph.output] == ["probabilities", "attention"]
    assert result["parity"]["max_abs_diff"] < 1e-4 and result["parity"]["label_set_agreement"] == 1.0


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, checkpoint, batch):
    out, _ = exported
    images = scene_images(batch, load_source(checkpoint).img_size)
    output = OnnxModel(out).run(images)
    reference = TorchModel(checkpoint, attention_stage=2).run(images)
    assert output.probabilities.shape == (batch, 10) and output.attention.shape == (batch, 10, 2, 2)
    np.testing.assert_allclose(output.probabilities, reference.probabilities, atol=1e-4)
    np.testing.assert_allclose(output.attention, reference.attention, atol=1e-5)


def test_manifest_matches_the_outputs(exported, checkpoint):
    out, _ = exported
    manifest = read_manifest(out)
    model = OnnxModel(out)
    output = model.run(scene_images(2, load_source(checkpoint).img_size))
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    assert shapes["probabilities"][1:] == list(output.probabilities.shape[1:])
    assert shapes["attention"][1:] == list(output.attention.shape[1:])
    assert manifest["format"] == "onnx" and manifest["attention_stage"] == 2
    assert model.labels == manifest["labels"] and model.input_size == 32


def test_map_through_onnx_runtime_equals_pytorch(exported, checkpoint):
    from hsvlt.export import evaluate_artifact

    out, _ = exported
    from_file = evaluate_artifact.main(["--model", str(out), "--limit", "16", "--batch-size", "5"])
    from_pytorch = evaluate_artifact.main(["--model", str(checkpoint), "--limit", "16"])
    assert from_file["at_0.5"]["num_images"] == 16
    assert from_file["at_0.5"]["mAP"] == pytest.approx(from_pytorch["at_0.5"]["mAP"], abs=1e-3)
