"""The web demo in a real browser: Debian's Chromium, headless and offline, driven over the DevTools protocol
(hsvlt/deploy/chromium.py). A real photo (with an EXIF orientation) and a fake camera fed from a video file go
through the page; its scores are held to ONNX Runtime in Python on the pixels the page used, its labels to
`hsvlt predict`'s, and every request it made to the demo server. Bad input must leave a message on the page and
in the server's log, and the page working. In CI (CI=true) these tests fail when Chromium is missing."""

import base64
import json
import os
import re
import time

import cv2
import numpy as np
import pytest

from hsvlt.deploy.chromium import Chromium, fake_camera_flags
from hsvlt.deploy.runtimes import OnnxModel
from hsvlt.deploy.smoothing import LabelSmoother
from hsvlt.images import composite_over_white, read_image
from hsvlt.outputs import write_bytes
from hsvlt.preprocess import preprocess_image

SCORE_TOLERANCE = 1e-3
CAMERA_SIZE = (320, 240)


pytestmark = pytest.mark.usefixtures("chromium_installed", "ort_dist")


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    """A real photo (scikit-image's cat, 451 x 300) saved as a phone held sideways saves it: the pixels stored
    turned (300 x 451), EXIF orientation 8 saying how to turn them upright."""
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    stored = np.ascontiguousarray(np.rot90(skimage.data.chelsea(), k=-1))  # the sensor's view
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to view
    Image.fromarray(stored).save(path, quality=90, exif=exif.tobytes())
    assert cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION).shape == (451, 300, 3)
    assert read_image(path).shape == (300, 451, 3)
    return path


def write_y4m(path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Frames (BGR, all one size) as a YUV4MPEG2 video, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as video:
        video.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            video.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.fixture(scope="session")
def camera_video(tmp_path_factory):
    """A camera panning across a real photo: 12 frames of 320 x 240."""
    import skimage.data

    scene = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)  # 400 x 600
    width, height = CAMERA_SIZE
    frames = [np.ascontiguousarray(scene[40 + 5 * i:40 + 5 * i + height, 20 * i:20 * i + width])
              for i in range(12)]
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(path, frames, fps=30)
    return path


def open_page(browser: Chromium, server):
    page = browser.open(server.url)
    page.wait_for("window.hsvlt && window.hsvlt.status !== 'loading'", timeout_s=60)
    assert page.evaluate("hsvlt.status") == "ready", page.evaluate("hsvlt.messages")
    return page


