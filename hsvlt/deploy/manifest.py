"""The manifest beside every exported file (model.pte.json, model.onnx.json, HSVLT.mlpackage.json, qat.pt2.json):
label names, per-label thresholds, input size, normalisation, preset, precision and quantisation, and the hash of
the source checkpoint, so that a reader of the file needs neither the training code nor the text encoder.

One schema for every kind of file: `Manifest` (and its `Quantization`) below is the whole of it; docs/DESIGN.md
section 3 states it for readers. Writers build the JSON form with build_manifest / checkpoint_manifest and save it
with write_manifest, which refuses one that does not fit the schema; readers take read_manifest (the JSON form, as
a dict: what the runtimes and the web page index) or load_manifest (the dataclass). Manifests of an earlier version
are read and upgraded; one of a later version, or one that does not fit, is refused in one line naming the file.
"""

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hsvlt.checkpoint import SourceCheckpoint
from hsvlt.models.classifier import MultiLabelClassifier
from hsvlt.outputs import write_json

# Version 2: `quantization` is in every manifest (null for a float model) and always an object saying how the int8
# model was made; version 1 left it out of float manifests, wrote a string in Core ML's and a flat object with the
# run's figures in the others.
MANIFEST_VERSION = 2

# What wrote the file: its runtime (and delegate), or the int8 program quant/qat.py writes, or a training checkpoint
# opened directly (hsvlt.deploy.runtimes.TorchModel).
FORMATS = ("executorch-xnnpack", "executorch-coreml", "onnx", "coreml", "torch.export", "checkpoint")
# The number type the weights are stored in. "int8" always comes with `quantization`, which says how the rest runs.
PRECISIONS = ("fp32", "fp16", "int8")
# How an int8 model was made: quantisation-aware training, post-training calibration, or the weights alone
# quantised after training (activations stay float).
METHODS = ("qat", "ptq", "weight-only")
# What the activations are while the int8 model runs: int8 with ranges fixed when it was made ("int8"), int8 with
# ranges measured per token at run time ("int8-dynamic"), or a float type (weight-only quantisation).
ACTIVATIONS = ("int8", "int8-dynamic", "fp16", "fp32")
INT8_ACTIVATIONS = ("int8", "int8-dynamic")
FLOAT_ACTIVATIONS = ("fp16", "fp32")


