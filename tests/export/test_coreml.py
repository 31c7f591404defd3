"""export/to_coreml.py: the package converts and saves here; on Linux it is reloaded without compiling and its
interface, metadata and operations are checked; on macOS it also predicts and is compared with PyTorch."""

import json
import platform

import numpy as np
import pytest

from hsvlt.checkpoint import load_source
from hsvlt.deploy.manifest import read_manifest
from hsvlt.export import to_coreml
from hsvlt.export.parity import scene_images

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


@pytest.fixture(scope="module")
def package(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml") / "HSVLT.mlpackage"
    to_coreml.main(["--ckpt", str(checkpoint), "--out", str(out), "--attention-stage", "1", "--parity-images", "0"])
    return out


def test_interface_is_an_image_in_and_probabilities_out(package):
    info = to_coreml.inspect_package(package)
    assert info["inputs"] == {"image": ("imageType", [3, 32, 32])}
    assert info["color"] == {"image": "RGB"}
    assert info["image_scale"] == pytest.approx(1 / 255)  # 0-255 pixels -> the model's [0, 1]
    assert info["outputs"] == {"probabilities": [1, 10], "attention": [1, 10, 4, 4]}
    assert info["minimum_ios"] == "iOS 17"
    assert all(info["descriptions"].values()) and set(info["descriptions"]) == {"model", "image", "probabilities",
                                                                                 "attention"}


def test_float16_by_default_and_float32_on_request(package, checkpoint, tmp_path):
    info = to_coreml.inspect_package(package)
    assert info["compute_types"] == {"FLOAT16"}
    assert not set(to_coreml.QUANTIZED_WEIGHT_OPS) & info["ops"]  # no int8 weights
    out = tmp_path / "HSVLT_fp32.mlpackage"
    to_coreml.main(["--ckpt", str(checkpoint), "--out", str(out), "--fp32", "--parity-images", "0"])
    assert to_coreml.inspect_package(out)["compute_types"] == {"FLOAT32"}
    assert read_manifest(out)["precision"] == "fp32" and read_manifest(out)["quantization"] is None


def test_metadata_carries_labels_thresholds_and_preset(package, checkpoint):
    metadata = to_coreml.inspect_package(package)["metadata"]
    source = load_source(checkpoint)
    assert json.loads(metadata["labels"]) == source.labels
    assert json.loads(metadata["thresholds"]) == pytest.approx(source.thresholds)
    assert metadata["preset"] == "hsvlt_pico" and metadata["input_size"] == "32"
    assert json.loads(metadata["manifest"]) == read_manifest(package)
    assert read_manifest(package)["precision"] == "fp16" and read_manifest(package)["quantization"] is None


def test_core_ml_weight_quantisation_gives_int8_weight_ops(checkpoint, tmp_path):
    out = tmp_path / "HSVLT_int8.mlpackage"
    to_coreml.main(["--ckpt", str(checkpoint), "--out", str(out), "--quantize-weights", "--parity-images", "0"])
    info = to_coreml.inspect_package(out)
    assert set(to_coreml.QUANTIZED_WEIGHT_OPS) & info["ops"]
    manifest = read_manifest(out)
    assert manifest["precision"] == "int8"  # the weights as stored; they compute in float16
    assert manifest["quantization"] == {"method": "weight-only", "weights": "int8", "activations": "fp16",
                                        "float_layers": None, "layers": None, "rewrites_off": None, "figures": None}
    assert json.loads(info["metadata"]["manifest"]) == manifest


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predicts on macOS only")
def test_core_ml_predictions_match_pytorch(package, checkpoint):
    from hsvlt.deploy.runtimes import TorchModel

    images = scene_images(4, load_source(checkpoint).img_size)
    np.testing.assert_allclose(to_coreml.run_coreml(package, images), TorchModel(checkpoint).run(images).probabilities,
                               atol=2e-2)
