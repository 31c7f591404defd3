"""The one manifest schema (hsvlt/deploy/manifest.py) as each exporter writes it, for every kind of model it makes
(fp32, fp16, PTQ int8, QAT int8, weight-only int8), read back by the runtimes; version-1 manifests still read; a
malformed one or one of a later version refused in one line naming the file."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export import to_coreml, to_executorch
from export.common import int8_program, load_source
from hsvlt.deploy.manifest import (
    MANIFEST_VERSION,
    ManifestError,
    file_sha256,
    manifest_path,
    read_manifest,
    write_manifest,
)
from hsvlt.deploy.runtimes import open_model
from quant import qat

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")

# A manifest as version 1 wrote it (tests/web/make_golden.py's, for an hsvlt_pico at 64 px with the attention of
# stage 1: the model of the `models` fixture).
VERSION_1 = Path(__file__).with_name("version_1") / "model.onnx.json"
EVERY_KEY = {"manifest_version", "preset", "format", "precision", "quantization", "labels", "thresholds", "input",
             "normalization", "outputs", "attention_stage", "checkpoint_sha256", "data", "max_batch", "opset"}


@pytest.fixture(scope="module")
def int8_programs(checkpoint, tmp_path_factory):
    """{"ptq": ptq.pt2, "qat": qat.pt2} of the 32 px checkpoint, made by quant/qat.py as cheaply as it runs."""
    folder = tmp_path_factory.mktemp("int8")
    common = ["--ckpt", str(checkpoint), "--workers", "0", "--batch-size", "8", "--train-size", "16",
              "--val-size", "16"]
    qat.main([*common, "--out", str(folder / "ptq.pt2"), "--ptq", "--calibration-images", "8"])
    qat.main([*common, "--out", str(folder / "qat.pt2"), "--epochs", "1", "--max-steps", "1"])
    return {"ptq": folder / "ptq.pt2", "qat": folder / "qat.pt2"}


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


@pytest.mark.parametrize("method", ["ptq", "qat"])
def test_pte_manifest_says_how_the_int8_program_was_made(method, int8_programs, checkpoint, tmp_path):
    program = int8_programs[method]
    out = tmp_path / f"{method}.pte"
    to_executorch.main(["--ckpt", str(checkpoint), "--int8", str(program), "--out", str(out), "--parity-images", "0"])
    manifest = written(out)
    quantization = manifest["quantization"]
    assert manifest["precision"] == "int8" and quantization["method"] == method
    assert quantization["weights"] == "int8" and quantization["activations"] == "int8"
    assert quantization["float_layers"] == ["norms"] and quantization["layers"]["conv"]["int8"] > 0
    assert quantization["figures"] is None  # the run's figures stay with the int8 program
    made = read_manifest(program)["quantization"]
    assert {**made, "figures": None} == quantization
    assert made["figures"]["epochs"] == (1 if method == "qat" else 0)
    assert open_model(out).manifest == manifest


CORE_ML_KINDS = {  # flags -> (precision, quantization method, activations)
    "fp16": ([], "fp16", None, None),
    "fp32": (["--fp32"], "fp32", None, None),
    "weight-only": (["--quantize-weights"], "int8", "weight-only", "fp16"),
    "weight-only fp32": (["--quantize-weights", "--fp32"], "int8", "weight-only", "fp32"),
    "ptq": (["--int8", "ptq"], "int8", "ptq", "int8"),
    "qat": (["--int8", "qat"], "int8", "qat", "int8"),
}


@pytest.mark.parametrize("kind", list(CORE_ML_KINDS))
def test_mlpackage_manifest_for_each_kind(kind, int8_programs, checkpoint, tmp_path):
    """The PTQ program's package says ptq (version 1 said "qat-pt2e" for every int8 program); the same manifest
    is beside the package and in its metadata, with the keys the Swift code reads."""
    flags, precision, method, activations = CORE_ML_KINDS[kind]
    flags = [str(int8_programs[flag]) if flag in int8_programs else flag for flag in flags]
    out = tmp_path / "HSVLT.mlpackage"
    to_coreml.main(["--ckpt", str(checkpoint), "--out", str(out), "--parity-images", "0", *flags])
    manifest = written(out)
    assert manifest["format"] == "coreml" and manifest["precision"] == precision
    assert manifest["max_batch"] is None and manifest["opset"] is None
    if method is None:
        assert manifest["quantization"] is None
    else:
        assert (manifest["quantization"]["method"], manifest["quantization"]["activations"]) == (method, activations)
        assert (manifest["quantization"]["float_layers"] is None) == (method == "weight-only")
    package = to_coreml.inspect_package(out)
    metadata = package["metadata"]
    assert json.loads(metadata["manifest"]) == manifest
    assert json.loads(metadata["labels"]) == manifest["labels"] and metadata["preset"] == manifest["preset"]
    assert json.loads(metadata["thresholds"]) == manifest["thresholds"] and metadata["input_size"] == "32"


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


def test_version_1_int8_program_reads_with_its_figures(int8_programs, checkpoint, tmp_path):
    """A qat.pt2 whose manifest is in version 1's form (the run's figures flat beside the summary) is still what
    the exporters take."""
    current = read_manifest(int8_programs["qat"])
    summary = {key: current["quantization"][key] for key in ("method", "float_layers", "layers", "rewrites_off")}
    old = {key: value for key, value in current.items() if key not in ("max_batch", "opset")}
    old.update(manifest_version=1, quantization={**summary, **current["quantization"]["figures"]})
    program = tmp_path / "qat.pt2"
    shutil.copyfile(int8_programs["qat"], program)
    manifest_path(program).write_text(json.dumps(old))
    assert read_manifest(program) == current
    _, _, quantization = int8_program(program, load_source(checkpoint), None)
    assert quantization.method == "qat" and quantization.figures is None


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
