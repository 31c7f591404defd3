"""hsvlt.Classifier, `hsvlt predict` and the `hsvlt` command, on the tiny pico exports (real runtimes)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hsvlt import Classifier
from hsvlt.command import JOBS
from hsvlt.command import main as hsvlt_main
from hsvlt.deploy.runtimes import open_model
from hsvlt.images import BadImage, read_image
from hsvlt.predict import main as predict_main
from hsvlt.preprocess import preprocess_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six photos in two folders (one 16-bit, one with alpha), and a text file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "trip").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 256, (50 + 7 * i, 61, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "trip" / "deep.png"), rng.integers(0, 65536, (40, 40, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "trip" / "alpha.png"), rng.integers(0, 256, (40, 40, 4), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.parametrize("kind", ["pte", "onnx", "checkpoint"])
def test_labels_are_the_runtime_probabilities_above_the_manifest_thresholds(kind, models, photos):
    classifier = Classifier(models[kind], attention_stage=1 if kind == "checkpoint" else None)
    result = classifier(photos / "0.jpg")
    runtime = open_model(models[kind], attention_stage=1 if kind == "checkpoint" else None)
    image = read_image(photos / "0.jpg")
    expected = runtime.run(preprocess_image(image, runtime.input_size)).probabilities[0]
    np.testing.assert_allclose(list(result.probabilities.values()), expected, rtol=0, atol=1e-6)
    above = [label for label, p, t in zip(runtime.labels, expected, runtime.thresholds) if p >= t]
    assert sorted(result.labels) == sorted(above)
    assert result.scores == sorted(result.scores, reverse=True)
    assert result.size == (image.shape[1], image.shape[0])
    assert set(result.where) == set(result.labels)  # every export here has the attention output
    assert all(0 <= x <= image.shape[1] and 0 <= y <= image.shape[0] for x, y in result.where.values())


def test_paths_arrays_and_batches_agree(models, photos):
    classifier = Classifier(models["onnx"], batch_size=2)
    paths = sorted(photos.glob("*.jpg"))
    batched = classifier(paths)
    assert len(batched) == len(paths)
    for path, result in zip(paths, batched):
        alone = classifier(read_image(path))
        np.testing.assert_allclose(list(result.probabilities.values()), list(alone.probabilities.values()),
                                   rtol=0, atol=1e-6)
        assert result.source == str(path) and alone.source is None


def test_threshold_and_top_k_overrides(models, photos):
    classifier = Classifier(models["onnx"])
    everything = classifier(photos / "1.jpg", threshold=0.0)
    assert len(everything.labels) == len(classifier.labels)
    top = classifier(photos / "1.jpg", threshold=0.0, top_k=3)
    assert top.labels == everything.labels[:3]
    assert classifier(photos / "1.jpg", threshold=1.0).labels == []


@pytest.mark.parametrize("call, error, message", [
    (lambda c, p: c(p / "notes.txt"), BadImage, "notes.txt: not an image"),
    (lambda c, p: c(np.zeros((4, 4, 2), np.uint8)), ValueError, "H x W x 3"),
    (lambda c, p: c(p / "0.jpg", threshold=1.5), ValueError, "threshold must be between 0 and 1"),
    (lambda c, p: c(p / "0.jpg", top_k=0), ValueError, "top_k must be at least 1"),
    (lambda c, p: c(42), ValueError, "a path or a numpy array"),
])
def test_bad_input_is_a_one_line_error(call, error, message, models, photos):
    with pytest.raises(error, match=message):
        call(Classifier(models["onnx"]), photos)


def test_predict_writes_json_lines_and_csv_never_among_the_inputs(models, photos, tmp_path, capsys):
    out = tmp_path / "predictions"
    predictions = predict_main([str(photos), "--model", str(models["pte"]), "--out", str(out), "--glob", "*.png"])
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["alpha.png", "deep.png"]  # recursive, --glob, name order
    assert len(predictions) == 2 and "deep.png" in printed
    assert set(records[0]["probabilities"]) == set(Classifier(models["pte"]).labels)
    again = predict_main([str(photos / "0.jpg"), str(photos / "trip"), "--model", str(models["onnx"]),
                          "--out", str(out), "--format", "csv", "--save-images"])
    second = tmp_path / "predictions2"  # the first run's folder is kept
    rows = list(csv.DictReader((second / "predictions.csv").open()))
    assert len(rows) == len(again) == 3 and rows[0]["image"] == str(photos / "0.jpg")
    for row, prediction in zip(rows, again):
        assert row["labels"] == "|".join(prediction.labels)
        for label, probability in prediction.probabilities.items():
            assert float(row[label]) == pytest.approx(probability, abs=1e-6)
    assert sorted(p.name for p in (second / "images").iterdir()) == ["0.jpg.jpg", "alpha.png.jpg", "deep.png.jpg"]
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(photos), "--model", str(models["onnx"]), "--out", str(photos / "out")])
    assert "inside the input folder" in str(exit_info.value.code)


def test_the_hsvlt_command_lists_every_job_and_runs_them(capsys, models, tmp_path):
    hsvlt_main(["--help"])
    listing = capsys.readouterr().out
    for name, job in JOBS.items():
        assert name in listing and job.example in listing
    with pytest.raises(SystemExit):
        hsvlt_main(["evaluate-artifact", "--help"])
    assert capsys.readouterr().out.startswith("usage: hsvlt evaluate-artifact")
    with pytest.raises(SystemExit) as exit_info:  # the job's own one-line errors
        hsvlt_main(["predict", str(models["checkpoint"].parent / "model.onnx.json"), "--model",
                    str(models["onnx"]), "--out", str(tmp_path / "p")])
    assert str(exit_info.value.code).endswith("model.onnx.json: not an image")


def test_the_installed_command_lists_jobs_without_importing_them(installed_hsvlt):
    done = subprocess.run([str(installed_hsvlt), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "hsvlt export executorch" in done.stdout
    done = subprocess.run([str(installed_hsvlt), "export"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "choose a target: executorch, coreml, onnx" in done.stderr
    probe = ("import sys; from hsvlt.command import main; main(['--help']); "
             "print(sorted(m for m in ('torch', 'albumentations', 'matplotlib', 'executorch', 'coremltools') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["-m hsvlt.train", "-m hsvlt.evaluate", "-m hsvlt.predict",
                                     "export/to_executorch.py", "edge_demo/camera.py"])
def test_help_imports_no_toolchain(command):
    run = (f"runpy.run_module({command.removeprefix('-m ')!r}, run_name='__main__')" if command.startswith("-m ")
           else f"runpy.run_path({command!r}, run_name='__main__')")
    probe = (f"import sys, runpy; sys.argv = ['x', '--help']\n"
             f"try:\n    {run}\nexcept SystemExit:\n    print('help shown')\n"
             "print(sorted(m for m in ('albumentations', 'matplotlib', 'executorch', 'coremltools', 'onnxruntime', "
             "'torchao') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.strip().splitlines()[-2:] == ["help shown", "[]"], done.stderr[-1000:]
