"""Write the golden tensors the web page's JavaScript is held to (tests/web/hsvlt-web.test.mjs):

    python tests/web/make_golden.py [--out tests/web/golden]

From real photos (scikit-image's sample photos), made non-square and both larger and smaller than the input size,
written as files (PNG with transparency, grayscale PNG, a JPEG with an EXIF orientation), each case holds the
pixels a browser hands the page (RGBA, upright) and the tensor Python feeds the model: hsvlt.images.read_image,
then hsvlt.preprocess.preprocess_image. Also: LabelSmoother's outputs over a sequence of frames,
attention_peak on random maps, and a manifest as build_manifest writes it. tests/web/test_golden.py checks that
the committed files are what this script writes today.
"""

import argparse
import gzip
import io
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hsvlt.deploy.runtimes import attention_peak  # noqa: E402
from hsvlt.deploy.smoothing import LabelSmoother  # noqa: E402
from hsvlt.images import read_image  # noqa: E402
from hsvlt.outputs import write_text  # noqa: E402
from hsvlt.preprocess import preprocess_image  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"
SIZE = 48


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photo, RGB uint8."""
    import skimage.data

    return getattr(skimage.data, name)()


def fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def exif_orientation_jpeg(rgb: np.ndarray, path: Path, orientation: int) -> None:
    """A JPEG whose EXIF says how to turn it upright (a phone photo held sideways)."""
    from PIL import Image

    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, quality=92, exif=exif.tobytes())


def browser_pixels(path: Path) -> np.ndarray:
    """RGBA, upright, as a browser decodes the file for a canvas: EXIF applied, alpha kept, gray as RGB."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data[:2].tobytes() == b"\xff\xd8":  # OpenCV applies EXIF to JPEGs decoded in colour, as browsers do
        rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGBA)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)


def write_photos(folder: Path) -> dict[str, Path]:
    """The photo files of every case: name -> path."""
    chelsea, coffee, astronaut = photo("chelsea"), photo("coffee"), photo("astronaut")
    files = {}

    def png(name: str, image: np.ndarray) -> None:
        files[name] = folder / f"{name}.png"
        channels = image.shape[2] if image.ndim == 3 else 1
        code = {1: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}[channels]
        cv2.imwrite(str(files[name]), image if code is None else cv2.cvtColor(image, code))

    png("larger_area_fraction", fit(chelsea, 151, 97))          # both sides shrink, by 3.15 x 2.02
    png("larger_area_whole", fit(coffee, 192, 96))              # by 4 x 2 exactly: OpenCV's block sums
    png("larger_area_2x2", fit(astronaut, 96, 96)[:, :96])      # by 2 x 2: OpenCV's (sum + 2) >> 2
    png("smaller_linear", fit(coffee, 37, 29))                  # both sides grow
    png("mixed_linear", fit(astronaut, 120, 40))                # one side shrinks, one grows: bilinear
    png("tall_linear", fit(chelsea, 30, 150))
    png("exact_size", fit(coffee, SIZE, SIZE))                  # no resize at all
    alpha = np.linspace(0, 255, 90 * 70, dtype=np.float32).reshape(70, 90).round().astype(np.uint8)
    png("transparent", np.dstack([fit(chelsea, 90, 70), alpha]))  # composited over white
    png("grayscale", cv2.cvtColor(fit(astronaut, 64, 100), cv2.COLOR_RGB2GRAY))
    files["exif_rotated"] = folder / "exif_rotated.jpg"
    exif_orientation_jpeg(fit(chelsea, 120, 80), files["exif_rotated"], 6)  # turned 90 degrees clockwise
    return files


def pack(array: np.ndarray) -> str:
    """Bytes, little-endian, gzip without a timestamp, base64: the same text for the same array."""
    import base64

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


def interpolation(width: int, height: int, size: int) -> str:
    if (height, width) == (size, size):
        return "none"
    return "area" if min(height, width) > size else "linear"


def preprocessing_cases(folder: Path) -> list[dict]:
    cases = []
    for name, path in write_photos(folder).items():
        rgba = browser_pixels(path)
        expected = preprocess_image(read_image(path), SIZE)[0]  # 3 x S x S float32 in [0, 1]
        height, width = rgba.shape[:2]
        cases.append({"name": name, "file": path.name, "width": width, "height": height, "size": SIZE,
                      "interpolation": interpolation(width, height, SIZE),
                      "rgba": pack(rgba), "expected": pack(expected.astype(np.float32))})
    return cases


def smoother_case() -> dict:
    rng = np.random.default_rng(0)
    thresholds = rng.uniform(0.2, 0.8, 6).astype(np.float32)
    frames = rng.uniform(0, 1, (12, 6)).astype(np.float32)
    smoother = LabelSmoother(thresholds, smoothing=0.5, hysteresis=0.2)
    steps = []
    for frame in frames:
        active = smoother.update(frame)
        steps.append({"probabilities": frame.tolist(), "smoothed": smoother.probabilities.tolist(),
                      "active": active.tolist()})
    return {"thresholds": thresholds.tolist(), "smoothing": 0.5, "hysteresis": 0.2, "steps": steps}


def peak_cases() -> list[dict]:
    rng = np.random.default_rng(1)
    cases = []
    for rows, cols, width, height in ((8, 8, 640, 480), (7, 7, 451, 300), (4, 6, 100, 37)):
        attention = rng.random((rows, cols)).astype(np.float32)
        cases.append({"rows": rows, "cols": cols, "width": width, "height": height, "map": attention.ravel().tolist(),
                      "peak": list(attention_peak(attention, width, height))})
    return cases


def manifest() -> dict:
    """A manifest as the exporters write it, for a 10-label model with attention (no weights needed)."""
    import torch

    from hsvlt.checkpoint import SourceCheckpoint
    from hsvlt.deploy.manifest import checkpoint_manifest
    from hsvlt.labels import load_label_set
    from hsvlt.models import create_model

    labels = load_label_set("shapes")
    model = create_model("hsvlt_pico", torch.from_numpy(labels.embeddings), img_size=64)
    checkpoint = {"labels": list(labels.names), "thresholds": [round(0.3 + 0.04 * i, 3) for i in range(10)],
                  "data": {"name": "shapes", "seed": 0}}
    source = SourceCheckpoint(Path("golden.pt"), model, checkpoint, "0" * 64)
    return checkpoint_manifest(source, "onnx", attention_stage=1, opset=18)


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        cases = preprocessing_cases(Path(folder))
    written = {"preprocessing.json": {"size": SIZE, "cases": cases}, "smoother.json": smoother_case(),
               "peaks.json": peak_cases(), "manifest.json": manifest()}
    paths = []
    for name, value in written.items():
        path = out / name
        write_text(path, json.dumps(value, indent=None if name == "preprocessing.json" else 1) + "\n")
        paths.append(path)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=GOLDEN, help="folder to write (default tests/web/golden)")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
