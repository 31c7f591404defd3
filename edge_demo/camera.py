"""Live multi-label detection: `python edge_demo/camera.py --model model.pte`.

    python edge_demo/camera.py --model model_int8.pte                        # camera 0, window (q or Esc quits)
    python edge_demo/camera.py --model model.onnx --source clip.mp4          # a video file
    python edge_demo/camera.py --model best.pt --source photos/ --headless   # a folder of images, no window
    python edge_demo/camera.py --model model.pte --source shapes --max-frames 300 --headless
    python edge_demo/camera.py --model model_int8.pte --source shapes --benchmark --threads 2

--model is an ExecuTorch program (.pte), an ONNX file (.onnx) or a training checkpoint (.pt); the manifest
beside an exported file (model.pte.json) gives the labels, per-label thresholds and input size. Frames are
prepared by hsvlt.deploy.preprocess_frame, the function the exporters use. The overlay lists every label
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
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge_demo.overlay import draw, peak
from edge_demo.runtimes import load_model
from edge_demo.smoothing import LabelSmoother
from edge_demo.sources import ImageSource, Source, SourceError, open_source
from hsvlt.cli import exit_on_bad_input
from hsvlt.deploy import preprocess_frame
from quant.pt2e import quiet_toolchain

quiet_toolchain()

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


class Recorder:
    """--out: the annotated frames (images for an image source, else one video) and detections.jsonl."""

    def __init__(self, out: Path, source: Source, fps: float | None):
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(out / "detections.jsonl", "w")
        except OSError as error:
            raise ValueError(f"{out}: cannot write here ({error.strerror or error})") from None
        self.out, self.images = out, isinstance(source, ImageSource)
        self.fps, self.video, self.size = fps or 30.0, None, None

    def write(self, record: dict, annotated: np.ndarray) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        if self.images:
            cv2.imwrite(str(self.out / (Path(record["name"]).stem + ".jpg")), annotated)
            return
        if self.video is None:
            self.size = (annotated.shape[1], annotated.shape[0])
            self.video = cv2.VideoWriter(str(self.out / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                         self.fps, self.size)
            if not self.video.isOpened():
                raise ValueError(f"{self.out / 'annotated.mp4'}: OpenCV cannot write an mp4 video here")
        if (annotated.shape[1], annotated.shape[0]) != self.size:  # a stream that changes resolution
            annotated = cv2.resize(annotated, self.size, interpolation=cv2.INTER_AREA)
        self.video.write(annotated)

    def close(self) -> list[Path]:
        self.jsonl.close()
        if self.video is not None:
            self.video.release()
        return [self.out / "detections.jsonl"] + ([self.out / "annotated.mp4"] if self.video is not None else [])


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
        record["where"] = {labels[i]: [round(v, 1) for v in peak(attention[i], width, height)]
                           for i in np.flatnonzero(shown)}
    if frame.truth is not None:
        record["truth"] = frame.truth
    return record


def run(args: argparse.Namespace) -> dict:
    """The demo loop; returns the summary (summarize) with the files written."""
    source = open_source(args.source, args.shapes_size, args.seed)  # first: a missing camera is said at once
    try:
        model = load_model(args.model, args.threads, args.attention_stage)
        smoother = LabelSmoother(model.thresholds, args.smoothing, args.hysteresis)
    except BaseException:
        source.close()
        raise
    window = not (args.headless or args.benchmark) and display_available()
    if not (window or args.benchmark) and not args.headless:
        print("no display here: running headless")
    recorder = None if args.benchmark or (window and args.out is None) else \
        Recorder(args.out or Path("runs/edge_demo"), source, getattr(source, "fps", None))
    print(f"{model.runtime}: {model.path.name} ({len(model.labels)} labels, {model.input_size} px"
          f"{', attention' if model.has_attention else ''}) on {source.name}")
    max_frames = args.max_frames if args.max_frames is not None else (300 if args.benchmark else None)
    warmup = args.warmup if args.benchmark else 0
    timings = {stage: [] for stage in (*STAGES, "total")}
    fps, count, started, error = 0.0, 0, time.perf_counter(), None
    frames = iter(source)
    progress = tqdm(total=max_frames, unit="frame", disable=window or args.benchmark or max_frames is None,
                    leave=False)
    try:
        while max_frames is None or count < max_frames + warmup:
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
                             attention if args.where != "off" else None, args.where)
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
    except KeyboardInterrupt:
        print("stopped (Ctrl-C)")
    finally:
        wall = time.perf_counter() - started
        progress.close()
        source.close()
        written = recorder.close() if recorder is not None else []
        if window:
            cv2.destroyAllWindows()
    summary = summarize(timings, wall)
    summary["files"] = [str(path) for path in written]
    if args.benchmark:
        print(format_benchmark(summary, model, source, args.threads, args.target_fps))
    else:
        print(format_summary(summary) + (f"; wrote {', '.join(summary['files'])}" if written else ""))
    if error is not None:
        raise error
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python edge_demo/camera.py", description=__doc__,
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
    parser.add_argument("--max-frames", type=int, help="stop after this many frames (benchmark default 300)")
    parser.add_argument("--threads", type=int, help="CPU threads of the runtime (default: the runtime's choice)")
    parser.add_argument("--smoothing", type=float, default=0.5,
                        help="weight of the past in the moving average of probabilities, in [0, 1) (0: none)")
    parser.add_argument("--hysteresis", type=float, default=0.2,
                        help="a shown label goes off below threshold x (1 - this)")
    parser.add_argument("--where", default="markers", choices=["markers", "heatmap", "off"],
                        help="with an attention output: a marker per shown label at its peak, or a heat map")
    parser.add_argument("--attention-stage", type=int,
                        help="checkpoints: the stage (0-3) whose attention shows where labels are (exported files "
                             "have the output or not)")
    parser.add_argument("--shapes-size", type=int, default=480, help="--source shapes: frame side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="--source shapes: which scenes the stream shows")
    parser.add_argument("--benchmark", action="store_true",
                        help="measure end-to-end FPS (decode, preprocess, infer, overlay); writes nothing")
    parser.add_argument("--warmup", type=int, default=10, help="--benchmark: frames run before timing starts")
    parser.add_argument("--target-fps", type=float, default=30.0, help="--benchmark: the throughput to meet")
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.shapes_size < 16:
        parser.error("--shapes-size must be at least 16")
    return args


def main(argv=None) -> dict:
    """Run the demo; bad input (model, source, output folder, a camera that goes away) is reported in one line
    and exits with status 1."""
    return exit_on_bad_input(run, parse_args(argv))


if __name__ == "__main__":
    main()
