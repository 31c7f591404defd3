"""Export a checkpoint to ONNX (for Android, desktop and web runtimes), checked with ONNX Runtime.

    python export/to_onnx.py --ckpt runs/hsvlt/best.pt --out model.onnx [--attention-stage 2]

The graph is hsvlt.deploy.wrapper.for_export exported by torch.onnx (dynamo=True) with a dynamic batch: input
"image" float32 N x 3 x S x S in [0, 1], output "probabilities" N x C (and "attention" N x C x h x w). A
manifest is written beside it (model.onnx.json). The file is validated by the ONNX checker, then run by ONNX
Runtime and compared with the PyTorch model on generated scenes.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from hsvlt.checkpoint import load_source
from hsvlt.deploy.manifest import checkpoint_manifest, manifest_path, write_manifest
from hsvlt.deploy.wrapper import AsTrainedHSVLT, for_export
from hsvlt.export.common import ExportConfig, export_parser, size_mb
from hsvlt.export.parity import check_parity
from hsvlt.outputs import atomic_path, check_output_file
from hsvlt.toolchain import quiet_toolchain_calls

OPSET = 18


@dataclass
class OnnxConfig(ExportConfig):
    """One export to an .onnx file: what `python export/to_onnx.py` parses its flags (ExportConfig's alone) into
    (`parse_args`), and what tools pass to `export`."""


def export(config: OnnxConfig) -> dict:
    """Write config.out (.onnx, weights inside the file) and its manifest: load, wrap, export, save, check. Returns
    the parity figures."""
    import onnx

    source = load_source(config.ckpt, config.preset, config.attention_stage)
    out = check_output_file(config.out, ".onnx")
    attention_stage = config.attention_stage
    manifest = checkpoint_manifest(source, "onnx", "fp32", attention_stage, opset=OPSET)
    # Wrap: the module to export, and the model as trained, which the check holds the file to.
    module = for_export(source.model, attention_stage)
    reference = AsTrainedHSVLT(source.model, attention_stage)
    # Export with a dynamic batch, and save the file (checked by the ONNX checker) and its manifest.
    example = torch.rand(2, 3, source.img_size, source.img_size)
    outputs = ["probabilities"] + (["attention"] if attention_stage is not None else [])
    with quiet_toolchain_calls():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                    output_names=outputs, dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
                                    verbose=False)
    with atomic_path(out) as temporary:
        program.save(str(temporary), external_data=False)
        onnx.checker.check_model(str(temporary), full_check=True)
    write_manifest(out, manifest)
    print(f"wrote {out} ({size_mb(out):.2f} MB) and {manifest_path(out).name}")
    # Check: the file in ONNX Runtime against the model as trained, in PyTorch.
    result = {"parity": None}
    if config.parity_images:
        from hsvlt.deploy.runtimes import OnnxModel

        result["parity"] = check_parity(reference, source, config.parity_images,
                                        lambda images: OnnxModel(out).run(images).probabilities, "ONNX Runtime")
    return result


def parse_args(argv=None) -> OnnxConfig:
    defaults = OnnxConfig(ckpt=Path(), out=Path())
    parser = export_parser("python export/to_onnx.py", __doc__, "output file, e.g. model.onnx", defaults)
    return OnnxConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    return export(config)
