"""Predictions as data: `hsvlt predict SOURCE --model M` (also `python -m hsvlt.predict`).

    hsvlt predict photo.jpg --model model.pte                        # one image: prints its labels
    hsvlt predict photos/ --model model.onnx --glob "*.jpg"          # a folder, recursively
    hsvlt predict clip.mp4 --model best.pt --format csv              # every frame of a video
    hsvlt predict photos/ --model model.pte --save-images            # also annotated copies

It prints a table (one row per image: its labels above threshold, best first, with their probabilities) and
writes into --out (default runs/predict; a folder that holds an earlier run is kept and the next free name taken,
and never a folder among the inputs) one record per image: predictions.jsonl (--format json: every label's
probability, the labels above threshold, where each was found when the model has attention) or
predictions.csv (--format csv: image, width, height, labels, then one column of probabilities per label).
The model runs through hsvlt.Classifier: the manifest's labels and calibrated thresholds, unless --threshold
or --top-k say otherwise.

Every file of a folder (matching --glob) is classified or named as skipped with the reason, in the summary and,
when a file was skipped, in skipped.jsonl (or skipped.csv: image, reason) beside the predictions: not an image,
an image in a format the decoder does not read (HEIC, ICO, ...), unreadable (empty, truncated, damaged), a video
(give it by name), or larger than the pixel limit (200 megapixels, read from the header before decoding; the
environment variable HSVLT_MAX_MEGAPIXELS raises it). An image given by name that cannot be read is an error.
"""

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from hsvlt.api import Classifier, Prediction
from hsvlt.cli import positive_int, program, run_command, unit_interval
from hsvlt.images import BadImage
from hsvlt.outputs import (
    OutputError,
    atomic_path,
    atomic_write,
    check_apart_from_inputs,
    check_output_folder,
    run_folder,
)

TABLE_ROWS = 20  # printed; the rest are in the output file
SKIPPED_ROWS = 20  # skipped files named in the summary; all of them are in the skipped file
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def find_images(sources: list[Path], glob: str, skipped: list[tuple[str, str]]) -> list[Path]:
    """The files of `sources` to classify: files as given, and every file of a folder (searched recursively) whose
    name matches `glob`, in name order. Whatever of a folder will not be classified is added to `skipped` as
    (path, reason): videos (their frames are predicted only when a video is given by name) and what is not a
    regular file. Which files are images the decoder judges, by content rather than by suffix."""
    images = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.rglob(glob) if not p.is_dir())
            if not found:
                raise FileNotFoundError(f"{source}: no files matching {glob!r}")
            for path in found:
                if not path.is_file():
                    skipped.append((str(path), "not a regular file (a broken link, a pipe or a device)"))
                elif path.suffix.lower() in VIDEO_SUFFIXES:
                    skipped.append((str(path), "a video in a folder (give it by name to predict on its frames)"))
                else:
                    images.append(path)
        elif source.is_file():
            images.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such file or folder")
    return images


def video_frames(path: Path, max_frames: int | None):
    """(name, RGB frame) of each frame of a video, decoded by OpenCV."""
    from hsvlt.deploy.sources import CaptureSource

    source = CaptureSource(path)
    try:
        for index, frame in enumerate(source):
            if max_frames is not None and index >= max_frames:
                return
            yield frame.name, cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
    finally:
        source.close()


def format_row(prediction: Prediction, name: str) -> str:
    labels = ", ".join(f"{label} {score:.2f}" for label, score in zip(prediction.labels, prediction.scores))
    return f"{name}  {labels or '(no label)'}"


class Writer:
    """predictions.jsonl or predictions.csv in the run folder, and skipped.jsonl or skipped.csv when an input
    file was not classified (each with the reason; a previous run's list in the folder is removed when none was),
    written atomically when the run ends (a run that fails leaves no half file); --save-images: annotated JPEGs
    beside them."""

    def __init__(self, out: Path, file_format: str, labels: list[str], save_images: bool):
        suffix = "jsonl" if file_format == "json" else "csv"
        self.path, self.skipped_path = out / f"predictions.{suffix}", out / f"skipped.{suffix}"
        self.format, self.labels, self.save_images, self.out = file_format, labels, save_images, out
        self.records: list[dict] = []
        self.image_names: set[str] = set()

    def add(self, prediction: Prediction, name: str, rgb) -> None:
        self.records.append({**prediction.as_record(), "image": name})
        if self.save_images:
            self.annotate(prediction, name, rgb)

    def annotate(self, prediction: Prediction, name: str, rgb) -> None:
        from hsvlt.deploy.overlay import draw_prediction

        target = self.out / "images" / f"{Path(name).name.replace('#', '_')}.jpg"
        if target.name in self.image_names:  # same file name in two folders: keep the path in the name
            target = target.with_name(f"{name.replace('/', '_').replace('#', '_')}.jpg")
        self.image_names.add(target.name)
        with atomic_path(target) as temporary:
            if not cv2.imwrite(str(temporary), draw_prediction(rgb, prediction, self.labels)):
                raise OutputError(f"{target}: OpenCV could not write it (disk full?)")

    def close(self, skipped: list[tuple[str, str]]) -> Path:
        with atomic_write(self.path, "w") as stream:
            if self.format == "json":
                stream.writelines(json.dumps(record) + "\n" for record in self.records)
            else:
                table = csv.writer(stream)
                table.writerow(["image", "width", "height", "labels", *self.labels])
                for record in self.records:
                    table.writerow([record["image"], record["width"], record["height"], "|".join(record["labels"]),
                                    *(f"{record['probabilities'][label]:.6f}" for label in self.labels)])
        if not skipped:
            self.skipped_path.unlink(missing_ok=True)  # --exist-ok: an earlier run's list would be taken for this one's
            return self.path
        with atomic_write(self.skipped_path, "w") as stream:
            if self.format == "json":
                stream.writelines(json.dumps({"image": path, "reason": reason}) + "\n" for path, reason in skipped)
            else:
                table = csv.writer(stream)
                table.writerow(["image", "reason"])
                table.writerows(skipped)
        return self.path