class ManifestError(ValueError):
    """A manifest that does not fit the schema; the message is one line naming the file and the problem."""


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ManifestError(problem)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@dataclass(frozen=True, kw_only=True)
class Quantization:
    """How an int8 model was made. `method` and `activations` are None only in a manifest upgraded from version 1
    that did not record them (its Core ML manifests said "qat-pt2e" for PTQ programs too, and nothing of the
    float type Core ML's weight quantisation computes in)."""

    method: str | None  # METHODS
    activations: str | None  # ACTIVATIONS
    weights: str = "int8"  # per output channel, symmetric, in every method here
    # PT2E programs (hsvlt/quant/pt2e.py): the layer groups kept float, how many layers of each kind compute in
    # int8 and how many in float, and the export-time rewrites the int8 program goes without.
    float_layers: list[str] | None = None
    layers: dict[str, dict[str, int]] | None = None
    rewrites_off: list[str] | None = None
    # The int8 program of quant/qat.py alone: what its run measured (validation mAP of fp32 and int8, epochs, best
    # epoch, distillation weight, per-epoch log). A file exported from that program leaves them with it.
    figures: dict | None = None

    def __post_init__(self):
        _require(self.method is None or self.method in METHODS,
                 f"quantization.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        _require(self.activations is None or self.activations in ACTIVATIONS,
                 f"quantization.activations must be one of {', '.join(ACTIVATIONS)}, got {self.activations!r}")
        _require(self.weights == "int8", f"quantization.weights must be int8, got {self.weights!r}")
        if self.method == "weight-only":
            _require(self.activations is None or self.activations in FLOAT_ACTIVATIONS,
                     f"quantization.activations of weight-only quantisation must be fp16 or fp32, "
                     f"got {self.activations!r}")
        elif self.method is not None:
            _require(self.activations is None or self.activations in INT8_ACTIVATIONS,
                     f"quantization.activations of {self.method} must be int8 or int8-dynamic, "
                     f"got {self.activations!r}")
        for name in ("float_layers", "rewrites_off"):
            value = getattr(self, name)
            _require(value is None or _is_names(value), f"quantization.{name} must be a list of names")
        _require(self.layers is None or (isinstance(self.layers, dict) and all(
            isinstance(counts, dict) and all(_is_int(n) for n in counts.values()) for counts in self.layers.values())),
            "quantization.layers must map each layer kind to its int8 and float counts")
        _require(self.figures is None or isinstance(self.figures, dict), "quantization.figures must be an object")

    def without_figures(self) -> "Quantization":
        """What a file exported from this int8 program says of it (the run's figures stay with the program)."""
        return Quantization(**{**asdict(self), "figures": None})


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The manifest of one exported file, at MANIFEST_VERSION (to_dict adds the version)."""

    preset: str
    format: str  # FORMATS
    precision: str  # PRECISIONS
    quantization: Quantization | None  # how an int8 model was made; None for fp32 and fp16
    labels: list[str]
    thresholds: list[float]  # per label, same order, in [0, 1]
    input: dict  # name "image", shape ["N", 3, S, S], dtype float32, color RGB, range [0, 1]
    normalization: dict  # mean, std (the [0, 1] scale) and where they are applied
    outputs: list[dict]  # name and shape of each output: "probabilities" ["N", C], then "attention" with its stride
    attention_stage: int | None  # the stage whose attention is output, or None
    checkpoint_sha256: str  # SHA-256 of the checkpoint the file was made from
    data: dict | None  # where the checkpoint's validation data came from (export/evaluate_artifact.py scores on it)
    max_batch: int | None = None  # ExecuTorch: the largest batch one call takes
    opset: int | None = None  # ONNX: the operator set version

    def __post_init__(self):
        _require(isinstance(self.preset, str) and self.preset != "", "preset must be a name")
        _require(self.format in FORMATS, f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        _require(self.precision in PRECISIONS,
                 f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _require(self.quantization is None or isinstance(self.quantization, Quantization),
                 "quantization must be an object or null")
        _require((self.precision == "int8") == (self.quantization is not None),
                 f"precision {self.precision} " + ("needs quantization" if self.precision == "int8"
                                                   else "comes without quantization (null)"))
        _require(_is_names(self.labels) and len(self.labels) > 0, "labels must be a list of names")
        _require(isinstance(self.thresholds, list) and all(_is_number(t) and 0 <= t <= 1 for t in self.thresholds),
                 "thresholds must be numbers in [0, 1]")
        _require(len(self.thresholds) == len(self.labels),
                 f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        shape = self.input.get("shape") if isinstance(self.input, dict) else None
        _require(isinstance(shape, list) and len(shape) == 4 and shape[1] == 3 and _is_int(shape[3])
                 and shape[3] > 0 and shape[2] == shape[3], "input.shape must be [N, 3, S, S]")
        _require(isinstance(self.normalization, dict) and all(
            isinstance(self.normalization.get(key), list) and len(self.normalization[key]) == 3
            and all(_is_number(v) for v in self.normalization[key]) for key in ("mean", "std")),
            "normalization must hold mean and std, 3 numbers each")
        _require(isinstance(self.outputs, list) and len(self.outputs) > 0
                 and all(isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("shape"), list)
                         for o in self.outputs), "outputs must be a list of names and shapes")
        _require(self.outputs[0]["name"] == "probabilities" and self.outputs[0]["shape"][1:] == [len(self.labels)],
                 f"the first output must be probabilities, [N, {len(self.labels)}]")
        _require(self.attention_stage is None or (_is_int(self.attention_stage) and self.attention_stage >= 0),
                 "attention_stage must be a stage number or null")
        has_attention = any(o["name"] == "attention" for o in self.outputs)
        _require(has_attention == (self.attention_stage is not None),
                 "an attention output goes with an attention_stage, and only with one")
        _require(isinstance(self.checkpoint_sha256, str) and re.fullmatch(r"[0-9a-f]{64}", self.checkpoint_sha256),
                 "checkpoint_sha256 must be 64 hexadecimal digits")
        _require(self.data is None or isinstance(self.data, dict), "data must be an object or null")
        for name in ("max_batch", "opset"):
            value = getattr(self, name)
            _require(value is None or (_is_int(value) and value > 0), f"{name} must be a positive whole number")

    def to_dict(self) -> dict:
        """The JSON form: manifest_version first, then every field (null where it does not apply)."""
        return {"manifest_version": MANIFEST_VERSION, **asdict(self)}


KEYS = {field.name for field in fields(Manifest)}
REQUIRED_KEYS = {field.name for field in fields(Manifest) if field.name not in ("max_batch", "opset")}
QUANTIZATION_KEYS = {field.name for field in fields(Quantization)}


def _upgrade_version_1(manifest: dict) -> dict:
    """A version-1 manifest in version 2's keys. Version 1 wrote no attention_stage or data in manifests made
    without a checkpoint, no quantization for float models, "qat-pt2e" or "coreml-weights" in Core ML's, and the
    quantisation run's figures beside its summary."""
    manifest = {"attention_stage": None, "data": None, **manifest}
    quantization = manifest.get("quantization")
    if quantization == "qat-pt2e":  # written for QAT and PTQ programs alike: the method is not known
        quantization = {"method": None, "activations": "int8"}
    elif quantization == "coreml-weights":
        quantization = {"method": "weight-only", "activations": None}
    elif isinstance(quantization, dict):
        summary = {key: quantization[key] for key in ("method", "float_layers", "layers", "rewrites_off")
                   if key in quantization}
        figures = {key: value for key, value in quantization.items() if key not in summary}
        quantization = {**summary, "activations": "int8", "figures": figures or None}
    elif quantization is None and manifest.get("precision") == "int8":  # int8 programs written without a summary
        quantization = {"method": None, "activations": None}
    manifest["quantization"] = quantization
    return manifest


