"""The one manifest schema (hsvlt/deploy/manifest.py) as each exporter writes it, read back by the runtimes: here the
fp32 .onnx and .pte and the PTQ int8 .pte and .mlpackage; the fp16, fp32 and weight-only .mlpackage where
tests/export/test_coreml.py exports them, the QAT int8 .pte and .mlpackage where tests/quant/test_qat.py does.
Version-1 manifests still read; a malformed one or one of a later version is refused in one line naming the file."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hsvlt.checkpoint import file_sha256, load_source
from hsvlt.deploy.manifest import (
    MANIFEST_VERSION,
    ManifestError,
    manifest_path,
    precision_label,
    read_manifest,
    write_manifest,
)
from hsvlt.deploy.runtimes import open_model
from hsvlt.export import to_coreml, to_executorch
from hsvlt.quant import qat
from hsvlt.quant.pt2e import load_for_export

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")

# A manifest as version 1 wrote it (tests/web/make_golden.py's, for an hsvlt_pico at 64 px with the attention of
# stage 1: the model of the `models` fixture).
VERSION_1 = Path(__file__).with_name("version_1") / "model.onnx.json"
EVERY_KEY = {"manifest_version", "preset", "format", "precision", "quantization", "labels", "thresholds", "input",
             "normalization", "outputs", "attention_stage", "checkpoint_sha256", "data", "max_batch", "opset"}


@pytest.fixture(scope="module")
def ptq_program(checkpoint, tmp_path_factory):
    """ptq.pt2 of the 32 px checkpoint, made by quant/qat.py --ptq as cheaply as it runs. (The QAT program's
    .pte and .mlpackage manifests are checked where tests/quant/test_qat.py exports them.)"""
    out = tmp_path_factory.mktemp("int8") / "ptq.pt2"
    qat.main(["--ckpt", str(checkpoint), "--out", str(out), "--ptq", "--calibration-images", "8", "--workers", "0",
              "--batch-size", "8", "--train-size", "16", "--val-size", "16"])
    return out


def written(artifact: Path) -> dict:
    """The manifest beside `artifact` as it is on disk, with every key of the schema."""
    manifest = json.loads(manifest_path(artifact).read_text())
    assert set(manifest) == EVERY_KEY and manifest["manifest_version"] == MANIFEST_VERSION
    assert manifest == read_manifest(artifact)
    return manifest


def test_onnx_manifest_is_fp32_with_its_opset(models):
    manifest = written(models["onnx"])
    assert manifest["format"] == "onnx" and manifest["precision"] == "fp32" and manifest["quantization"] is None
    assert manifest["opset"] == 18 and manifest["max_batch"] is None and manifest["attention_stage"] == 1
    assert manifest["checkpoint_sha256"] == file_sha256(models["checkpoint"])
    assert open_model(models["onnx"]).labels == manifest["labels"]


def test_pte_manifest_of_the_fp32_program(models):
    manifest = written(models["pte"])
    assert manifest["format"] == "executorch-xnnpack" and manifest["precision"] == "fp32"
    assert manifest["quantization"] is None and manifest["max_batch"] == 1 and manifest["opset"] is None


def test_pte_manifest_says_how_the_int8_program_was_made(ptq_program, checkpoint, tmp_path):
    out = tmp_path / "ptq.pte"
    to_executorch.main(["--ckpt", str(checkpoint), "--int8", str(ptq_program), "--out", str(out),
                        "--parity-images", "0"])
    manifest = written(out)
    quantization = manifest["quantization"]
    assert manifest["format"] == "executorch-xnnpack" and manifest["precision"] == "int8"
    assert quantization["method"] == "ptq" and quantization["weights"] == "int8"
    assert quantization["activations"] == "int8" and quantization["float_layers"] == ["norms"]
    assert quantization["layers"]["conv"]["int8"] > 0
    assert quantization["figures"] is None  # the run's figures stay with the int8 program
    made = read_manifest(ptq_program)["quantization"]
    assert {**made, "figures": None} == quantization and made["figures"]["epochs"] == 0
    assert open_model(out).manifest == manifest


def test_mlpackage_manifest_of_a_ptq_program_says_ptq(ptq_program, checkpoint, tmp_path):
    """Version 1 said "qat-pt2e" for every int8 program. The same manifest is beside the package and in its
    metadata, beside the keys the Swift code reads; the package's version string names the precision. (fp16,
    fp32 and weight-only packages: tests/export/test_coreml.py; QAT: tests/quant/test_qat.py.)"""
    out = tmp_path / "HSVLT.mlpackage"
    to_coreml.main(["--ckpt", str(checkpoint), "--int8", str(ptq_program), "--out", str(out), "--parity-images", "0"])
    manifest = written(out)
    assert manifest["format"] == "coreml" and manifest["precision"] == "int8"
    assert manifest["max_batch"] is None and manifest["opset"] is None
    quantization = manifest["quantization"]
    assert (quantization["method"], quantization["activations"], quantization["float_layers"]) == ("ptq", "int8",
                                                                                                   ["norms"])
    package = to_coreml.inspect_package(out)
    metadata = package["metadata"]
    assert json.loads(metadata["manifest"]) == manifest
    assert json.loads(metadata["labels"]) == manifest["labels"] and metadata["preset"] == manifest["preset"]
    assert json.loads(metadata["thresholds"]) == manifest["thresholds"] and metadata["input_size"] == "32"
    assert precision_label(manifest) == "int8 (PTQ)"


def version_1(tmp_path: Path, name: str, **keys) -> Path:
    """An artifact name in tmp_path with VERSION_1's manifest beside it, `keys` changed as version 1 wrote them."""
    manifest = {**json.loads(VERSION_1.read_text()), **keys}
    path = tmp_path / name
    manifest_path(path).write_text(json.dumps(manifest))
    return path


