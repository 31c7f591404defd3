"""Every command meets bad input with one line naming the file or flag, the right exit status (2: a usage error,
1: a failure at run time), no traceback, and every file that was there before left byte-identical."""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hsvlt import evaluate, train
from hsvlt.checkpoint import load_checkpoint, save_checkpoint
from hsvlt.cli import run_command
from hsvlt.deploy import camera
from hsvlt.export import evaluate_artifact, to_coreml, to_executorch, to_onnx
from hsvlt.quant import qat

TINY = ["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "32", "--val-size", "16", "--batch-size", "16",
        "--workers", "0", "--epochs", "1"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this ran",))


@pytest.fixture(scope="module")
def files(tmp_path_factory, models):
    """Bad files of every kind, beside good ones, in one folder."""
    folder = tmp_path_factory.mktemp("bad_input")
    (folder / "text.pt").write_text("these are notes, not weights\n" * 20)
    torch.save({"payload": Evil()}, folder / "evil.pt")
    state = load_checkpoint(models["checkpoint"])
    key = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    state["model"][key].view(-1)[0] = float("nan")  # one flipped exponent bit's worth of damage
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, folder / "nan.pt")
    (folder / "existing_file").write_text("a user's file\n")
    (folder / "model.mlpackage").mkdir()
    photos = folder / "photos"
    photos.mkdir()
    import cv2

    cv2.imwrite(str(photos / "a.png"), np.full((40, 40, 3), 120, np.uint8))
    # A program beside a manifest of another model: 10 labels in the program, 3 in the manifest.
    (folder / "mismatch.onnx").write_bytes(models["onnx"].read_bytes())
    manifest = json.loads(Path(f"{models['onnx']}.json").read_text())
    manifest["labels"], manifest["thresholds"] = manifest["labels"][:3], manifest["thresholds"][:3]
    for output in manifest["outputs"]:  # a manifest true to itself: its outputs have 3 labels too
        output["shape"][1] = 3
    Path(f"{folder / 'mismatch.onnx'}.json").write_text(json.dumps(manifest))
    (folder / "all_ignored.csv").write_text("image,labels\nphotos/a.png,?dog\n")
    (folder / "duplicates.csv").write_text("image,labels\nphotos/a.png,dog\nphotos/a.png,cat\n")
    return folder


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def ckpt(f, m):
    return str(m["checkpoint"])