def decode(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def last_scores_and_their_input(page, size: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The page's last scores, the RGBA pixels it decoded for them (height x width x 4) and the tensor it fed the
    model (1 x 3 x S x S). One evaluation reads all three: a running camera replaces them with every frame, so
    two evaluations could pair one frame's scores with the next frame's pixels."""
    state = page.evaluate("({last: hsvlt.last, used: hsvlt.inspect()})")
    used = state["used"]
    rgba = decode(used["rgba"], np.uint8).reshape(used["height"], used["width"], 4)
    tensor = decode(used["input"], "<f4").reshape(1, 3, size, size)
    return state["last"], rgba, tensor


def check_runtime(page) -> None:
    runtime = page.evaluate("hsvlt.runtime")
    assert [p["provider"] for p in runtime["providers"]] == ["CPUExecutionProvider"]  # read from the runtime's log
    assert runtime["providers"][0]["nodes"] > 10
    assert (runtime["threads"], runtime["crossOriginIsolated"], runtime["build"]) == (2, True, "wasm")
    assert runtime["ortVersion"] == "1.31.1"
    shown = page.evaluate("[...document.querySelectorAll('#provider, #threads, #isolated')].map(e => e.textContent)")
    assert shown[0].startswith("WebAssembly (CPU): ") and shown[1:] == ["2", "yes"]


def check_scores_on_the_pages_pixels(page, model: OnnxModel) -> tuple[dict, np.ndarray]:
    """The page's tensor is Python's preprocessing of the page's pixels, and its scores are ONNX Runtime's
    (Python) on that tensor. Returns the scores and the pixels."""
    last, rgba, tensor = last_scores_and_their_input(page, model.input_size)
    rgb = composite_over_white(rgba[..., [2, 1, 0, 3]])[..., ::-1]  # the same compositing Python's reader does
    np.testing.assert_array_equal(np.round(tensor * 255), np.round(preprocess_image(rgb, model.input_size) * 255))
    expected = model.run(tensor).probabilities[0]
    np.testing.assert_allclose(np.array(last["probabilities"]), expected, rtol=0, atol=SCORE_TOLERANCE)
    return last, rgba


def only_the_demo_server(page, server) -> None:
    assert page.requests, "no request seen"
    elsewhere = [url for url in page.requests if not url.startswith((server.url, "data:", "blob:"))]
    assert elsewhere == []
    assert f"{server.url}ort/ort-wasm-simd-threaded.wasm" in page.requests


def test_a_photo_in_a_real_browser(web_model, ort_dist, serve, photo, tmp_path):
    model = OnnxModel(web_model)
    with serve(web_model) as (server, log), Chromium() as browser:
        page = open_page(browser, server)
        check_runtime(page)
        page.set_files("#photo-input", [photo])
        page.wait_for("hsvlt.last && hsvlt.last.name === 'photo.jpg'", timeout_s=30)
        last, rgba = check_scores_on_the_pages_pixels(page, model)
        # The browser decoded the photo as OpenCV does: upright by its EXIF orientation, the same pixels.
        decoded = read_image(photo)
        assert rgba.shape[:2] == decoded.shape[:2] == (300, 451)
        assert np.abs(rgba[..., :3].astype(int) - decoded).max() <= 2
        # The labels above threshold are `hsvlt predict`'s (a score within 1e-3 of its threshold may go either way).
        from hsvlt.predict import main as hsvlt_predict

        [prediction] = hsvlt_predict([str(photo), "--model", str(web_model), "--out", str(tmp_path / "predict")])
        close = {label for label, threshold in zip(model.labels, model.thresholds)
                 if abs(prediction.probabilities[label] - threshold) <= SCORE_TOLERANCE}
        assert set(last["above"]) - close == set(prediction.labels) - close
        assert last["shown"] == last["above"]  # a photo is not smoothed
        assert (last["width"], last["height"]) == tuple(prediction.size)
        # A marker per label shown, where Python's attention puts it (within one attention cell).
        cell = (last["width"] / 8, last["height"] / 8)
        assert set(last["where"]) == set(last["shown"])
        for label in set(last["where"]) & set(prediction.where or {}):
            (x, y), (px, py) = last["where"][label], prediction.where[label]
            assert abs(x - px) <= cell[0] and abs(y - py) <= cell[1]
        highlighted = page.evaluate("[...document.querySelectorAll('#scores li.on .label')].map(e => e.textContent)")
        assert sorted(highlighted) == sorted(last["above"])
        assert page.evaluate("document.getElementById('latency').textContent").endswith("(median of 1)")
        only_the_demo_server(page, server)
        screenshot = page.screenshot()
    image = cv2.imdecode(np.frombuffer(screenshot, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 1280 and image.std() > 10
    if os.environ.get("HSVLT_WEB_SCREENSHOT"):  # the README's picture: HSVLT_WEB_SCREENSHOT=docs/web_demo.png
        write_bytes(os.environ["HSVLT_WEB_SCREENSHOT"], screenshot)
    assert not [line for line in log if line.startswith("page: error")]


def test_the_camera_in_a_real_browser(web_model, ort_dist, serve, camera_video):
    model = OnnxModel(web_model)
    with serve(web_model) as (server, log), Chromium(fake_camera_flags(camera_video)) as browser:
        page = open_page(browser, server)
        page.evaluate("document.getElementById('camera-button').click()")
        page.wait_for("hsvlt.cameraFrames >= 30", timeout_s=60)
        last, _ = check_scores_on_the_pages_pixels(page, model)
        assert (last["source"], last["width"], last["height"]) == ("camera", *CAMERA_SIZE)
        assert set(last["where"]) == set(last["shown"])
        # Smoothed over frames as the OpenCV demo smooths them: its LabelSmoother, fed the page's raw scores frame
        # by frame since the camera started, shows what the page showed.
        history = page.evaluate("hsvlt.cameraHistory")
        smoother = LabelSmoother(model.thresholds)
        for frame in history:
            shown = smoother.update(np.array(frame["probabilities"], np.float32))
            np.testing.assert_array_equal(np.array(frame["smoothed"], np.float32), smoother.probabilities)
            assert [model.labels[i] for i in np.flatnonzero(shown)] == sorted(
                frame["shown"], key=model.labels.index)
        assert any(frame["smoothed"] != frame["probabilities"] for frame in history)
        assert page.evaluate("document.getElementById('camera-button').textContent") == "Stop the camera"
        page.evaluate("document.getElementById('camera-button').click()")
        assert page.evaluate("hsvlt.camera") == "off"
        median = page.evaluate("document.getElementById('latency').textContent")
        assert median.endswith("(median of 30)") and float(median.split()[0]) > 0
        only_the_demo_server(page, server)
    assert not [line for line in log if line.startswith("page: error")]


def said(page, log, act, expected: str) -> str:
    """Do something wrong on the page: it says `expected` (the start of its message), and so does the server's
    log."""
    before = page.evaluate("hsvlt.messages.length")
    act()
    page.wait_for(f"hsvlt.messages.length > {before}", timeout_s=30)
    text = page.evaluate("hsvlt.messages.at(-1).text")
    assert text.startswith(expected), text
    assert page.evaluate("document.getElementById('message').textContent") == text
    assert page.evaluate("document.getElementById('message').className") == "error"
    deadline = time.monotonic() + 10
    while f"page: error: {text}" not in log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"page: error: {text}" in log, log
    return text


def click(page, element: str):
    return lambda: page.evaluate(f"document.getElementById('{element}').click()")


def classified_by_the_first_model(page, photo) -> None:
    page.set_files("#photo-input", [photo])
    page.wait_for("hsvlt.last && hsvlt.last.name === 'photo.jpg'", timeout_s=30)
    assert page.evaluate("hsvlt.last.model") == "model.onnx"
    assert page.evaluate("document.getElementById('message').textContent") == ""


def test_bad_input_is_said_and_the_page_keeps_working(web_model, ort_dist, serve, photo, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    notes = tmp_path / "notes.onnx"
    notes.write_text("notes, not a model")
    (tmp_path / "notes.onnx.json").write_text(web_model.with_name("model.onnx.json").read_text())
    other = tmp_path / "other.onnx"
    other.write_bytes(web_model.read_bytes())
    manifest = json.loads(web_model.with_name("model.onnx.json").read_text())
    manifest["labels"], manifest["thresholds"] = manifest["labels"][:9], manifest["thresholds"][:9]
    for output in manifest["outputs"]:  # a manifest true to itself: its outputs have 9 labels too
        output["shape"][1] = 9
    (tmp_path / "other.onnx.json").write_text(json.dumps(manifest))

    # No camera at all, the permission prompt answered yes.
    with serve(web_model) as (server, log), Chromium(["--use-fake-ui-for-media-stream"]) as browser:
        page = open_page(browser, server)
        said(page, log, lambda: page.set_files("#photo-input", [broken]),
             "broken.jpg: the browser cannot decode this image")
        said(page, log, click(page, "camera-button"), "camera: no camera found; choose a photo instead")
        said(page, log, lambda: page.set_files("#model-input", [notes, tmp_path / "notes.onnx.json"]),
             "notes.onnx: ONNX Runtime Web cannot load it (")
        said(page, log, lambda: page.set_files("#model-input", [other, tmp_path / "other.onnx.json"]),
             "other.onnx.json: lists 9 labels, but other.onnx scores 10 (a manifest of another export?); the "
             "previous model stays")
        # After all of that, the next photo is classified by the model the page started with.
        classified_by_the_first_model(page, photo)
        only_the_demo_server(page, server)
    assert len([line for line in log if line.startswith("page: error: ")]) == 4, log

    # A camera the user refuses (headless Chromium answers the permission prompt no).
    with serve(web_model) as (server, log), Chromium(["--use-fake-device-for-media-stream"]) as browser:
        page = open_page(browser, server)
        said(page, log, click(page, "camera-button"), "camera: permission refused; choose a photo instead")
        assert page.evaluate("hsvlt.camera") == "off"
        classified_by_the_first_model(page, photo)


def test_the_benchmark_times_the_browser_against_python_and_updates_its_section(ort_dist, tmp_path):
    """reports/export_bench.py --browser-only, on a tiny preset: both latencies measured in one run, the section
    put into the page in place, the rest of the page kept."""
    from hsvlt.bench import export_bench
    from hsvlt.bench.measure import write_section

    config = export_bench.BenchConfig(img_size=32, labels="shapes", runs=20, warmup=2)
    result = export_bench.browser_bench(config, tmp_path, preset="hsvlt_pico")
    assert result["runs"] == 20 and result["runtime"]["threads"] == 2
    assert result["browser"]["best_ms"] > 0 and result["python"]["best_ms"] > 0
    assert result["ratio"] == result["browser"]["p50_ms"] / result["python"]["p50_ms"]
    section = export_bench.browser_section(result, "python reports/export_bench.py --browser-only")
    page = tmp_path / "EXPORT.md"
    page.write_text("# Export benchmark\n\nthe table\n")
    write_section(page, export_bench.BROWSER_SECTION, section)
    write_section(page, export_bench.BROWSER_SECTION, section.replace("headless", "headless (again)"))
    text = page.read_text()
    assert text.startswith("# Export benchmark\n\nthe table\n\n<!-- browser -->\n## In the browser")
    assert text.count("<!-- browser -->") == 1 and "headless (again)" in text
    assert "| onnxruntime-web, WebAssembly, 2 threads (Chromium) |" in text
    assert "placed by the runtime on CPUExecutionProvider (" in text
    assert re.search(r"- hsvlt_pico: browser within 2 x ONNX Runtime in Python: [\d.]+ x at p50, [\d.]+ x best -> "
                     r"(met|not met)", text)
