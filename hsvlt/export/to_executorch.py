"""Export a checkpoint to an ExecuTorch program (.pte), fp32 or int8, delegated to XNNPACK (or Core ML).

    python export/to_executorch.py --ckpt runs/hsvlt/best.pt --out model.pte
    python export/to_executorch.py --ckpt runs/hsvlt/best.pt --int8 qat.pt2 --out model_int8.pte
    python export/to_executorch.py --ckpt best.pt --out model.pte --attention-stage 2   # + attention maps

The program is hsvlt.deploy.wrapper.for_export traced (input "image", float32 N x 3 x S x S in [0, 1], N = 1 or up to
--max-batch; outputs: probabilities N x C, and with --attention-stage the label-to-pixel attention N x C x h x w).
A manifest (labels, thresholds, input size, preset, precision and quantisation, checkpoint hash) is written beside
it as model.pte.json.
It prints how much of the graph the delegate runs, and compares the program, run by the ExecuTorch runtime,
with the PyTorch model on generated scenes.
"""

from dataclasses import dataclass
from pathlib import Path

from hsvlt.checkpoint import load_source
from hsvlt.cli import positive_int
from hsvlt.deploy.manifest import checkpoint_manifest, manifest_path, precision_label, write_manifest
from hsvlt.deploy.wrapper import AsTrainedHSVLT, for_export, trace
from hsvlt.export.common import ExportConfig, add_int8_argument, export_parser, size_mb
from hsvlt.export.parity import check_parity
from hsvlt.outputs import check_output_file, write_bytes
from hsvlt.quant.pt2e import load_for_export
from hsvlt.toolchain import quiet_toolchain_calls

BACKENDS = ("xnnpack", "coreml")


@dataclass
class ExecuTorchConfig(ExportConfig):
    """One export to a .pte: what `python export/to_executorch.py` parses its flags into (`parse_args`), and what
    tools pass to `export`."""

    int8: Path | None = None  # the int8 program quant/qat.py made from the checkpoint; None: fp32 (fp16 on coreml)
    backend: str = "xnnpack"
    max_batch: int = 1


@quiet_toolchain_calls()
def partitioners(backend: str) -> list:
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    # Lowering logs that specification version 8 needs iOS 17: the deployment target chosen here, on purpose
    # (hsvlt.toolchain hides it).
    specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=ct.target.iOS17,
                                                 compute_precision=ct.precision.FLOAT16)
    return [CoreMLPartitioner(compile_specs=specs)]


@quiet_toolchain_calls()
def lower(program, backend: str = "xnnpack"):
    """ExportedProgram -> (ExecuTorch program bytes, delegation summary): executorch's
    to_edge_transform_and_lower with the backend's partitioner, then to_executorch."""
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=partitioners(backend))
    return edge.to_executorch().buffer, delegation(edge.exported_program().graph_module)


def delegation(graph) -> dict:
    """What the delegate took of a lowered graph: the operators left outside it
    (executorch.devtools.backend_debug.get_delegation_info), not counting the getitem nodes that unpack the
    delegate's outputs, and the backends the subgraphs went to."""
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir.lowered_backend_module import get_lowered_backend_modules

    info = get_delegation_info(graph)
    outside = {name: b.non_delegated for name, b in info.delegation_by_operator.items()
               if b.non_delegated and name != "getitem"}
    return {"subgraphs": info.num_delegated_subgraphs, "delegated_ops": info.num_delegated_nodes,
            "ops_outside": sum(outside.values()), "outside_by_op": outside,
            "backends": sorted({module.backend_id for module in get_lowered_backend_modules(graph)})}


@quiet_toolchain_calls()
def coreml_runtime() -> bool:
    """Whether this ExecuTorch runtime runs Core ML programs (macOS and iOS builds only)."""
    from executorch.runtime import Runtime

    return Runtime.get().backend_registry.is_available("CoreMLBackend")


def format_delegation(summary: dict, backend: str) -> str:
    line = (f"{backend}: {summary['delegated_ops']} operators in {summary['subgraphs']} delegated subgraph(s), "
            f"{summary['ops_outside']} outside")
    if summary["outside_by_op"]:
        line += " (" + ", ".join(f"{op} x{n}" for op, n in sorted(summary["outside_by_op"].items())) + ")"
    return line


def export(config: ExecuTorchConfig) -> dict:
    """Write config.out (.pte) and its manifest: load, wrap, export, lower, save, check. Returns the delegation
    summary and the parity figures."""
    # Load the checkpoint (refused where it does not fit --preset or --attention-stage), and with --int8 the int8
    # program quantised from it (hsvlt/quant), refused where it was quantised from another checkpoint or with
    # another attention stage.
    source = load_source(config.ckpt, config.preset, config.attention_stage)
    out = check_output_file(config.out, ".pte")
    attention_stage, quantization = config.attention_stage, None
    if config.int8 is not None:
        int8_program, attention_stage, quantization = load_for_export(config.int8, source, attention_stage)
    # The Core ML delegate is built for one input shape and computes in float16 (partitioners); XNNPACK plans
    # memory for the largest batch, so a program for one image at a time (a camera) is exported for exactly that.
    max_batch = 1 if config.backend == "coreml" else config.max_batch
    precision = "int8" if config.int8 is not None else ("fp16" if config.backend == "coreml" else "fp32")
    manifest = checkpoint_manifest(source, "executorch-" + config.backend, precision, attention_stage, quantization,
                                   max_batch=max_batch)
    # Wrap: the module to export, and the model as trained, which the check holds the program to.
    module = for_export(source.model, attention_stage) if config.int8 is None else int8_program.module()
    reference = AsTrainedHSVLT(source.model, attention_stage)
    # Export, and lower to the delegate.
    program = trace(module, source.img_size, None if max_batch == 1 else max_batch)
    buffer, summary = lower(program, config.backend)
    print(format_delegation(summary, config.backend))
    # Save the program and its manifest.
    write_bytes(out, buffer)
    write_manifest(out, manifest)
    print(f"wrote {out} ({size_mb(out):.2f} MB, {precision_label(manifest)}) and {manifest_path(out).name}")
    # Check: the program in the ExecuTorch runtime against the model as trained, in PyTorch.
    result = {"delegation": summary, "parity": None}
    if config.parity_images and config.backend == "coreml" and not coreml_runtime():
        print("parity check skipped: this ExecuTorch runtime has no Core ML backend (macOS and iOS only)")
    elif config.parity_images:
        from hsvlt.deploy.runtimes import ExecuTorchModel

        result["parity"] = check_parity(reference, source, config.parity_images,
                                        lambda images: ExecuTorchModel(out).run(images).probabilities, "ExecuTorch")
    return result


def parse_args(argv=None) -> ExecuTorchConfig:
    defaults = ExecuTorchConfig(ckpt=Path(), out=Path())
    parser = export_parser("python export/to_executorch.py", __doc__, "output program, e.g. model.pte", defaults)
    add_int8_argument(parser)
    parser.add_argument("--backend", default=defaults.backend, choices=BACKENDS,
                        help="delegate: xnnpack (CPU, every platform) or coreml (Apple; runs on macOS / iOS)")
    parser.add_argument("--max-batch", type=positive_int, default=defaults.max_batch,
                        help="largest batch the program accepts (xnnpack; memory grows with it; larger batches "
                             "run in chunks through hsvlt.deploy.runtimes)")
    return ExecuTorchConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    return export(config)
