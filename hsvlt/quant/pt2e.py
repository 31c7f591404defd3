"""PT2E static int8 quantisation of the deployable HSVLT (torchao.quantization.pt2e + ExecuTorch's
XNNPACKQuantizer): int8 weights per output channel, int8 activations per tensor, a dynamic batch dimension.
It is the one int8 format that lowers to both XNNPACK and Core ML (docs/DESIGN.md section 5).

    graph = capture(model, qat=True)                      # hsvlt.deploy.wrapper.for_export(..., logits=True), traced
    prepared = prepare(graph, qat=True)                   # fake-quantised; train it (quant/qat.py) or calibrate
    program = to_program(convert(prepared), img_size)     # int8 program: images -> probabilities
    save_artifact(program, "qat.pt2", manifest)           # what export/to_executorch.py --int8 takes
    program, stage, quantization = load_for_export("qat.pt2", source)   # the exporters, checked against the checkpoint

Layers that stay float are chosen by name (FLOAT_LAYERS); a preset's default, default_float_layers (the
LayerNorm statistics, DEFAULT_FLOAT_LAYERS, and where the benchmark measured it faster more groups,
PRESET_FLOAT_LAYERS), comes from the reasons written beside it; `python reports/quantization.py --float-study`
measures each group kept float.

Why PT2E and not torchao's eager QAT (quantize_ with QATConfig, hsvlt/quant/eager.py): measured side by side by
`python reports/quantization.py --eager-study` (docs/QUANT_EAGER.md holds the figures), the eager flow's programs
score about the same mAP but run slower than PT2E's, are larger, and split into many XNNPACK subgraphs with
operators left outside, because it exports through the model as trained, without the rewrites. Its int8
configurations quantise activations at run time and cover linear layers only (convolutions stay float), its
quantised weights cannot be folded by the export-time rewrites, and dynamic activation quantisation does not
convert to Core ML (docs/DESIGN.md section 5). PT2E static quantisation covers convolutions, linears, adds and
multiplies and gives the one int8 artifact that XNNPACK and Core ML both take.
"""

import copy
import io
from dataclasses import fields, replace
from pathlib import Path

import torch

from hsvlt.checkpoint import SourceCheckpoint
from hsvlt.deploy.manifest import Quantization, manifest_path, parse_manifest, read_manifest, write_manifest
from hsvlt.deploy.wrapper import for_export, trace
from hsvlt.models.csa import ExportHead
from hsvlt.models.deployable import ChannelNorm, Rewrites, TokenNorm
from hsvlt.models.hsvlt import HSVLT
from hsvlt.models.ivla import LabelAttention, PixelAttention
from hsvlt.outputs import write_bytes
from hsvlt.toolchain import quiet_toolchain_calls

ARTIFACT_SUFFIX = ".pt2"
MAX_BATCH = 64


def _inside(node: torch.fx.Node, *classes: type) -> bool:
    """Whether `node` was traced inside a module of one of `classes` (the graph names module types by their
    qualified names)."""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in classes}
    return any(kind in names or kind in classes for _, kind in node.meta.get("nn_module_stack", {}).values())


def _module_paths(node: torch.fx.Node) -> list[str]:
    return [path for path, _ in node.meta.get("nn_module_stack", {}).values()]


def _is_depthwise(node: torch.fx.Node) -> bool:
    """A depthwise convolution (one filter per channel): groups > 1 on a 2-D conv."""
    return node.target == torch.ops.aten.conv2d.default and len(node.args) > 6 and node.args[6] > 1


def _is_residual_add(node: torch.fx.Node) -> bool:
    """An add of two computed tensors (a residual or a gate), not a bias or a constant."""
    if node.target != torch.ops.aten.add.Tensor:
        return False
    inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
    return len(inputs) == 2 and all(a.op == "call_function" for a in inputs)


