"""edge_demo/camera.py headless: the shapes stream with each runtime, a folder of images, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hsvlt.deploy import camera
from hsvlt.deploy.runtimes import open_model
from hsvlt.deploy.sources import ShapesSource, read_bgr
from hsvlt.preprocess import preprocess_frame

FRAMES = 5
SHAPES_SIZE = 120
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_records(records: list[dict], model, images: list[np.ndarray]) -> None:
    """One record per frame, the manifest's label names, and exactly the runtime's probabilities for that frame."""
    assert len(records) == len(images)
    for index, (record, image) in enumerate(zip(records, images)):
        assert record["frame"] == index
        assert list(record["probabilities"]) == model.labels
        expected = model.run(preprocess_frame(image, model.input_size)).probabilities[0]
        written = np.array(list(record["probabilities"].values()), dtype=np.float32)
        np.testing.assert_allclose(written, expected, rtol=0, atol=1e-6)
        assert record["detected"] == [label for label, p, t in zip(model.labels, expected, model.thresholds)
                                      if p >= t]
        assert set(record["shown"]) <= set(model.labels)
        assert (record["width"], record["height"]) == (image.shape[1], image.shape[0])


@pytest.mark.parametrize("kind", ["pte", "onnx", "checkpoint"])
def test_shapes_stream_headless_with_each_runtime(kind, models, tmp_path):
    out = tmp_path / "out"
    summary = camera.main(["--model", str(models[kind]), "--source", "shapes", "--headless", "--max-frames",
                           str(FRAMES), "--threads", "1", "--shapes-size", str(SHAPES_SIZE), "--attention-stage", "1",
                           "--out", str(out)])
    assert summary["frames"] == FRAMES and summary["mean_fps"] > 0
    assert summary["latency_ms"]["p90"] >= summary["latency_ms"]["p50"] > 0
    records = read_jsonl(out / "detections.jsonl")
    frames = [frame for frame, _ in zip(ShapesSource(size=SHAPES_SIZE), range(FRAMES))]
    model = open_model(models[kind], threads=1, attention_stage=1)
    check_records(records, model, [frame.image for frame in frames])
    for record, frame in zip(records, frames):
        assert record["truth"] == frame.truth and record["truth"]
        assert set(record["where"]) == set(record["shown"])  # a peak for every shown label
        assert all(0 <= x <= SHAPES_SIZE and 0 <= y <= SHAPES_SIZE for x, y in record["where"].values())
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES


def test_folder_of_images_of_odd_sizes_and_channels(models, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a_color.png"), rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b_gray.png"), rng.integers(0, 256, (200, 90), dtype=np.uint8))
    cv2.imwrite(str(folder / "c_alpha.png"), rng.integers(0, 256, (64, 64, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "d_16bit.png"), rng.integers(0, 65536, (48, 80), dtype=np.uint16))
    (folder / "e_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    summary = camera.main(["--model", str(models["pte"]), "--source", str(folder), "--headless", "--threads", "1",
                           "--out", str(out)])
    assert f"skipped: {folder / 'e_broken.jpg'}: not an image" in capsys.readouterr().out
    assert summary["frames"] == 4
    names = ["a_color.png", "b_gray.png", "c_alpha.png", "d_16bit.png"]
    records = read_jsonl(out / "detections.jsonl")
    assert [r["name"] for r in records] == names
    check_records(records, open_model(models["pte"], threads=1), [read_bgr(folder / n) for n in names])
    assert sorted(p.name for p in out.glob("*.jpg")) == [Path(n).stem + ".jpg" for n in names]


def test_bad_source_is_one_line_and_a_non_zero_exit(models, tmp_path):
    missing = tmp_path / "nowhere.mp4"
    result = subprocess.run([sys.executable, "edge_demo/camera.py", "--model", str(models["onnx"]), "--source",
                             str(missing), "--headless", "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: {missing}: no such file or folder (--source takes a "
                                                      f"camera index, a video, an image, a folder of images or shapes)")


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "clip.mp4").write_bytes(b"\x00" * 1000) and d / "clip.mp4", "cannot read it as a video"),
    (lambda d: (d / "photo.png").write_bytes(b"\x89PNG broken") and d / "photo.png", "photo.png: not an image"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "folder holds no images"),
    (lambda d: "7", "no camera at index 7"),
])
def test_unreadable_sources_and_missing_camera(make, message, models, tmp_path):
    source = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        camera.main(["--model", str(models["onnx"]), "--source", str(source), "--headless",
                     "--out", str(tmp_path / "out")])
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)
    assert "\n" not in str(exit_info.value.code)


def test_benchmark_prints_end_to_end_fps(models, capsys):
    summary = camera.main(["--model", str(models["pte"]), "--source", "shapes", "--benchmark", "--max-frames", "8",
                           "--warmup", "2", "--threads", "1", "--shapes-size", str(SHAPES_SIZE)])
    output = capsys.readouterr().out
    assert summary["frames"] == 8 and summary["files"] == []
    assert "end-to-end" in output and "FPS (target 30 FPS" in output
    for stage in camera.STAGES:
        assert summary["stages_ms"][stage] > 0