# (id, command, argv from (files folder, models), exit status, text the one line must hold)
CASES = [
    ("train img-size 7", train.main, lambda f, m: TINY + ["--img-size", "7", "--out", str(f / "r")], 2, "--img-size"),
    ("train train-size 0", train.main, lambda f, m: TINY + ["--train-size", "0"], 2, "--train-size"),
    ("train val-size 0", train.main, lambda f, m: TINY + ["--val-size", "0"], 2, "--val-size"),
    ("train lr -1", train.main, lambda f, m: TINY + ["--lr", "-1"], 2, "--lr"),
    ("train out is a file", train.main, lambda f, m: TINY + ["--out", str(f / "existing_file")], 1, "existing_file"),
    ("train resume text", train.main, lambda f, m: TINY + ["--resume", str(f / "text.pt"), "--out", str(f / "r")],
     1, "text.pt: not a readable checkpoint"),
    ("train resume evil", train.main, lambda f, m: TINY + ["--resume", str(f / "evil.pt"), "--out", str(f / "r")],
     1, "evil.pt: not a plain checkpoint"),
    ("train pretrained text", train.main, lambda f, m: TINY + ["--pretrained", str(f / "text.pt"),
                                                               "--out", str(f / "r")], 1, "text.pt"),
    ("train override alone", train.main, lambda f, m: TINY + ["--override", "lr"], 2, "--override"),
    ("train csv all ignored", train.main, lambda f, m: TINY + ["--data", "csv", "--root", str(f),
                                                               "--out", str(f / "r")], 1, ".csv"),
    ("evaluate text", evaluate.main, lambda f, m: ["--ckpt", str(f / "text.pt")], 1, "text.pt: not a readable"),
    ("evaluate nan", evaluate.main, lambda f, m: ["--ckpt", str(f / "nan.pt")], 1, "nan.pt: weight"),
    ("evaluate batch 0", evaluate.main, lambda f, m: ["--ckpt", ckpt(f, m), "--batch-size", "0"], 2, "--batch-size"),
    ("evaluate json under a file", evaluate.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--json", str(f / "existing_file" / "x.json")], 1, "x.json"),
    ("qat epochs 0", qat.main, lambda f, m: ["--ckpt", ckpt(f, m), "--out", str(f / "q.pt2"), "--epochs", "0"],
     2, "--epochs"),
    ("qat text", qat.main, lambda f, m: ["--ckpt", str(f / "text.pt"), "--out", str(f / "q.pt2")], 1, "text.pt"),
    ("executorch text", to_executorch.main, lambda f, m: ["--ckpt", str(f / "text.pt"), "--out", str(f / "m.pte")],
     1, "text.pt: not a readable"),
    ("executorch evil", to_executorch.main, lambda f, m: ["--ckpt", str(f / "evil.pt"), "--out", str(f / "m.pte")],
     1, "not loaded"),
    ("executorch max-batch 0", to_executorch.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--out", str(f / "m.pte"), "--max-batch", "0"], 2, "--max-batch"),
    ("executorch attention 9", to_executorch.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--out", str(f / "m.pte"), "--attention-stage", "9"], 2, "--attention-stage"),
    ("executorch attention -1", to_executorch.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--out", str(f / "m.pte"), "--attention-stage", "-1"], 2, "--attention-stage"),
    ("executorch int8 missing", to_executorch.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--int8", str(f / "missing.pt2"), "--out", str(f / "m.pte")],
     1, "missing.pt2: int8 artifact not found"),
    ("onnx text", to_onnx.main, lambda f, m: ["--ckpt", str(f / "text.pt"), "--out", str(f / "m.onnx")], 1, "text.pt"),
    ("coreml text", to_coreml.main, lambda f, m: ["--ckpt", str(f / "text.pt"), "--out", str(f / "m.mlpackage")],
     1, "text.pt"),
    ("coreml int8 missing", to_coreml.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--int8", str(f / "missing.pt2"), "--out", str(f / "m.mlpackage")],
     1, "missing.pt2: int8 artifact not found"),
    ("coreml int8 with weight quantisation", to_coreml.main,
     lambda f, m: ["--ckpt", ckpt(f, m), "--int8", str(f / "missing.pt2"), "--quantize-weights",
                   "--out", str(f / "m.mlpackage")], 2, "not allowed with argument --int8"),
    ("artifact limit 0", evaluate_artifact.main, lambda f, m: ["--model", str(m["onnx"]), "--limit", "0"],
     2, "--limit"),
    ("artifact mlpackage", evaluate_artifact.main, lambda f, m: ["--model", str(f / "model.mlpackage")],
     1, "macOS and iOS only"),
    ("artifact manifest mismatch", evaluate_artifact.main, lambda f, m: ["--model", str(f / "mismatch.onnx")],
     1, "mismatch.onnx.json: lists 3 labels"),
    ("demo nan checkpoint", camera.main, lambda f, m: ["--model", str(f / "nan.pt"), "--source", "shapes",
                                                       "--headless", "--out", str(f / "o")], 1, "nan.pt"),
    ("demo text checkpoint", camera.main, lambda f, m: ["--model", str(f / "text.pt"), "--source", "shapes",
                                                        "--headless", "--out", str(f / "o")], 1, "text.pt"),
    ("demo mlpackage", camera.main, lambda f, m: ["--model", str(f / "model.mlpackage"), "--source", "shapes",
                                                  "--headless"], 1, "macOS and iOS only"),
    ("demo out in input folder", camera.main, lambda f, m: ["--model", str(m["onnx"]), "--source", str(f / "photos"),
                                                            "--headless", "--out", str(f / "photos")],
     1, "inside the input folder"),
    ("demo max-frames 0", camera.main, lambda f, m: ["--model", str(m["onnx"]), "--max-frames", "0"], 2,
     "--max-frames"),
    ("demo smoothing 1", camera.main, lambda f, m: ["--model", str(m["onnx"]), "--smoothing", "1"], 2, "--smoothing"),
]


@pytest.mark.parametrize("name, command, argv, status, text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_no_file(name, command, argv, status, text, files, models, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(files)
    if "csv" in name:
        (files / "train.csv").write_text((files / "all_ignored.csv").read_text())
        (files / "val.csv").write_text((files / "all_ignored.csv").read_text())
    before = fingerprint(files)
    with pytest.raises(SystemExit) as exit_info:
        run_command(command, argv(files, models))
    err = capsys.readouterr().err
    code = exit_info.value.code
    got_status, line = (1, code) if isinstance(code, str) else (code, err.strip().splitlines()[-1])
    assert got_status == status, (line, err[-500:])
    assert line.startswith("error: ") or ": error: " in line, line  # ours, or argparse's "prog: error: ..."
    assert text in line and "\n" not in line, line
    assert "Traceback" not in err
    after = fingerprint(files)
    assert {k: v for k, v in after.items() if k in before} == before
    for csv in ("train.csv", "val.csv"):
        (files / csv).unlink(missing_ok=True)


def test_a_malicious_checkpoint_never_runs(files, capfd):
    with pytest.raises(SystemExit):
        run_command(evaluate.main, ["--ckpt", str(files / "evil.pt")])
    assert "this ran" not in capfd.readouterr().out


def test_csv_duplicates_are_refused_naming_the_lines(files):
    from hsvlt.data.custom_csv import CSVDataset

    with pytest.raises(ValueError, match=r"duplicates\.csv:3: photos/a\.png is listed again \(first at line 2\)"):
        CSVDataset(files / "duplicates.csv")


def test_an_unexpected_exception_is_one_line_unless_debugging(monkeypatch, capsys):
    def broken():
        raise KeyError("deep inside a library")

    with pytest.raises(SystemExit) as exit_info:
        run_command(broken)
    assert exit_info.value.code == "error: unexpected KeyError: 'deep inside a library' (HSVLT_DEBUG=1 shows where)"
    monkeypatch.setenv("HSVLT_DEBUG", "1")
    with pytest.raises(KeyError):
        run_command(broken)


def test_a_command_line_usage_error_exits_2_without_traceback(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "hsvlt.train", "--img-size", "7"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("argument --img-size: 7 is less than 32")
    assert "Traceback" not in result.stderr
