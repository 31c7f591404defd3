"""One interface over the three ways to run an HSVLT classifier: an ExecuTorch program (.pte), an ONNX file
(.onnx) or a training checkpoint (.pt, PyTorch).

    model = open_model("model.pte")          # reads model.pte.json beside it (hsvlt.deploy.manifest.read_manifest)
    output = model.run(batch)                # float32 N x 3 x S x S in [0, 1] (hsvlt.preprocess.to_input)
    output.probabilities                     # N x C
    output.attention                         # N x C x h x w, or None when the file has no attention output

`model.labels`, `model.thresholds` and `model.input_size` come from the manifest (a checkpoint carries them
itself), so a caller needs nothing else to turn probabilities into label sets.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hsvlt.deploy.manifest import manifest_path, read_manifest
from hsvlt.deploy.wrapper import AsTrainedHSVLT
from hsvlt.toolchain import native_stderr_filtered, quiet_toolchain_calls

CHECKPOINT_SUFFIXES = (".pt", ".pth")


def cannot_load(path: Path, runtime: str, error: Exception) -> ValueError:
    """The one-line error for a file a runtime refuses, with the first line of the runtime's own reason."""
    return ValueError(f"{path}: {runtime} cannot load it ({str(error).splitlines()[0][:200]})")


@dataclass
class Output:
    probabilities: np.ndarray  # N x C, float32
    attention: np.ndarray | None = None  # N x C x h x w, float32


class Model:
    """What every runtime shares: the manifest's labels, thresholds and input size, and input checks."""

    runtime = "?"

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.labels: list[str] = list(manifest["labels"])
        self.thresholds = np.asarray(manifest["thresholds"], dtype=np.float32)
        self.input_size = int(manifest["input"]["shape"][-1])
        self.has_attention = any(output["name"] == "attention" for output in manifest.get("outputs", []))

    def check_program(self, input_shape, output_shape) -> None:
        """The manifest against the program's own input (N x 3 x S x S) and probabilities (N x C) shapes, where
        the runtime states them (a dimension it leaves symbolic is not compared)."""
        manifest = manifest_path(self.path).name
        side = input_shape[-1] if input_shape is not None and len(input_shape) == 4 else None
        if isinstance(side, int) and side != self.input_size:
            raise ValueError(f"{manifest}: says {self.input_size} px input, but {self.path.name} takes {side} px "
                             f"(a manifest of another export?)")
        classes = output_shape[-1] if output_shape is not None and len(output_shape) == 2 else None
        if isinstance(classes, int) and classes != len(self.labels):
            raise ValueError(f"{manifest}: lists {len(self.labels)} labels, but {self.path.name} scores {classes} "
                             f"(a manifest of another export?)")
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"{manifest}: {len(self.thresholds)} thresholds for {len(self.labels)} labels")

    def check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        expected = (3, self.input_size, self.input_size)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"{self.path.name}: input must be N x {' x '.join(map(str, expected))}, "
                             f"got {' x '.join(map(str, batch.shape))}")
        if batch.dtype != np.float32:
            raise ValueError(f"{self.path.name}: input must be float32 in [0, 1] (hsvlt.preprocess.to_input), "
                             f"got {batch.dtype}")
        return np.ascontiguousarray(batch)

    def run(self, batch: np.ndarray) -> Output:
        """float32 N x 3 x S x S in [0, 1] -> probabilities (and attention); refuses input of another shape or
        type, and output that is not finite (damaged weights would otherwise give NaN labels silently)."""
        output = self.execute(self.check(batch))
        if not np.isfinite(output.probabilities).all():
            raise ValueError(f"{self.path.name}: {self.runtime} returned NaN or infinite probabilities (damaged "
                             f"weights, or input outside [0, 1]?)")
        return output

    def execute(self, batch: np.ndarray) -> Output:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name}, {len(self.labels)} labels, {self.input_size} px)"