UPGRADES = {1: _upgrade_version_1}


def parse_manifest(manifest, name: str = "manifest") -> Manifest:
    """A manifest's JSON form (of this version or an earlier one) -> Manifest; ManifestError names `name`."""
    try:
        _require(isinstance(manifest, dict), "not a JSON object")
        _require("manifest_version" in manifest, "manifest lacks manifest_version")
        version = manifest["manifest_version"]
        _require(_is_int(version) and version >= 1,
                 f"manifest_version must be a positive whole number, got {version!r}")
        _require(version <= MANIFEST_VERSION, f"manifest version {version} is newer than this hsvlt reads "
                                              f"(1 to {MANIFEST_VERSION}): upgrade hsvlt")
        manifest = {key: value for key, value in manifest.items() if key != "manifest_version"}
        for old in range(version, MANIFEST_VERSION):
            manifest = UPGRADES[old](manifest)
        missing = REQUIRED_KEYS - set(manifest)
        _require(not missing, f"manifest lacks {', '.join(sorted(missing))}")
        unknown = set(manifest) - KEYS
        _require(not unknown, f"unknown key {', '.join(sorted(unknown))} in a version {version} manifest")
        quantization = manifest["quantization"]
        if isinstance(quantization, dict):
            unknown = set(quantization) - QUANTIZATION_KEYS
            _require(not unknown, f"unknown key quantization.{', '.join(sorted(unknown))}")
            missing = {"method", "activations"} - set(quantization)
            _require(not missing, f"quantization lacks {', '.join(sorted(missing))}")
            manifest["quantization"] = Quantization(**quantization)
        return Manifest(**manifest)
    except ManifestError as error:
        raise ManifestError(f"{name}: {error}") from None


