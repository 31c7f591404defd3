"""Drawing the demo's overlay: the labels shown with their probabilities, FPS and inference latency, and where
each label was found (HSVLT's label-to-pixel attention: a heat map, or a marker at each label's peak).

The model sees the whole frame squeezed to a square (hsvlt.preprocess.prepare_image), so an attention cell
(row, column) of an h x w map covers the same fraction of the frame's height and width.
"""

import cv2
import numpy as np

from hsvlt.deploy.runtimes import attention_peak

MIN_SIDE = 360  # smaller frames are enlarged for drawing, so that text stays readable
FONT = cv2.FONT_HERSHEY_SIMPLEX
PALETTE = [(75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
           (240, 240, 70), (230, 50, 240), (60, 245, 210), (190, 190, 250)]  # BGR, one per label index


def label_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def drawing_scale(image: np.ndarray) -> float:
    return max(1.0, MIN_SIDE / min(image.shape[:2]))


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, color=(255, 255, 255)) -> int:
    """Text on a dark box; returns the box's height."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x, y), (x + width + 8, y + height + baseline + 6), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 4, y + height + 3), FONT, scale, color, 1, cv2.LINE_AA)
    return height + baseline + 6


def heat_map(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Blend the strongest of `maps` (k x h x w, each stretched to [0, 1]) over the image."""
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    heat = ((maps - low) / np.maximum(high - low, 1e-12)).max(axis=0)
    heat = cv2.resize(heat.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 0.6, colored, 0.4, 0)


def draw(frame: np.ndarray, labels: list[str], probabilities: np.ndarray, shown: np.ndarray,
         fps: float | None = None, latency_ms: float | None = None, attention: np.ndarray | None = None,
         where: str = "markers") -> np.ndarray:
    """A copy of the BGR frame with the shown labels (probability, sorted), and for a stream FPS and latency; with
    `attention` (C x h x w) also a marker at each shown label's peak (where="markers") or a heat map
    (where="heatmap")."""
    scale = drawing_scale(frame)
    image = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    image = image.copy()
    height, width = image.shape[:2]
    text_scale = 0.5 * max(1.0, min(height, width) / 480)
    indices = [int(i) for i in np.flatnonzero(shown)]
    indices.sort(key=lambda i: -probabilities[i])
    if attention is not None and indices and where == "heatmap":
        image = heat_map(image, attention[indices])
    if attention is not None and where == "markers":
        radius = max(6, min(height, width) // 40)
        for i in indices:
            x, y = (int(round(v)) for v in attention_peak(attention[i], width, height))
            cv2.circle(image, (x, y), radius, label_color(i), 2, cv2.LINE_AA)
            cv2.drawMarker(image, (x, y), label_color(i), cv2.MARKER_CROSS, radius, 1, cv2.LINE_AA)
            _text(image, labels[i], (x + radius, y - radius), text_scale * 0.8, label_color(i))
    y = 6
    for i in indices:
        y += _text(image, f"{labels[i]} {probabilities[i]:.2f}", (6, y), text_scale, label_color(i)) + 2
    if not indices:
        _text(image, "(no label)", (6, y), text_scale, (200, 200, 200))
    if fps is not None:
        status = f"{fps:5.1f} FPS  infer {latency_ms:5.1f} ms"
        (status_width, status_height), _ = cv2.getTextSize(status, FONT, text_scale, 1)
        _text(image, status, (width - status_width - 14, height - status_height - 16), text_scale)
    return image


def draw_prediction(rgb: np.ndarray, prediction, labels: list[str]) -> np.ndarray:
    """An annotated BGR copy of an RGB image for `hsvlt predict --save-images`: its labels (hsvlt.api.Prediction)
    and where each was found, drawn as the demo draws a frame."""
    shown = np.array([label in prediction.labels for label in labels])
    probabilities = np.array([prediction.probabilities[label] for label in labels], dtype=np.float32)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    image = draw(bgr, labels, probabilities, shown)
    scale, radius = drawing_scale(bgr), max(6, min(image.shape[:2]) // 40)
    for label, (x, y) in (prediction.where or {}).items():
        index = labels.index(label)
        centre = (int(round(x * scale)), int(round(y * scale)))
        cv2.circle(image, centre, radius, label_color(index), 2, cv2.LINE_AA)
        cv2.drawMarker(image, centre, label_color(index), cv2.MARKER_CROSS, radius, 1, cv2.LINE_AA)
    return image