# Layer groups that can stay float (--float-layers). Each is a test on a node of the captured graph (the
# module it came from, or its kind).
FLOAT_LAYERS = {
    # LayerNorm statistics (the mean and variance 1 x 1 convs / linears of ChannelNorm and TokenNorm).
    "norms": lambda node: _inside(node, ChannelNorm, TokenNorm),
    # Attention: the layers that compute the softmax inputs (scores) and mix its outputs.
    "attention": lambda node: _inside(node, LabelAttention, PixelAttention),
    # The CSA head: concatenation, per-class weights and the sum (the last layer).
    "head": lambda node: _inside(node, ExportHead),
    # The first layer: the stem convolution on the raw image.
    "stem": lambda node: any(path.startswith("downsample.0.0") for path in _module_paths(node)),
    # Residual and gate adds (sums of two computed tensors).
    "residual": _is_residual_add,
    # Depthwise convolutions: XNNPACK's int8 depthwise kernels are slower than its fp32 ones on x86 (they widen
    # each int8 tap to 32 bits; there is no dot-product form of a depthwise conv), so int8 gains nothing there.
    "depthwise": _is_depthwise,
}
# The LayerNorm statistics stay float by default. Their variance is a mean of squares, whose range one int8
# scale per tensor cannot hold: with everything int8 the fake-quantised graph's loss on the first training batches
# was orders of magnitude above fp32's and QAT diverged; with the norms float it starts where fp32's does. Float
# norms cost no measurable speed. `python reports/quantization.py --float-study` measures each group kept float.
DEFAULT_FLOAT_LAYERS: tuple[str, ...] = ("norms",)
# Where the benchmark measured a faster int8 program with more layers float, that preset keeps them float:
# `python reports/export_bench.py --int8-study` times each choice against the fp32 program, in a section of the
# page it writes (docs/EXPORT.md).
PRESET_FLOAT_LAYERS: dict[str, tuple[str, ...]] = {"hsvlt_nano": ("norms", "depthwise")}


def default_float_layers(preset: str) -> tuple[str, ...]:
    """The layer groups a preset's int8 program keeps float unless told otherwise."""
    return PRESET_FLOAT_LAYERS.get(preset, DEFAULT_FLOAT_LAYERS)


# Export-time rewrites that the benchmark measured slower in int8 than without, per preset (the fp32 programs
# keep every rewrite). `--int8-study` measures them too: none so far (an unsplit 7 x 7 depthwise kernel falls to
# XNNPACK's slow convolution path in int8 as in fp32).
PRESET_INT8_REWRITES: dict[str, Rewrites] = {}


def int8_rewrites(preset: str) -> Rewrites:
    return PRESET_INT8_REWRITES.get(preset, Rewrites())


def rewrites_off(rewrites: Rewrites) -> list[str]:
    """The rewrites an int8 program goes without (for its manifest)."""
    return [field.name for field in fields(Rewrites) if not getattr(rewrites, field.name)]


def layer_precisions(converted: torch.fx.GraphModule) -> dict[str, dict[str, int]]:
    """How many convolutions, depthwise convolutions and linear layers of a converted graph compute in int8 (their
    weight is an int8 constant, dequantised in the graph) and how many in float: what the manifest reports."""
    dequantize = {torch.ops.quantized_decomposed.dequantize_per_channel.default,
                  torch.ops.quantized_decomposed.dequantize_per_tensor.default}
    kinds = {torch.ops.aten.conv2d.default: "conv", torch.ops.aten.linear.default: "linear"}
    counts: dict[str, dict[str, int]] = {}
    for node in converted.graph.nodes:
        kind = kinds.get(node.target)
        if kind is None:
            continue
        kind = "depthwise conv" if _is_depthwise(node) else kind
        weight = node.args[1]
        precision = "int8" if isinstance(weight, torch.fx.Node) and weight.target in dequantize else "float"
        counts.setdefault(kind, {"int8": 0, "float": 0})[precision] += 1
    return counts