@dataclass
class PredictConfig:
    """One run of `hsvlt predict` (its flags parse into one, `parse_args`); tools build one directly:
    `run(PredictConfig(source=["photos/"], model="model.pte", format="csv"))`."""

    source: list[str]  # images, folders of images or videos
    model: str | Path
    out: Path = Path("runs/predict")
    exist_ok: bool = False
    format: str = "json"  # json: predictions.jsonl; csv: predictions.csv
    glob: str = "*"
    threshold: float | None = None  # None: the manifest's calibrated per-label thresholds
    top_k: int | None = None
    save_images: bool = False
    max_frames: int | None = None
    batch_size: int = 16
    threads: int | None = None  # None: the runtime's own choice


def run(config: PredictConfig) -> list[Prediction]:
    sources = [Path(source) for source in config.source]
    out = check_output_folder(config.out)
    check_apart_from_inputs(out, sources)
    videos = [s for s in sources if s.is_file() and s.suffix.lower() in VIDEO_SUFFIXES]
    skipped: list[tuple[str, str]] = []  # (file, reason) of every input file not classified
    images = find_images([s for s in sources if s not in videos], config.glob, skipped)
    classifier = Classifier(config.model, threshold=config.threshold, top_k=config.top_k, threads=config.threads,
                            batch_size=config.batch_size)
    out = run_folder(out, config.exist_ok)
    writer = Writer(out, config.format, classifier.labels, config.save_images)
    predictions, rows = [], []
    one_file = len(sources) == 1 and not videos and sources[0].is_file()
    for batch in batched_inputs(images, videos, config.batch_size, config.max_frames, skipped, one_file):
        names, arrays = zip(*batch)
        for name, rgb, prediction in zip(names, arrays, classifier(list(arrays))):
            prediction.source = name
            writer.add(prediction, name, rgb)
            predictions.append(prediction)
            if len(rows) < TABLE_ROWS:
                rows.append(format_row(prediction, name))
    skipped.sort()
    if not predictions:
        raise ValueError(f"no file could be classified: {len(skipped)} skipped (first: {': '.join(skipped[0])})"
                         if skipped else "no images or frames to predict on")
    path = writer.close(skipped)
    print("\n".join(rows))
    if len(predictions) > len(rows):
        print(f"... and {len(predictions) - len(rows)} more")
    if skipped:
        print(f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''}, not classified:")
        print("\n".join(f"  {name}: {reason}" for name, reason in skipped[:SKIPPED_ROWS]))
        if len(skipped) > SKIPPED_ROWS:
            print(f"  ... and {len(skipped) - SKIPPED_ROWS} more")
    print(f"{len(predictions)} predictions ({classifier.adapter.runtime}, {Path(config.model).name}) written to "
          f"{path}" + (f" and {out / 'images'}" if config.save_images else "")
          + (f"; skipped files listed in {writer.skipped_path}" if skipped else ""))
    return predictions


def batched_inputs(images: list[Path], videos: list[Path], batch_size: int, max_frames: int | None,
                   skipped: list[tuple[str, str]], one_file: bool):
    """Batches of (name, RGB uint8 image) from the image files, then the videos' frames; a file that is not a
    readable image is added to `skipped` with the reason, unless it is the one file given (then it is an error)."""
    from hsvlt.images import read_image

    batch = []
    progress = tqdm(total=len(images) or None, unit="image", disable=len(images) < 5 and not videos, leave=False)
    for path in images:
        try:
            batch.append((str(path), read_image(path)))
        except BadImage as error:
            if one_file:
                raise
            skipped.append((error.path, error.reason))
        progress.update()
        if len(batch) == batch_size:
            yield batch
            batch = []
    for video in videos:
        for name, rgb in video_frames(video, max_frames):
            batch.append((name, rgb))
            progress.update()
            if len(batch) == batch_size:
                yield batch
                batch = []
    progress.close()
    if batch:
        yield batch


def parse_args(argv=None) -> PredictConfig:
    defaults = PredictConfig(source=[], model="")
    parser = argparse.ArgumentParser(prog=program("python -m hsvlt.predict"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="+", help="images, folders of images (searched recursively) or videos")
    parser.add_argument("--model", required=True, help="model.pte (ExecuTorch), model.onnx (ONNX Runtime) or a "
                                                       "checkpoint .pt (PyTorch)")
    parser.add_argument("--out", type=Path, default=defaults.out, help="output folder")
    parser.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier run")
    parser.add_argument("--format", default=defaults.format, choices=["json", "csv"],
                        help="predictions.jsonl (every probability, where each label was found) or predictions.csv")
    parser.add_argument("--glob", default=defaults.glob, help="folders: only files whose names match (e.g. '*.jpg')")
    parser.add_argument("--threshold", type=unit_interval,
                        help="one probability for every label (default: the manifest's calibrated thresholds)")
    parser.add_argument("--top-k", type=positive_int, help="at most this many labels per image, best first")
    parser.add_argument("--save-images", action="store_true", help="also write annotated images to OUT/images")
    parser.add_argument("--max-frames", type=positive_int, help="videos: at most this many frames each")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help="images per runtime call")
    parser.add_argument("--threads", type=positive_int, help="runtime CPU threads (default: its own choice)")
    return PredictConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> list[Prediction]:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    main()