def attention_peak(attention: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """One label's h x w attention map -> the centre of its strongest cell, in pixels of the width x height image
    the model saw squeezed to a square (an attention cell covers the same fraction of its height and width)."""
    rows, cols = attention.shape
    row, col = np.unravel_index(int(np.argmax(attention)), attention.shape)
    return (col + 0.5) * width / cols, (row + 0.5) * height / rows


def _outputs(values) -> Output:
    values = [v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]
    return Output(values[0].astype(np.float32), values[1].astype(np.float32) if len(values) > 1 else None)


class ExecuTorchModel(Model):
    """A .pte through the ExecuTorch runtime (executorch.runtime). Batches larger than the program's
    largest batch run in chunks."""

    runtime = "ExecuTorch"

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__(path, read_manifest(path))
        with quiet_toolchain_calls():
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
            from executorch.runtime import Runtime

        if threads:
            _unsafe_reset_threadpool(threads)
        try:
            with native_stderr_filtered():
                program = Runtime.get().load_program(path)
                self.method = program.load_method("forward")
        except (RuntimeError, ValueError) as error:
            raise cannot_load(path, "the ExecuTorch runtime", error) from None
        metadata = self.method.metadata
        input_shape = tuple(metadata.input_tensor_meta(0).sizes())
        self.max_batch = int(input_shape[0])
        self.check_program(input_shape, tuple(metadata.output_tensor_meta(0).sizes()))

    def execute(self, batch: np.ndarray) -> Output:
        batch = torch.from_numpy(batch)
        parts = [_outputs(self.method.execute([batch[i:i + self.max_batch]]))
                 for i in range(0, len(batch), self.max_batch)]
        attention = np.concatenate([p.attention for p in parts]) if parts[0].attention is not None else None
        return Output(np.concatenate([p.probabilities for p in parts]), attention)


class OnnxModel(Model):
    """An .onnx file through ONNX Runtime (CPU)."""

    runtime = "ONNX Runtime"

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__(path, read_manifest(path))
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types, all meaning "unreadable"
            raise cannot_load(path, "ONNX Runtime", error) from None
        self.input_name = self.session.get_inputs()[0].name
        self.check_program(self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape)

    def execute(self, batch: np.ndarray) -> Output:
        return _outputs(self.session.run(None, {self.input_name: batch}))


class TorchModel(Model):
    """A training checkpoint in eager PyTorch (hsvlt.deploy.wrapper.AsTrainedHSVLT: the model exactly as trained)."""

    runtime = "PyTorch"

    def __init__(self, path: Path, threads: int | None = None, attention_stage: int | None = None):
        from hsvlt.checkpoint import load_source
        from hsvlt.deploy.manifest import checkpoint_manifest

        source = load_source(path, attention_stage=attention_stage)
        super().__init__(path, checkpoint_manifest(source, "checkpoint", attention_stage=attention_stage))
        if threads:
            torch.set_num_threads(threads)
        self.module = AsTrainedHSVLT(source.model, attention_stage).eval()

    @torch.inference_mode()
    def execute(self, batch: np.ndarray) -> Output:
        output = self.module(torch.from_numpy(batch))
        return _outputs(output if isinstance(output, tuple) else (output,))


def open_model(path: str | Path, threads: int | None = None, attention_stage: int | None = None) -> Model:
    """Open a .pte, .onnx or checkpoint by its suffix. `threads` sets the runtime's CPU threads (default: the
    runtime's own choice); `attention_stage` applies to checkpoints (exported files have it or not)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mlpackage" and path.exists():
        raise ValueError(f"{path}: a Core ML package runs on macOS and iOS only; here, run the same model as "
                         f"an ExecuTorch program (.pte) or an ONNX file (.onnx) exported from its checkpoint")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if suffix == ".pte":
        return ExecuTorchModel(path, threads)
    if suffix == ".onnx":
        return OnnxModel(path, threads)
    if suffix in CHECKPOINT_SUFFIXES:
        return TorchModel(path, threads, attention_stage)
    raise ValueError(f"{path}: unknown model type {suffix or '(no suffix)'}; expected .pte, .onnx, "
                     f"or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
