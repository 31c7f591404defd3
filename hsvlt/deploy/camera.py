"""Live multi-label detection: `python edge_demo/camera.py --model model.pte`.

    python edge_demo/camera.py --model model_int8.pte                        # camera 0, window (q or Esc quits)
    python edge_demo/camera.py --model model.onnx --source clip.mp4          # a video file
    python edge_demo/camera.py --model best.pt --source photos/ --headless   # a folder of images, no window
    python edge_demo/camera.py --model model.pte --source shapes --max-frames 300 --headless
    python edge_demo/camera.py --model model_int8.pte --source shapes --benchmark --threads 2

--model is an ExecuTorch program (.pte), an ONNX file (.onnx) or a training checkpoint (.pt); the manifest
beside an exported file (model.pte.json) gives the labels, per-label thresholds and input size. Frames are
prepared by hsvlt.preprocess.preprocess_frame, the function the exporters use. The overlay lists every label
whose smoothed probability is above its threshold (with hysteresis, so labels do not flicker), FPS and
inference latency; a model exported with --attention-stage also shows where each label was found.

--headless (or no display) writes into --out: the annotated video (annotated.mp4) or annotated images, and
detections.jsonl, one JSON record per frame (probabilities of every label, labels detected on that frame,
labels shown after smoothing, peak positions, and for `shapes` the objects really in view). A summary ends
every run: frames, mean FPS, p50 / p90 latency. --benchmark measures end-to-end throughput (decode,
preprocess, infer, overlay; nothing is written) and prints a table.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hsvlt.cli import (
    StopRequest,
    attention_stage,
    float_range,
    int_at_least,
    non_negative_int,
    positive_float,
    positive_int,
    program,
    run_command,
)
from hsvlt.deploy.overlay import draw
from hsvlt.deploy.runtimes import attention_peak, open_model
from hsvlt.deploy.smoothing import LabelSmoother
from hsvlt.deploy.sources import ImageSource, Source, SourceError, open_source
from hsvlt.outputs import OutputError, atomic_path, check_apart_from_inputs, check_output_folder, run_folder
from hsvlt.preprocess import preprocess_frame

WINDOW = "HSVLT"
QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q, Esc
STAGES = ("decode", "preprocess", "infer", "overlay")


def display_available() -> bool:
    """Whether OpenCV can open a window here (opencv-python-headless, or no display: it cannot)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False


def annotated_names(paths: list[Path]) -> dict[str, str]:
    """Input file name -> annotated JPEG name: photo.png -> photo.jpg, unless two inputs share a stem
    (coffee.jpg, coffee.png): then every output keeps its input's extension (coffee.jpg.jpg, coffee.png.jpg)."""
    names = [path.name for path in paths]
    by_stem = {name: f"{Path(name).stem}.jpg" for name in names}
    if len(set(by_stem.values())) == len(names):
        return by_stem
    return {name: f"{name}.jpg" for name in names}