def test_a_version_1_manifest_still_reads_and_runs(models, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copyfile(models["onnx"], model)
    shutil.copyfile(VERSION_1, manifest_path(model))
    manifest = read_manifest(model)
    assert manifest["manifest_version"] == MANIFEST_VERSION and set(manifest) == EVERY_KEY
    assert manifest["quantization"] is None and manifest["opset"] == 18 and manifest["max_batch"] is None
    runtime = open_model(model)
    assert runtime.labels == json.loads(VERSION_1.read_text())["labels"] and runtime.has_attention
    assert runtime.run(np.zeros((1, 3, 64, 64), np.float32)).probabilities.shape == (1, 10)


def test_version_1_core_ml_quantisation_strings_upgrade(tmp_path):
    int8 = version_1(tmp_path, "int8.mlpackage", format="coreml", precision="int8", quantization="qat-pt2e")
    weights = version_1(tmp_path, "weights.mlpackage", format="coreml", precision="int8",
                        quantization="coreml-weights")
    fp16 = version_1(tmp_path, "fp16.mlpackage", format="coreml", precision="fp16", quantization=None)
    # "qat-pt2e" was written for PTQ programs too: the method is not known.
    assert read_manifest(int8)["quantization"]["method"] is None
    assert read_manifest(int8)["quantization"]["activations"] == "int8"
    assert read_manifest(weights)["quantization"]["method"] == "weight-only"
    assert read_manifest(fp16)["quantization"] is None and read_manifest(fp16)["precision"] == "fp16"


def test_version_1_int8_program_reads_with_its_figures(ptq_program, checkpoint, tmp_path):
    """An int8 program whose manifest is in version 1's form (the run's figures flat beside the summary) is still what
    the exporters take."""
    current = read_manifest(ptq_program)
    summary = {key: current["quantization"][key] for key in ("method", "float_layers", "layers", "rewrites_off")}
    old = {key: value for key, value in current.items() if key not in ("max_batch", "opset")}
    old.update(manifest_version=1, quantization={**summary, **current["quantization"]["figures"]})
    program = tmp_path / "ptq.pt2"
    shutil.copyfile(ptq_program, program)
    manifest_path(program).write_text(json.dumps(old))
    assert read_manifest(program) == current
    _, _, quantization = load_for_export(program, load_source(checkpoint))
    assert quantization.method == "ptq" and quantization.figures is None


def refused(path: Path) -> str:
    with pytest.raises(ManifestError) as error:
        read_manifest(path)
    message = str(error.value)
    assert message.startswith(f"{manifest_path(path)}: ") and "\n" not in message
    return message


@pytest.mark.parametrize(("change", "problem"), [
    ({"manifest_version": 3}, "manifest version 3 is newer than this hsvlt reads (1 to 2): upgrade hsvlt"),
    ({"manifest_version": "2"}, "manifest_version must be a positive whole number, got '2'"),
    ({"manifest_version": None}, "manifest_version must be a positive whole number, got None"),
    ({"labels": []}, "labels must be a list of names"),
    ({"thresholds": [0.5] * 9}, "9 thresholds for 10 labels"),
    ({"thresholds": [2.0] * 10}, "thresholds must be numbers in [0, 1]"),
    ({"precision": "int4"}, "precision must be one of fp32, fp16, int8, got 'int4'"),
    ({"format": "tflite"}, "format must be one of"),
    ({"quantization": "int8"}, "quantization must be an object or null"),
    ({"input": {"shape": ["N", 3, 64]}}, "input.shape must be [N, 3, S, S]"),
    ({"attention_stage": None}, "an attention output goes with an attention_stage"),
    ({"checkpoint_sha256": "abc"}, "checkpoint_sha256 must be 64 hexadecimal digits"),
    ({"colour": "RGB"}, "unknown key colour in a version 1 manifest"),
])
def test_a_malformed_or_future_manifest_is_refused_in_one_line(change, problem, tmp_path):
    assert problem in refused(version_1(tmp_path, "model.onnx", **change))


@pytest.mark.parametrize(("quantization", "problem"), [
    (None, "precision int8 needs quantization"),
    ({"method": "qat"}, "quantization lacks activations"),
    ({"method": "fancy", "activations": "int8"}, "quantization.method must be one of qat, ptq, weight-only"),
    ({"method": "weight-only", "activations": "int8"}, "weight-only quantisation must be fp16 or fp32"),
    ({"method": "ptq", "activations": "fp16"}, "quantization.activations of ptq must be int8 or int8-dynamic"),
    ({"method": "ptq", "activations": "int8", "bits": 4}, "unknown key quantization.bits"),
])
def test_int8_without_a_fitting_quantization_is_refused(quantization, problem, models, tmp_path):
    manifest = {**read_manifest(models["onnx"]), "precision": "int8", "quantization": quantization}
    path = tmp_path / "model.onnx"
    manifest_path(path).write_text(json.dumps(manifest))
    assert problem in refused(path)
    with pytest.raises(ManifestError, match=r"other\.onnx\.json: "):
        write_manifest(tmp_path / "other.onnx", manifest)
    assert not manifest_path(tmp_path / "other.onnx").exists()  # nothing written


def test_not_json_and_not_an_object_are_refused(models, tmp_path):
    path = tmp_path / "model.onnx"
    manifest_path(path).write_text("{labels: [")
    assert "not valid JSON" in refused(path)
    manifest_path(path).write_text("[]")
    assert "not a JSON object" in refused(path)
    manifest_path(path).write_text(json.dumps({**read_manifest(models["onnx"]), "manifest_version": 7}))
    shutil.copyfile(models["onnx"], path)
    with pytest.raises(ValueError, match=r"model\.onnx\.json: manifest version 7 is newer"):
        open_model(path)  # the runtime adapters read through the same check
