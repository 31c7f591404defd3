"""Each command's flags parse into its settings dataclass, and a flag left out takes the dataclass's default: the
default is stated once, in the dataclass, and the parser reads it from there."""

import dataclasses
from pathlib import Path

import pytest

from hsvlt import evaluate, predict
from hsvlt.export import evaluate_artifact, to_coreml, to_executorch, to_onnx
from hsvlt.export.common import ExportConfig
from hsvlt.labels import __main__ as labels_command

# (parse_args, the flags a run cannot do without, the config those alone give)
COMMANDS = [
    (evaluate.parse_args, ["--ckpt", "best.pt"], evaluate.EvaluateConfig(ckpt="best.pt")),
    (predict.parse_args, ["photos", "--model", "model.pte"],
     predict.PredictConfig(source=["photos"], model="model.pte")),
    (to_executorch.parse_args, ["--ckpt", "best.pt", "--out", "model.pte"],
     to_executorch.ExecuTorchConfig(ckpt=Path("best.pt"), out=Path("model.pte"))),
    (to_coreml.parse_args, ["--ckpt", "best.pt", "--out", "HSVLT.mlpackage"],
     to_coreml.CoreMLConfig(ckpt=Path("best.pt"), out=Path("HSVLT.mlpackage"))),
    (to_onnx.parse_args, ["--ckpt", "best.pt", "--out", "model.onnx"],
     to_onnx.OnnxConfig(ckpt=Path("best.pt"), out=Path("model.onnx"))),
    (evaluate_artifact.parse_args, ["--model", "model.pte"],
     evaluate_artifact.EvaluateArtifactConfig(model=Path("model.pte"))),
    (labels_command.parse_args, ["--set", "voc"], labels_command.EmbedLabelsConfig(set="voc")),
]


@pytest.mark.parametrize("parse_args, argv, expected", COMMANDS, ids=lambda x: getattr(x, "__module__", None))
def test_flags_left_out_take_the_dataclass_defaults(parse_args, argv, expected):
    assert parse_args(argv) == expected


def test_every_exporter_takes_the_shared_flags():
    shared = [field.name for field in dataclasses.fields(ExportConfig)]
    for config in (to_executorch.ExecuTorchConfig, to_coreml.CoreMLConfig, to_onnx.OnnxConfig):
        assert issubclass(config, ExportConfig)
        assert [field.name for field in dataclasses.fields(config)][:len(shared)] == shared
    given = ["--ckpt", "a.pt", "--out", "b", "--attention-stage", "2", "--preset", "hsvlt_nano", "--parity-images", "3"]
    for parse_args in (to_executorch.parse_args, to_coreml.parse_args, to_onnx.parse_args):
        config = parse_args(given)
        assert (config.attention_stage, config.preset, config.parity_images) == (2, "hsvlt_nano", 3)