class Recorder:
    """--out: the annotated frames (images for an image source, else one video) and detections.jsonl.

    The folder is a fresh one (hsvlt.outputs.run_folder), so nothing of an earlier run is overwritten; two
    inputs never share an output (annotated_names); every image is written atomically and checked. On Ctrl-C
    or SIGTERM the video is finalised and detections.jsonl flushed (close)."""

    def __init__(self, out: Path, source: Source, fps: float | None, save_images: bool = True):
        self.jsonl_path = out / "detections.jsonl"
        try:
            self.jsonl = open(self.jsonl_path, "x", encoding="utf-8")
        except OSError as error:
            raise OutputError(f"{self.jsonl_path}: cannot write it ({error.strerror or error})") from None
        self.out, self.images, self.save_images = out, isinstance(source, ImageSource), save_images
        self.names = annotated_names(source.paths) if self.images else {}
        self.fps, self.video, self.size = fps or 30.0, None, None

    def write(self, record: dict, annotated: np.ndarray) -> None:
        try:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        except OSError as error:
            raise OutputError(f"{self.jsonl_path}: cannot write it ({error.strerror or error})") from None
        if not self.save_images:
            return
        if self.images:
            path = self.out / self.names[record["name"]]
            with atomic_path(path) as temporary:
                if not cv2.imwrite(str(temporary), annotated):
                    raise OutputError(f"{path}: OpenCV could not write it (disk full?)")
            return
        if self.video is None:
            self.size = (annotated.shape[1], annotated.shape[0])
            self.video = cv2.VideoWriter(str(self.out / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                         self.fps, self.size)
            if not self.video.isOpened():
                raise OutputError(f"{self.out / 'annotated.mp4'}: OpenCV cannot write an mp4 video here")
        if (annotated.shape[1], annotated.shape[0]) != self.size:  # a stream that changes resolution
            annotated = cv2.resize(annotated, self.size, interpolation=cv2.INTER_AREA)
        self.video.write(annotated)

    def close(self) -> list[Path]:
        """Finalise the video and flush the records to disk; returns the files written."""
        try:
            self.jsonl.flush()
            os.fsync(self.jsonl.fileno())
        except OSError as error:
            raise OutputError(f"{self.jsonl_path}: cannot write it ({error.strerror or error})") from None
        finally:
            self.jsonl.close()
        files = [self.jsonl_path]
        if self.video is not None:
            self.video.release()
            video = self.out / "annotated.mp4"
            if not video.is_file() or video.stat().st_size == 0:
                raise OutputError(f"{video}: OpenCV wrote no video (disk full?)")
            files.append(video)
        return files


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(timings: dict[str, list[float]], wall_s: float) -> dict:
    frames = len(timings["total"])
    return {"frames": frames, "mean_fps": frames / wall_s if wall_s > 0 else float("nan"),
            "latency_ms": {"p50": percentile(timings["infer"], 50), "p90": percentile(timings["infer"], 90)},
            "frame_ms": {"p50": percentile(timings["total"], 50), "p90": percentile(timings["total"], 90)},
            "stages_ms": {stage: float(np.mean(timings[stage])) if timings[stage] else float("nan")
                          for stage in STAGES}}


def format_summary(summary: dict) -> str:
    return (f"{summary['frames']} frames, mean {summary['mean_fps']:.1f} FPS, inference latency p50 "
            f"{summary['latency_ms']['p50']:.1f} ms / p90 {summary['latency_ms']['p90']:.1f} ms, per frame p50 "
            f"{summary['frame_ms']['p50']:.1f} ms / p90 {summary['frame_ms']['p90']:.1f} ms")


def format_benchmark(summary: dict, model, source: Source, threads: int | None, target_fps: float) -> str:
    lines = [f"benchmark: {model.runtime} {model.path.name} ({model.manifest.get('preset')}, "
             f"{model.manifest.get('precision', 'fp32')}, {model.input_size} px), source {source.name}, "
             f"threads {threads or 'runtime default'}, {summary['frames']} frames after warm-up",
             f"{'stage':<12}{'mean ms':>10}"]
    lines += [f"{stage:<12}{summary['stages_ms'][stage]:>10.2f}" for stage in STAGES]
    lines.append(f"{'per frame':<12}{summary['frame_ms']['p50']:>10.2f}  (p50; p90 {summary['frame_ms']['p90']:.2f})")
    met = "met" if summary["mean_fps"] >= target_fps else "NOT met"
    lines.append(f"end-to-end {summary['mean_fps']:.1f} FPS (target {target_fps:g} FPS: {met})")
    return "\n".join(lines)


def frame_record(frame, labels: list[str], probabilities: np.ndarray, detected: np.ndarray, shown: np.ndarray,
                 attention: np.ndarray | None, latency_ms: float) -> dict:
    """One line of detections.jsonl. Probabilities are the runtime's float32 values, written exactly."""
    height, width = frame.image.shape[:2]
    record = {"frame": frame.index, "name": frame.name, "width": width, "height": height,
              "latency_ms": round(latency_ms, 3),
              "probabilities": {label: float(p) for label, p in zip(labels, probabilities)},
              "detected": [labels[i] for i in np.flatnonzero(detected)],
              "shown": [labels[i] for i in np.flatnonzero(shown)]}
    if attention is not None:
        record["where"] = {labels[i]: [round(v, 1) for v in attention_peak(attention[i], width, height)]
                           for i in np.flatnonzero(shown)}
    if frame.truth is not None:
        record["truth"] = frame.truth
    return record


@dataclass
class DemoConfig:
    """One run of the demo, as `python edge_demo/camera.py` takes it (its flags parse into one); tools build one
    directly: `run(DemoConfig(model=Path("model.pte"), source="shapes", headless=True, max_frames=300))`."""

    model: Path
    source: str | None = None  # camera index (default 0), video, image, folder, or "shapes"
    headless: bool = False
    out: Path | None = None
    exist_ok: bool = False
    max_frames: int | None = None
    threads: int | None = None
    smoothing: float = 0.5
    hysteresis: float = 0.2
    where: str = "markers"
    attention_stage: int | None = None
    shapes_size: int = 480
    seed: int = 0
    benchmark: bool = False
    warmup: int = 10
    target_fps: float = 30.0


def output_folder(config: DemoConfig, source: Source) -> Path:
    """--out (default runs/edge_demo), never among the inputs, and never a folder holding an earlier run
    (the next free name is taken, unless --exist-ok)."""
    out = check_output_folder(config.out or Path("runs/edge_demo"))
    check_apart_from_inputs(out, [source.name])
    chosen = run_folder(out, config.exist_ok)
    if chosen != out:
        print(f"{out} holds an earlier run: writing to {chosen} (--exist-ok writes into {out})")
    return chosen


def run(config: DemoConfig) -> dict:
    """The demo loop; returns the summary (summarize) with the files written."""
    source = open_source(config.source, config.shapes_size, config.seed)  # first: a missing camera is said at once
    try:
        model = open_model(config.model, config.threads, config.attention_stage)
        # Smoothing carries a label from one frame into the next: right for a stream, wrong for unrelated photos.
        stream = not isinstance(source, ImageSource)
        smoother = LabelSmoother(model.thresholds, config.smoothing if stream else 0.0,
                                 config.hysteresis if stream else 0.0)
        window = not (config.headless or config.benchmark) and display_available()
        if not (window or config.benchmark) and not config.headless:
            print("no display here: running headless")
        out = None if config.benchmark or (window and config.out is None) else output_folder(config, source)
        recorder = None if out is None else Recorder(out, source, getattr(source, "fps", None))
    except BaseException:
        source.close()
        raise
    print(f"{model.runtime}: {model.path.name} ({len(model.labels)} labels, {model.input_size} px"
          f"{', attention' if model.has_attention else ''}) on {source.name}")
    max_frames = config.max_frames if config.max_frames is not None else (300 if config.benchmark else None)
    warmup = config.warmup if config.benchmark else 0
    timings = {stage: [] for stage in (*STAGES, "total")}
    fps, count, started, error = 0.0, 0, time.perf_counter(), None
    frames = iter(source)
    progress = tqdm(total=max_frames, unit="frame", disable=window or config.benchmark or max_frames is None,
                    leave=False)
    with StopRequest() as stop:  # Ctrl-C and SIGTERM end the loop between frames, never inside one
        try:
            while max_frames is None or count < max_frames + warmup:
                if stop.requested:
                    print(f"stopped ({stop.requested})")
                    break
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                t1 = time.perf_counter()
                batch = preprocess_frame(frame.image, model.input_size)  # 1 x 3 x S x S
                t2 = time.perf_counter()
                output = model.run(batch)
                t3 = time.perf_counter()
                probabilities = output.probabilities[0]  # C
                attention = output.attention[0] if output.attention is not None else None  # C x h x w
                shown = smoother.update(probabilities)
                latency_ms = (t3 - t2) * 1e3
                annotated = draw(frame.image, model.labels, smoother.probabilities, shown, fps, latency_ms,
                                 attention if config.where != "off" else None, config.where)
                t4 = time.perf_counter()
                count += 1
                if count == warmup + 1:
                    started = t0  # benchmark: the clock starts after the warm-up frames
                if count > warmup:
                    for stage, seconds in zip((*STAGES, "total"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                        timings[stage].append(seconds * 1e3)
                fps = 1.0 / (t4 - t0) if fps == 0.0 else 0.9 * fps + 0.1 / max(t4 - t0, 1e-9)
                progress.update()
                if recorder is not None:
                    recorder.write(frame_record(frame, model.labels, probabilities, probabilities >= model.thresholds,
                                                shown, attention, latency_ms), annotated)
                if window:
                    cv2.imshow(WINDOW, annotated)
                    key = cv2.waitKey(0 if isinstance(source, ImageSource) else 1) & 0xFF
                    if key in QUIT_KEYS or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                        break
        except SourceError as failure:
            error = failure  # e.g. the camera went away: report what was done, then the error
        except KeyboardInterrupt as signal_name:  # a second signal, or one before the loop began
            print(f"stopped ({signal_name or 'Ctrl-C'})")
        finally:
            wall = time.perf_counter() - started
            progress.close()
            source.close()
            written = recorder.close() if recorder is not None else []
            if window:
                cv2.destroyAllWindows()
    summary = summarize(timings, wall)
    summary["files"] = [str(path) for path in written]
    if config.benchmark:
        print(format_benchmark(summary, model, source, config.threads, config.target_fps))
    else:
        print(format_summary(summary) + (f"; wrote {', '.join(summary['files'])}" if written else ""))
    if error is not None:
        raise error
    return summary


def parse_args(argv=None) -> DemoConfig:
    defaults = DemoConfig(model=Path())
    parser = argparse.ArgumentParser(prog=program("python edge_demo/camera.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="model.pte (ExecuTorch), model.onnx (ONNX Runtime) or a checkpoint .pt (PyTorch)")
    parser.add_argument("--source",
                        help="camera index (default 0), video file, image, folder of images, or shapes "
                             "(a generated stream of moving scenes)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: write the annotated video or images and detections.jsonl to --out")
    parser.add_argument("--out", type=Path,
                        help="output folder (default runs/edge_demo when headless; with a window: nothing written "
                             "unless given)")
    parser.add_argument("--exist-ok", action="store_true",
                        help="write into --out even if it holds an earlier run (default: the next free name)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames (benchmark default 300)")
    parser.add_argument("--threads", type=positive_int,
                        help="CPU threads of the runtime (default: the runtime's choice)")
    parser.add_argument("--smoothing", type=float_range(0.0, 1.0, high_open=True), default=defaults.smoothing,
                        help="weight of the past in the moving average of probabilities, in [0, 1) (0: none)")
    parser.add_argument("--hysteresis", type=float_range(0.0, 1.0, high_open=True), default=defaults.hysteresis,
                        help="a shown label goes off below threshold x (1 - this)")
    parser.add_argument("--where", default=defaults.where, choices=["markers", "heatmap", "off"],
                        help="with an attention output: a marker per shown label at its peak, or a heat map")
    parser.add_argument("--attention-stage", type=attention_stage,
                        help="checkpoints: the stage (0-3) whose attention shows where labels are (exported files "
                             "have the output or not)")
    parser.add_argument("--shapes-size", type=int_at_least(16), default=defaults.shapes_size,
                        help="--source shapes: frame side in pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="--source shapes: which scenes the stream shows")
    parser.add_argument("--benchmark", action="store_true",
                        help="measure end-to-end FPS (decode, preprocess, infer, overlay); writes nothing")
    parser.add_argument("--warmup", type=non_negative_int, default=defaults.warmup,
                        help="--benchmark: frames run before timing starts")
    parser.add_argument("--target-fps", type=positive_float, default=defaults.target_fps,
                        help="--benchmark: the throughput to meet")
    parser.add_argument("--web", action="store_true",
                        help="instead: serve the model (.onnx) in a web page, photo or camera in the browser "
                             "(--web --help lists its flags)")
    config = vars(parser.parse_args(argv))
    config.pop("web")
    return DemoConfig(**config)


def main(argv=None) -> dict | None:
    """Run the demo; bad input (model, source, output folder, a camera that goes away) is reported in one line
    and exits with status 1. With --web, the web demo runs instead (hsvlt.deploy.web, its own flags)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--web" in argv:
        from hsvlt.deploy import web

        return web.main([arg for arg in argv if arg != "--web"])
    return run_command(run, parse_args(argv))
