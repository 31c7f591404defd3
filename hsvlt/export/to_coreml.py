"""Export a checkpoint to Core ML (.mlpackage, ML program) for iOS 17+ and macOS 14+.

    python export/to_coreml.py --ckpt runs/hsvlt/best.pt --out HSVLT.mlpackage                 # fp16
    python export/to_coreml.py --ckpt best.pt --out HSVLT.mlpackage --quantize-weights         # int8 weights
    python export/to_coreml.py --ckpt best.pt --int8 qat.pt2 --out HSVLT.mlpackage             # QAT (or PTQ) int8

Input "image": an RGB image of the model's size (Core ML scales pixels by 1/255; the model normalises
inside). Output "probabilities": one per label, float32; with --attention-stage also "attention" (labels x
h x w). The user metadata holds the label names, per-label thresholds, preset and the whole manifest (JSON),
so an app needs nothing else; model.mlpackage.json is also written beside the package.

Core ML compiles and predicts on Apple platforms only. Elsewhere the saved package is reloaded without
compiling and its interface, metadata and operations are checked; on macOS it also predicts on generated
scenes and is compared with PyTorch.
"""

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsvlt.checkpoint import SourceCheckpoint, load_source
from hsvlt.cli import UsageError
from hsvlt.deploy.manifest import Quantization, checkpoint_manifest, manifest_path, precision_label, write_manifest
from hsvlt.deploy.wrapper import AsTrainedHSVLT, for_export, trace
from hsvlt.export.common import ExportConfig, add_int8_argument, export_parser, size_mb
from hsvlt.export.parity import check_parity
from hsvlt.outputs import atomic_path, check_output_file
from hsvlt.quant.pt2e import load_for_export
from hsvlt.toolchain import quiet_toolchain_calls

# Operations that hold or apply int8 weights in an ML program (iOS 16/17 and iOS 18 forms).
QUANTIZED_WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "dequantize")


@dataclass
class CoreMLConfig(ExportConfig):
    """One export to an .mlpackage: what `python export/to_coreml.py` parses its flags into (`parse_args`), and
    what tools pass to `export`."""

    int8: Path | None = None  # the int8 program quant/qat.py made from the checkpoint
    quantize_weights: bool = False  # Core ML's own int8 weight quantisation
    fp32: bool = False  # compute in float32 instead of float16
    # Core ML predicts on macOS alone, one image per call: fewer scenes than the other exporters compare on.
    parity_images: int = 16


@quiet_toolchain_calls()
def convert(program, source: SourceCheckpoint, attention_stage: int | None, fp16: bool):
    import coremltools as ct

    size = source.img_size
    outputs = [ct.TensorType(name="probabilities", dtype=np.float32)]
    if attention_stage is not None:
        outputs.append(ct.TensorType(name="attention", dtype=np.float32))
    # Casting the graph's float32 clamp bounds (the norms' variance floor, +-float32 max) to float16 overflows to
    # +-inf, which clamps exactly the same: numpy's overflow warning says nothing a user can act on.
    with np.errstate(over="ignore"):
        return ct.convert(
            program.run_decompositions({}),
            inputs=[ct.ImageType(name="image", shape=(1, 3, size, size), scale=1 / 255.0,
                                 color_layout=ct.colorlayout.RGB)],
            outputs=outputs,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
        )


@quiet_toolchain_calls()
def quantize_weights(mlmodel):
    """Core ML's own weight quantisation: int8, symmetric, per output channel."""
    import coremltools as ct

    config = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel"))
    # An all-zero output channel gets scale 0 and coremltools divides by it; its weights dequantise to 0
    # whatever the int8 values, so the warning is noise.
    with np.errstate(divide="ignore", invalid="ignore"):
        return ct.optimize.coreml.linear_quantize_weights(mlmodel, config)


def describe(mlmodel, manifest: dict, attention_stage: int | None) -> None:
    """Descriptions and user metadata (all values strings, as Core ML requires), from the manifest: the keys the
    Swift code reads (labels, thresholds, input_size, preset: HSVLTInterface in edge_demo/ios) and the whole
    manifest as JSON."""
    labels, size = manifest["labels"], manifest["input"]["shape"][-1]
    mlmodel.short_description = (f"HSVLT multi-label image classifier ({manifest['preset']}): {len(labels)} labels. "
                                 f"A label is present when its probability reaches its threshold "
                                 f"(metadata 'thresholds').")
    mlmodel.version = precision_label(manifest)
    mlmodel.input_description["image"] = f"RGB image, {size} x {size} pixels"
    mlmodel.output_description["probabilities"] = f"probability of each of the {len(labels)} labels " \
                                                  f"(names in metadata 'labels')"
    if attention_stage is not None:
        mlmodel.output_description["attention"] = (f"where each label was found: labels x h x w attention over "
                                                   f"the stride-{4 * 2 ** attention_stage} feature map, each map "
                                                   f"sums to 1")
    metadata = mlmodel.user_defined_metadata
    metadata["labels"] = json.dumps(labels)
    metadata["thresholds"] = json.dumps(manifest["thresholds"])
    metadata["preset"] = manifest["preset"]
    metadata["input_size"] = str(size)
    metadata["checkpoint_sha256"] = manifest["checkpoint_sha256"]
    metadata["manifest"] = json.dumps(manifest)


# Core ML specification version of each minimum deployment target (coremltools.target).
SPECIFICATION_IOS = {7: "iOS 16", 8: "iOS 17", 9: "iOS 18"}
COMPUTE_OPS = ("conv", "linear", "matmul")