def quantization_summary(method: str, converted: torch.fx.GraphModule, float_layers: tuple[str, ...],
                         rewrites: Rewrites, figures: dict | None = None) -> Quantization:
    """What the manifest of a PT2E int8 program says of it (hsvlt.deploy.manifest.Quantization): `method` "qat" or
    "ptq", int8 activations with fixed ranges, the layer groups kept float, the int8 and float layer counts of the
    converted graph, the rewrites it goes without, and `figures` of the run that made it."""
    return Quantization(method=method, activations="int8", float_layers=list(float_layers),
                        layers=layer_precisions(converted), rewrites_off=rewrites_off(rewrites), figures=figures)


@quiet_toolchain_calls()
def quantizer(float_layers: tuple[str, ...] = DEFAULT_FLOAT_LAYERS, qat: bool = True):
    """XNNPACKQuantizer: symmetric int8, weights per channel; nodes of `float_layers` stay float."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    unknown = set(float_layers) - set(FLOAT_LAYERS)
    if unknown:
        raise ValueError(f"unknown float layers {sorted(unknown)}; choose from {', '.join(FLOAT_LAYERS)}")
    tests = [FLOAT_LAYERS[name] for name in float_layers]
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    return XNNPACKQuantizer().set_global(config).set_filter_function(
        lambda node: not any(test(node) for test in tests))


def capture(model: HSVLT, qat: bool, attention_stage: int | None = None,
            rewrites: Rewrites | None = None) -> torch.fx.GraphModule:
    """hsvlt.deploy.wrapper.for_export(model) with logits out, traced with a dynamic batch (example batch 2: a graph
    traced at batch 1 is specialised to it). For QAT, batch norm is left unfolded and traced in training
    mode, so that prepare_qat_pt2e simulates its folding while it trains; post-training quantisation takes
    the folded graph. `rewrites`: the export-time rewrites (default: the preset's int8 choice)."""
    rewrites = rewrites or int8_rewrites(model.config.preset)
    module = for_export(model, attention_stage, replace(rewrites, batch_norm=rewrites.batch_norm and not qat),
                        logits=True)
    module.train(qat)
    return trace(module, model.config.img_size, MAX_BATCH).module()


@quiet_toolchain_calls()
def prepare(graph: torch.fx.GraphModule, qat: bool,
            float_layers: tuple[str, ...] = DEFAULT_FLOAT_LAYERS) -> torch.fx.GraphModule:
    """Insert observers (PTQ) or fake quantisers (QAT)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    prepare_fn = prepare_qat_pt2e if qat else prepare_pt2e
    return prepare_fn(graph, quantizer(float_layers, qat))


@quiet_toolchain_calls()
def train_mode(prepared: torch.fx.GraphModule, training: bool) -> None:
    """model.train() / model.eval() for a captured graph (batch norm and dropout nodes)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if training else move_exported_model_to_eval)(prepared)


@quiet_toolchain_calls()
def freeze_observers(prepared: torch.fx.GraphModule) -> None:
    """Stop updating quantisation ranges (the fake quantisers keep quantising with the ranges they have)."""
    from torchao.quantization.pt2e import disable_observer

    prepared.apply(disable_observer)


BATCH_NORM_TRAINING_ARG = {torch.ops.aten._native_batch_norm_legit.default: 5,
                           torch.ops.aten.batch_norm.default: 5}


def freeze_batch_norm(prepared: torch.fx.GraphModule) -> int:
    """Normalise with the running statistics and stop updating them (call after every train_mode(True)).
    Returns the number of batch norms frozen."""
    frozen = 0
    for node in prepared.graph.nodes:
        index = BATCH_NORM_TRAINING_ARG.get(node.target)
        if index is not None and node.args[index]:
            node.args = node.args[:index] + (False,) + node.args[index + 1:]
            frozen += 1
    prepared.recompile()
    return frozen


