"""The one decoder meets real-world files: every layout decodes, and what does not is refused in one line naming
the file and the reason, before decoding when the header says enough (a small file of too many pixels costs no
memory, in predict, the API and the decoder alike)."""

import io
import json
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hsvlt import Classifier
from hsvlt.images import BadImage, check_image, read_image
from hsvlt.predict import main as predict_main

REPO = Path(__file__).resolve().parents[2]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path: Path, side: int) -> Path:
    """A valid 8-bit grey PNG of side x side pixels, all black but one white row: a few hundred kB on disk, side^2
    bytes decoded (and three times that as RGB). Rows are compressed as they are made, never held at once."""
    packer = zlib.compressobj(9)
    blank, white = b"\0" + bytes(side), b"\0" + b"\xff" * side
    data = [packer.compress(white)]
    for _ in range((side - 1) // 1000):
        data.append(packer.compress(blank * 1000))
    data.append(packer.compress(blank * ((side - 1) % 1000)) + packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(data))
                     + png_chunk(b"IEND", b""))
    return path


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and whose data is a token: only a header check can size it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + png_chunk(b"IEND", b""))
    return path


def animated_gif(path: Path) -> Path:
    frames = [Image.fromarray(np.full((20, 30, 3), value, np.uint8)) for value in (10, 200, 90)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """A folder as users have them: good photos in several layouts, and one file of each kind that is not one."""
    folder = tmp_path_factory.mktemp("odd_files")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "colour.jpg"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "deep.png"), rng.integers(0, 65536, (30, 30), dtype=np.uint16))
    cv2.imwrite(str(folder / "alpha.webp"), rng.integers(0, 256, (30, 30, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    cv2.imwrite(str(folder / "tiny.tif"), np.zeros((1, 1, 3), np.uint8))
    animated_gif(folder / "animated.gif")
    ok, encoded = cv2.imencode(".png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (folder / "cut.png").write_bytes(encoded.tobytes()[: encoded.size // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "icon.ico")
    (folder / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    header_only_png(folder / "huge.png", 20_000, 15_000)
    (folder / "clip.mp4").write_bytes(bytes(100))
    return folder


SKIPPED = {  # file -> its reason
    "clip.mp4": "a video in a folder (give it by name to predict on its frames)",
    "cut.png": "not a readable image (truncated or damaged)",
    "empty.jpg": "empty file",
    "huge.png": "20000 x 15000 pixels (300.0 megapixels) is above the limit of 200 megapixels "
                "(HSVLT_MAX_MEGAPIXELS raises it)",
    "icon.ico": "an image in ICO format, which the decoder cannot read (convert it to PNG or JPEG)",
    "notes.txt": "not an image",
    "phone.heic": "an image in HEIF/AVIF format, which the decoder cannot read (convert it to JPEG or PNG)",
}
CLASSIFIED = ["alpha.webp", "animated.gif", "cmyk.jpg", "colour.jpg", "deep.png", "tiny.tif"]


@pytest.mark.parametrize("name", sorted(set(SKIPPED) - {"clip.mp4"}))
def test_each_file_that_is_not_decoded_is_named_with_its_reason(name, odd_files):
    with pytest.raises(BadImage) as error:
        read_image(odd_files / name)
    assert str(error.value) == f"{odd_files / name}: {SKIPPED[name]}"
    assert (error.value.path, error.value.reason) == (str(odd_files / name), SKIPPED[name])


def test_the_first_frame_of_an_animated_gif_is_the_image(odd_files):
    image = read_image(odd_files / "animated.gif")
    assert image.shape == (20, 30, 3) and (image == 10).all()


def test_the_limit_is_checked_from_the_header_and_can_be_raised(odd_files, tmp_path, monkeypatch):
    assert check_image(odd_files / "huge.png", max_megapixels=300) == ("PNG", 20_000, 15_000)
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((40, 50, 3), np.uint8))  # 2000 pixels
    assert read_image(tmp_path / "small.png", max_megapixels=0.002).shape == (40, 50, 3)
    with pytest.raises(BadImage, match=r"small\.png: 50 x 40 pixels \(0\.002 megapixels\) is above the limit "
                                       r"of 0\.0019 megapixels"):
        read_image(tmp_path / "small.png", max_megapixels=0.0019)
    monkeypatch.setenv("HSVLT_MAX_MEGAPIXELS", "0.0019")
    with pytest.raises(BadImage, match="above the limit of 0.0019 megapixels"):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv("HSVLT_MAX_MEGAPIXELS", "300")
    assert check_image(odd_files / "huge.png")[1:] == (20_000, 15_000)
    monkeypatch.setenv("HSVLT_MAX_MEGAPIXELS", "lots")
    with pytest.raises(ValueError, match="HSVLT_MAX_MEGAPIXELS: 'lots' is not a positive number of megapixels"):
        read_image(tmp_path / "small.png")


def test_a_decompression_bomb_costs_no_memory(tmp_path):
    """225 megapixels in a ~0.2 MB PNG: decoded, 225 MB grey then 675 MB RGB; refused from its header, the
    process's peak memory grows by what Pillow's parsers take to load, not by the image. The peak is the kernel's
    VmHWM, the process's own since it started (ru_maxrss would carry over pytest's peak through fork and exec)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("VmHWM is read from /proc (Linux)")
    bomb = write_bomb(tmp_path / "bomb.png", 15_000)
    assert bomb.stat().st_size < 1_000_000
    probe = ("import re, sys\nfrom pathlib import Path\nfrom hsvlt.images import BadImage, read_image\n"
             "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())[1]) / 1024\n"
             "before = peak()\ntry:\n    read_image(sys.argv[1])\nexcept BadImage as error:\n    print(error)\n"
             "print(round(peak() - before))")
    done = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    message, growth_mb = done.stdout.strip().splitlines()
    assert message == (f"{bomb}: 15000 x 15000 pixels (225.0 megapixels) is above the limit of 200 megapixels "
                       f"(HSVLT_MAX_MEGAPIXELS raises it)"), done.stderr[-2000:]
    assert int(growth_mb) < 100, f"peak memory grew by {growth_mb} MB"  # decoding would add 900 MB


def test_the_api_refuses_a_bomb_from_many_threads_at_once(models, tmp_path):
    bomb = header_only_png(tmp_path / "bomb.png", 30_000, 30_000)
    classifier = Classifier(models["onnx"], threads=1)

    def classify(_):
        with pytest.raises(BadImage, match=r"bomb\.png: 30000 x 30000 pixels \(900\.0 megapixels\) is above"):
            classifier(bomb)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(classify, range(8)))
    with pytest.raises(ValueError, match="max_megapixels must be positive"):
        Classifier(models["onnx"], max_megapixels=0)


@pytest.mark.parametrize("file_format", ["json", "csv"])
def test_predict_names_every_file_of_a_folder_it_does_not_classify(file_format, odd_files, models, tmp_path, capsys):
    out = tmp_path / "out"
    predictions = predict_main([str(odd_files), "--model", str(models["onnx"]), "--threads", "1", "--format",
                                file_format, "--out", str(out)])
    printed = capsys.readouterr().out
    assert sorted(Path(p.source).name for p in predictions) == CLASSIFIED
    assert f"skipped {len(SKIPPED)} files, not classified:" in printed
    for name, reason in SKIPPED.items():
        assert f"  {odd_files / name}: {reason}\n" in printed
    if file_format == "json":
        skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    else:
        import csv

        skipped = list(csv.DictReader(io.StringIO((out / "skipped.csv").read_text())))
    assert {Path(r["image"]).name: r["reason"] for r in skipped} == SKIPPED
    # Every file of the folder is accounted for: classified or skipped, never dropped.
    assert len(predictions) + len(skipped) == len(list(odd_files.iterdir()))


def test_predict_lists_nothing_skipped_when_nothing_was(models, odd_files, tmp_path):
    out = tmp_path / "out"
    predict_main([str(odd_files / "colour.jpg"), str(odd_files / "animated.gif"), "--model", str(models["onnx"]),
                  "--out", str(out)])
    assert not (out / "skipped.jsonl").exists()
    with pytest.raises(SystemExit) as exit_info:  # the one file given: an error, not a skip
        predict_main([str(odd_files / "huge.png"), "--model", str(models["onnx"]), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == f"error: {odd_files / 'huge.png'}: {SKIPPED['huge.png']}"