@quiet_toolchain_calls()
def inspect_package(path: Path) -> dict:
    """Reload a saved package without compiling it: inputs, outputs (name -> shape), user metadata,
    descriptions, the operation types of its ML program, the float type its convolutions and matrix products
    compute in, the factor the image input's pixels are scaled by, and the minimum iOS."""
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()

    def shape(feature) -> list[int]:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            return [3, feature.type.imageType.height, feature.type.imageType.width]
        return list(feature.type.multiArrayType.shape)

    operations = [op for function in spec.mlProgram.functions.values()
                  for block in function.block_specializations.values() for op in block.operations]
    constants = {op.outputs[0].name: op.attributes["val"] for op in operations if op.type == "const"}
    # coremltools applies an ImageType's scale as the program's first multiplication of the image.
    scale = next((constants[op.inputs["y"].arguments[0].name].immediateValue.tensor.floats.values[0]
                  for op in operations if op.type == "mul" and op.inputs["x"].arguments[0].name == "image"), None)
    compute = {MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType) for op in operations
               if op.type in COMPUTE_OPS}
    description = spec.description
    return {"inputs": {f.name: (f.type.WhichOneof("Type"), shape(f)) for f in description.input},
            "outputs": {f.name: shape(f) for f in description.output},
            "color": {f.name: ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(
                f.type.imageType.colorSpace) for f in description.input if f.type.HasField("imageType")},
            "image_scale": scale,
            "compute_types": compute,
            "metadata": dict(description.metadata.userDefined),
            "descriptions": {"model": description.metadata.shortDescription,
                             **{f.name: f.shortDescription for f in [*description.input, *description.output]}},
            "ops": {op.type for op in operations},
            "minimum_ios": SPECIFICATION_IOS.get(spec.specificationVersion,
                                                 f"specification version {spec.specificationVersion}")}


@quiet_toolchain_calls()
def run_coreml(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from Core ML itself (macOS only) for float N x 3 x S x S images."""
    import coremltools as ct
    from PIL import Image

    mlmodel = ct.models.MLModel(str(path))
    pixels = (images.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    return np.stack([mlmodel.predict({"image": Image.fromarray(p)})["probabilities"].reshape(-1) for p in pixels])


def export(config: CoreMLConfig) -> dict:
    """Write config.out (.mlpackage) and its manifest: load, wrap, export, convert, save, check. Returns the
    package's interface (inspect_package) and, on macOS, the parity figures."""
    if config.int8 is not None and config.quantize_weights:
        raise UsageError("--int8 and --quantize-weights exclude each other (the --int8 program is already int8)")
    # Load the checkpoint, and with --int8 the int8 program quantised from it (hsvlt.quant.pt2e.load_for_export).
    source = load_source(config.ckpt, config.preset, config.attention_stage)
    out = check_output_file(config.out, ".mlpackage")
    attention_stage, quantization, fp16 = config.attention_stage, None, not config.fp32
    if config.int8 is not None:
        int8_program, attention_stage, quantization = load_for_export(config.int8, source, attention_stage)
    float_type = "fp16" if fp16 else "fp32"
    precision = "int8" if config.int8 is not None or config.quantize_weights else float_type
    if config.quantize_weights:  # the weights are dequantised to the compute precision: the activations stay in it
        quantization = Quantization(method="weight-only", activations=float_type)
    manifest = checkpoint_manifest(source, "coreml", precision, attention_stage, quantization)
    # Wrap: the module to export, and the model as trained, which the check holds the package to.
    module = for_export(source.model, attention_stage) if config.int8 is None else int8_program.module()
    reference = AsTrainedHSVLT(source.model, attention_stage)
    # Export, and convert to an ML program.
    program = trace(module, source.img_size)
    mlmodel = convert(program, source, attention_stage, fp16)
    if config.quantize_weights:
        mlmodel = quantize_weights(mlmodel)
    describe(mlmodel, manifest, attention_stage)
    # Save the package and its manifest.
    with atomic_path(out, folder=True) as temporary:
        mlmodel.save(str(temporary))
    write_manifest(out, manifest)
    info = inspect_package(out)
    quantized = sorted(set(QUANTIZED_WEIGHT_OPS) & info["ops"])
    print(f"wrote {out} ({size_mb(out):.2f} MB, {precision_label(manifest)}) and {manifest_path(out).name}")
    print(f"interface: {info['color']['image']} image {info['inputs']['image'][1]} x {info['image_scale']:.5f} -> " +
          ", ".join(f"{name} {shape}" for name, shape in info["outputs"].items()) +
          f"; computes in {', '.join(sorted(info['compute_types']))}; {info['minimum_ios']}+" +
          (f"; int8 weight ops: {', '.join(quantized)}" if quantized else ""))
    result = {"package": info, "parity": None}
    if platform.system() != "Darwin":
        print("prediction check skipped: Core ML runs on macOS and iOS only (the package was reloaded and "
              "checked without compiling)")
        return result
    if config.parity_images:  # Check: the package in Core ML against the model as trained, in PyTorch.
        result["parity"] = check_parity(reference, source, config.parity_images,
                                        lambda images: run_coreml(out, images), "Core ML")
    return result


def parse_args(argv=None) -> CoreMLConfig:
    defaults = CoreMLConfig(ckpt=Path(), out=Path())
    parser = export_parser("python export/to_coreml.py", __doc__, "output package, e.g. HSVLT.mlpackage", defaults)
    int8 = parser.add_mutually_exclusive_group()  # the --int8 program is already int8
    add_int8_argument(int8)
    int8.add_argument("--quantize-weights", action="store_true",
                      help="int8 weights by Core ML's weight quantisation (no QAT needed)")
    parser.add_argument("--fp32", action="store_true", help="compute in float32 (default: float16)")
    return CoreMLConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    return export(config)