def build_manifest(
    model: MultiLabelClassifier,
    labels: list[str],
    thresholds: list[float],
    checkpoint_sha256: str,
    artifact_format: str,
    precision: str = "fp32",
    attention_stage: int | None = None,
    quantization: Quantization | None = None,
    data: dict | None = None,
    max_batch: int | None = None,
    opset: int | None = None,
) -> dict:
    """The JSON form of the manifest of a file made from `model` (checked against the schema)."""
    config = model.config
    outputs = [{"name": "probabilities", "shape": ["N", len(labels)]}]
    if attention_stage is not None:
        stride = 4 * 2**attention_stage
        side = config.img_size // stride
        outputs.append({"name": "attention", "shape": ["N", len(labels), side, side], "stride": stride})
    return Manifest(
        preset=config.preset,
        format=artifact_format,
        precision=precision,
        quantization=quantization,
        labels=list(labels),
        thresholds=[float(t) for t in thresholds],
        input={"name": "image", "shape": ["N", 3, config.img_size, config.img_size], "dtype": "float32",
               "color": "RGB", "range": [0.0, 1.0]},
        normalization={"mean": list(config.mean), "std": list(config.std), "applied": "inside the model"},
        outputs=outputs,
        attention_stage=attention_stage,
        checkpoint_sha256=checkpoint_sha256,
        data=data,
        max_batch=max_batch,
        opset=opset,
    ).to_dict()


def checkpoint_manifest(source: SourceCheckpoint, artifact_format: str, precision: str = "fp32",
                        attention_stage: int | None = None, quantization: Quantization | None = None,
                        max_batch: int | None = None, opset: int | None = None) -> dict:
    """The manifest of a file made from an opened checkpoint (hsvlt.checkpoint.load_source): build_manifest with
    the checkpoint's labels, thresholds and hash, and where its validation data came from (so that the file can be
    scored on the same images: export/evaluate_artifact.py)."""
    return build_manifest(source.model, source.labels, source.thresholds, source.sha256, artifact_format, precision,
                          attention_stage, quantization, source.checkpoint.get("data"), max_batch, opset)


def precision_label(manifest: dict) -> str:
    """The precision in a few words, for people: "fp16", "int8 (QAT)", "int8 weights, fp16 activations"."""
    quantization = manifest.get("quantization")
    if not quantization:
        return manifest["precision"]
    method, activations = quantization.get("method"), quantization.get("activations")
    if method == "weight-only":
        return f"int8 weights, {activations} activations" if activations else "int8 weights"
    label = f"int8 ({method.upper()})" if method else "int8"
    return label + (", dynamic activations" if activations == "int8-dynamic" else "")


def manifest_path(artifact: str | Path) -> Path:
    """model.pte -> model.pte.json beside it (model.onnx -> model.onnx.json, model.mlpackage ->
    model.mlpackage.json): exports of one model to several formats in one folder keep their own manifests."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_manifest(artifact: str | Path, manifest: dict) -> Path:
    """Write `manifest` (its JSON form) beside `artifact`, at this version; one that does not fit the schema is
    refused (ManifestError naming the file) and nothing is written."""
    path = manifest_path(artifact)
    write_json(path, parse_manifest(manifest, str(path)).to_dict())
    return path


def load_manifest(artifact: str | Path) -> Manifest:
    """The manifest beside `artifact`, upgraded to this version. A missing file is FileNotFoundError; one that is
    not JSON, does not fit the schema or is of a later version is ManifestError; both name the file."""
    path = manifest_path(artifact)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found beside {Path(artifact).name}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a text file") from None
    return parse_manifest(manifest, str(path))


def read_manifest(artifact: str | Path) -> dict:
    """load_manifest's JSON form (this version's keys, whatever version the file was written in)."""
    return load_manifest(artifact).to_dict()