@quiet_toolchain_calls()
def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A converted (int8 q/dq) copy of `prepared`, in eval mode; `prepared` can go on training."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(copy.deepcopy(prepared))
    train_mode(converted, False)
    drop_unused_tensors(converted)
    return converted


def drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete the parameters and buffers no node reads any more (the float weights that conversion replaced
    by int8 constants): they would otherwise be saved with the program, and its reload fails on them."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in list(graph.named_parameters()) + list(graph.named_buffers()):
        if name not in used:
            *path, leaf = name.split(".")
            delattr(graph.get_submodule(".".join(path)), leaf)


def append_sigmoid(converted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Turn the logits output (the first) of the converted graph into probabilities, in place. (Wrapping the
    graph in a module instead gives a program whose nested parameters do not survive reloading.)"""
    output = next(node for node in converted.graph.nodes if node.op == "output")
    values = output.args[0]
    first = values[0] if isinstance(values, (tuple, list)) else values
    with converted.graph.inserting_before(output):
        probabilities = converted.graph.call_function(torch.ops.aten.sigmoid.default, (first,))
    if isinstance(values, (tuple, list)):
        output.args = (type(values)([probabilities, *values[1:]]),)
    else:
        output.args = (probabilities,)
    converted.recompile()
    return converted


@quiet_toolchain_calls()
def to_program(converted: torch.fx.GraphModule, img_size: int) -> torch.export.ExportedProgram:
    """The int8 program the exporters take: images in [0, 1] (dynamic batch) -> probabilities (a copy of
    `converted` gets the sigmoid)."""
    return trace(append_sigmoid(copy.deepcopy(converted)), img_size, MAX_BATCH)


@quiet_toolchain_calls()
def save_artifact(program: torch.export.ExportedProgram, path: str | Path, manifest: dict) -> None:
    """X.pt2 (torch.export.save) and the manifest X.pt2.json beside it."""
    # Serialised in memory first: torch.export.save aborts the whole process (a C++ exception in a destructor)
    # when the disk fills under it, where a plain write raises an error that leaves the previous file in place.
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    write_bytes(path, buffer.getvalue())
    write_manifest(path, manifest)


@quiet_toolchain_calls()
def load_artifact(path: str | Path) -> tuple[torch.export.ExportedProgram, dict]:
    """(program, manifest) of an artifact written by save_artifact; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: int8 artifact not found")
    manifest = read_manifest(path)
    if manifest.get("precision") != "int8" or "checkpoint_sha256" not in manifest:
        raise ValueError(f"{manifest_path(path)}: not the manifest of an int8 artifact (made by quant/qat.py)")
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers the quantize / dequantize ops)

    try:
        program = torch.export.load(path)
    except Exception as error:  # torch.export.load raises many types for a file it cannot read
        raise ValueError(f"{path}: not a torch.export program ({str(error).splitlines()[0][:200]})") from None
    return program, manifest


def load_for_export(path: str | Path, source: SourceCheckpoint, attention_stage: int | None = None):
    """(program, attention stage, how it was quantised) of an artifact about to be exported with the checkpoint
    it was quantised from; refused, naming the file, when it was made from another checkpoint or with another
    attention stage than asked for. How it was quantised (QAT or PTQ, the layer groups kept float, int8 and float
    layer counts) goes into the exported file's manifest; the run's figures stay with the artifact."""
    program, manifest = load_artifact(path)
    if manifest["checkpoint_sha256"] != source.sha256:
        raise ValueError(f"{path}: was quantised from another checkpoint than {source.path}")
    stage = manifest.get("attention_stage")
    if attention_stage is not None and attention_stage != stage:
        raise ValueError(f"{path}: was quantised with attention stage {stage}, not {attention_stage} "
                         f"(run quant/qat.py with --attention-stage {attention_stage})")
    return program, stage, parse_manifest(manifest).quantization.without_figures()
