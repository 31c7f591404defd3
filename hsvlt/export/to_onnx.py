"""Export a checkpoint to ONNX (for Android, desktop and web runtimes), checked with ONNX Runtime.

    python export/to_onnx.py --ckpt runs/hsvlt/best.pt --out model.onnx [--attention-stage 2]

The graph is hsvlt.deploy.wrapper.for_export exported by torch.onnx (dynamo=True) with a dynamic batch: input
"image" float32 N x 3 x S x S in [0, 1], output "probabilities" N x C (and "attention" N x C x h x w). A
manifest is written beside it (model.onnx.json). The file is validated by the ONNX checker, then run by ONNX
Runtime and compared with the PyTorch model on generated scenes.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from hsvlt.cli import program
from hsvlt.deploy.manifest import manifest_path, write_manifest
from hsvlt.deploy.wrapper import for_export
from hsvlt.export.common import (
    ExportConfig,
    SourceCheckpoint,
    add_source_arguments,
    check_attention_stage,
    check_parity,
    load_source,
    manifest_for,
    size_mb,
)
from hsvlt.outputs import atomic_path, check_output_file
from hsvlt.toolchain import quiet_toolchain_calls

OPSET = 18


@dataclass
class OnnxConfig(ExportConfig):
    """One export to an .onnx file, as `python export/to_onnx.py` takes it (its flags, ExportConfig's alone, parse
    into one, `parse_args`); tools call `export` with an opened checkpoint instead."""


def export(source: SourceCheckpoint, out: Path, attention_stage: int | None = None,
           parity_images: int = OnnxConfig.parity_images) -> dict:
    """Write `out` (.onnx, weights inside the file) and its manifest; returns the parity figures."""
    import onnx

    attention_stage = check_attention_stage(attention_stage, source.model)
    module = for_export(source.model, attention_stage)
    example = torch.rand(2, 3, source.img_size, source.img_size)
    outputs = ["probabilities"] + (["attention"] if attention_stage is not None else [])
    with quiet_toolchain_calls():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                    output_names=outputs, dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
                                    verbose=False)
    with atomic_path(out) as temporary:
        program.save(str(temporary), external_data=False)
        onnx.checker.check_model(str(temporary), full_check=True)
    write_manifest(out, manifest_for(source, "onnx", "fp32", attention_stage, opset=OPSET))
    print(f"wrote {out} ({size_mb(out):.2f} MB) and {manifest_path(out).name}")
    result = {"parity": None}
    if parity_images:
        from hsvlt.deploy.runtimes import OnnxModel

        result["parity"] = check_parity(source, parity_images, attention_stage,
                                        lambda images: OnnxModel(out).run(images).probabilities, "ONNX Runtime")
    return result


def parse_args(argv=None) -> OnnxConfig:
    defaults = OnnxConfig(ckpt=Path(), out=Path())
    parser = argparse.ArgumentParser(prog=program("python export/to_onnx.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser, "output file, e.g. model.onnx", defaults)
    return OnnxConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    source = load_source(config.ckpt, config.preset)
    return export(source, check_output_file(config.out, ".onnx"), config.attention_stage, config.parity_images)
