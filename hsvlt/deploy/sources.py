"""Where the demo's frames come from: a camera, a video file, an image, a folder of images, or `shapes` (a
generated stream of scenes from the built-in dataset, objects drifting, turning and changing scale).

    source = open_source("shapes")           # or "0", "clip.mp4", "photo.jpg", "photos/"
    for frame in source:                     # Frame: BGR uint8 H x W x 3, its name, the scene's truth if known
        ...
    source.close()

Every failure is a SourceError whose message is one line naming the source and the problem: a camera that
does not open or stops delivering frames, an unreadable file, a frame with no pixels or an unknown layout.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from hsvlt.data.shapes import CLASSES, SceneSpec, draw_objects, render_scene, sample_scene
from hsvlt.images import IMAGE_SUFFIXES, BadImage, read_image, to_uint8

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class SourceError(ValueError):
    """A source that cannot deliver frames; the message is one line naming it and the problem."""


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8 H x W x 3
    index: int  # position in the stream, from 0
    name: str  # file name, or "<source>#<index>" for streams
    truth: list[dict] | None = field(default=None)  # shapes: the objects in view (label, x, y, size in pixels)


def as_bgr(frame: np.ndarray, where: str) -> np.ndarray:
    """Any frame OpenCV's capture hands over (grayscale, BGRA, 16-bit, float in [0, 1]) -> BGR uint8 H x W x 3,
    depth converted as hsvlt.images converts files. A capture's fourth channel is padding, not transparency
    (many drivers leave it 0), so it is dropped rather than composited."""
    frame = np.asarray(frame)
    if frame.size == 0 or frame.ndim not in (2, 3) or min(frame.shape[:2]) < 1:
        raise SourceError(f"{where}: frame has no pixels (shape {frame.shape})")
    try:
        frame = to_uint8(frame, where)
    except BadImage as error:
        raise SourceError(str(error).replace("pixels of type", "frames of type")) from None
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if channels == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if channels == 3:
        return np.ascontiguousarray(frame)
    raise SourceError(f"{where}: frames with {channels} channels are not supported (1, 3 or 4)")


class Source:
    """An iterable of Frames with a name; close() releases the device or file."""

    name = "?"
    live = False  # a camera: frames keep coming until the user stops

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CaptureSource(Source):
    """A camera (by index) or a video file, through cv2.VideoCapture."""

    def __init__(self, target: int | Path):
        self.live = isinstance(target, int)
        self.name = f"camera {target}" if self.live else str(target)
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its warnings would say it twice
        try:
            self.capture = cv2.VideoCapture(target if self.live else str(target))
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not self.capture.isOpened():
            self.capture.release()
            if self.live:
                raise SourceError(f"no camera at index {target}; run on a video, an image, a folder of images or "
                                  f"a generated stream instead, e.g. --source shapes")
            raise SourceError(f"{target}: cannot read it as a video")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or None

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok:
                if self.live:
                    raise SourceError(f"{self.name}: stopped delivering frames after {index} frames "
                                      f"(disconnected or in use by another program?)")
                if index == 0:
                    raise SourceError(f"{self.name}: no frame could be decoded")
                return
            yield Frame(as_bgr(image, f"{self.name} frame {index}"), index, f"{Path(self.name).name}#{index}")
            index += 1

    def close(self) -> None:
        self.capture.release()


def read_bgr(path: Path) -> np.ndarray:
    """An image file -> BGR uint8 for drawing, decoded by hsvlt.images.read_image (upright, alpha over white),
    or a SourceError."""
    try:
        return cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR)
    except BadImage as error:
        raise SourceError(str(error)) from None


class ImageSource(Source):
    """One image file, or every image of a folder in name order. In a folder, a file that does not decode is
    reported in one line and skipped (`skipped` lists them); a folder with no image at all is an error."""

    def __init__(self, path: Path):
        self.name = str(path)
        if path.is_dir():
            self.paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.paths:
                raise SourceError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        else:
            self.paths = [path]
        self.folder = path.is_dir()
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            try:
                image = read_bgr(path)
            except SourceError as error:
                if not self.folder:
                    raise
                print(f"skipped: {error}")
                self.skipped.append(path.name)
                continue
            yield Frame(image, index, path.name)
            index += 1
        if index == 0:
            raise SourceError(f"{self.name}: none of its {len(self.paths)} images could be read")


class ShapesSource(Source):
    """An endless stream of generated `shapes` scenes (hsvlt.data.shapes): each scene lasts `scene_seconds` of
    stream time, its objects drift, turn and grow or shrink (SceneSpec.moved), then the next scene cuts in.
    Time is the frame index / `fps`, not the wall clock, so the stream is the same on every run. Frames carry
    the scene's truth: each object's label and where it is, in pixels."""

    live = True

    def __init__(self, size: int = 480, fps: float = 30.0, scene_seconds: float = 3.0, seed: int = 0):
        self.name, self.size, self.fps, self.scene_seconds, self.seed = "shapes", size, fps, scene_seconds, seed
        self.frames_per_scene = max(1, round(scene_seconds * fps))

    def scene(self, number: int) -> SceneSpec:
        # Seeds apart from the training splits' ([seed, split, index]): the stream shows unseen scenes.
        return sample_scene(np.random.default_rng([self.seed, 7, number]))

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            spec = self.scene(index // self.frames_per_scene)
            # Background and clutter do not move: drawn once per scene (render_scene draws them first, then
            # the objects, so background + objects is the same image render_scene(spec) makes).
            backdrop = render_scene(replace(spec, objects=()), self.size)
            for step in range(self.frames_per_scene):
                moved = spec.moved(step / self.fps)
                rgb = backdrop.copy()
                draw_objects(rgb, moved)
                truth = [{"label": CLASSES[o.label], "x": o.x * self.size, "y": o.y * self.size,
                          "size": o.size * self.size} for o in moved.objects]
                yield Frame(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), index, f"shapes#{index}", truth)
                index += 1


def open_source(spec: str | None, shapes_size: int = 480, seed: int = 0) -> Source:
    """--source: None or a number -> camera; "shapes" -> generated stream; a folder or image -> images; any
    other existing file -> video. A path that does not exist is a SourceError."""
    spec = "0" if spec is None else spec
    if spec.isdigit():
        return CaptureSource(int(spec))
    if spec == "shapes":
        return ShapesSource(size=shapes_size, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder (--source takes a camera index, a video, an image, "
                          f"a folder of images or shapes)")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        # Not a known suffix: let OpenCV try it as a video (it reads many containers), then as an image.
        try:
            return CaptureSource(path)
        except SourceError:
            read_bgr(path)
            return ImageSource(path)
    return CaptureSource(path)
