"""Labels for a photo, from Python:

    from hsvlt import Classifier
    classifier = Classifier("model.pte")            # or .onnx, or a training checkpoint (.pt)
    result = classifier("photo.jpg")               # a path, an RGB uint8 array, or a list of them (batched)
    result.labels, result.scores, result.where     # above each label's calibrated threshold, best first

The model file's manifest (model.pte.json beside it; a checkpoint carries its own) gives the label names, the
per-label thresholds and the input size. Images are decoded by hsvlt.images.read_image and prepared by
hsvlt.preprocess, the definitions training, evaluation, the exporters and the demo use; the model runs
through the runtime adapters of hsvlt.deploy.runtimes. Failures are the project's one-line errors (ValueError
subclasses naming the file).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsvlt.deploy.runtimes import Model, attention_peak, open_model
from hsvlt.images import megapixel_limit, read_image, to_uint8
from hsvlt.preprocess import preprocess_image

ImageLike = str | Path | np.ndarray


@dataclass
class Prediction:
    """What the classifier says about one image."""

    labels: list[str]  # above their thresholds, best first (at most top_k)
    scores: list[float]  # the probabilities of `labels`, same order
    probabilities: dict[str, float]  # every label's probability, in the model's label order
    where: dict[str, tuple[float, float]] | None = None  # label -> (x, y) in the image's pixels, with attention
    source: str | None = None  # the file, for an image given by path
    size: tuple[int, int] = (0, 0)  # the image's (width, height)

    def as_record(self) -> dict:
        """A JSON-ready dict: one line of `hsvlt predict --format json`."""
        record = {"image": self.source, "width": self.size[0], "height": self.size[1], "labels": self.labels,
                  "scores": [round(s, 6) for s in self.scores], "probabilities": self.probabilities}
        if self.where is not None:
            record["where"] = {label: [round(v, 1) for v in xy] for label, xy in self.where.items()}
        return record


@dataclass
class Classifier:
    """A deployed HSVLT model as a function from images to label sets.

    threshold: one probability for every label instead of the manifest's calibrated per-label thresholds.
    top_k: at most this many labels per image, the most probable first (with threshold=0, exactly the top k).
    threads: CPU threads of the runtime (default: the runtime's choice). batch_size: images per runtime call.
    attention_stage: for a checkpoint, the stage (0-3) whose attention says where each label is (exported
    files have the output or not). max_megapixels: image files larger than this are refused from their header,
    before decoding (default: the environment variable HSVLT_MAX_MEGAPIXELS, else 200; hsvlt.images)."""

    model: str | Path | Model
    threshold: float | None = None
    top_k: int | None = None
    threads: int | None = None
    batch_size: int = 16
    attention_stage: int | None = None
    max_megapixels: float | None = None
    adapter: Model = field(init=False, repr=False)  # the runtime adapter running the file

    def __post_init__(self):
        check_threshold(self.threshold)
        check_top_k(self.top_k)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        megapixel_limit(self.max_megapixels)  # a bad limit is refused now, not at the first image
        self.adapter = self.model if isinstance(self.model, Model) else \
            open_model(self.model, self.threads, self.attention_stage)

    @property
    def labels(self) -> list[str]:
        return self.adapter.labels

    @property
    def thresholds(self) -> np.ndarray:
        return self.adapter.thresholds

    def __call__(self, images: ImageLike | list[ImageLike], threshold: float | None = None,
                 top_k: int | None = None) -> Prediction | list[Prediction]:
        """One Prediction for one image, a list for a list (run in batches of batch_size)."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        predictions = []
        for start in range(0, len(items), self.batch_size):
            predictions += self.classify_batch(items[start:start + self.batch_size], threshold, top_k)
        return predictions[0] if single else predictions

    def classify_batch(self, items: list[ImageLike], threshold: float | None = None,
                       top_k: int | None = None) -> list[Prediction]:
        """One Prediction per image of `items`, in one runtime call (the caller keeps to batch_size)."""
        images = [load(item, self.max_megapixels) for item in items]  # RGB uint8 H x W x 3
        batch = np.concatenate([preprocess_image(image, self.adapter.input_size) for image in images])
        output = self.adapter.run(batch)
        cut = self.cut(threshold)
        top_k = check_top_k(top_k if top_k is not None else self.top_k)
        predictions = []
        for index, (item, image) in enumerate(zip(items, images)):
            probabilities = output.probabilities[index]  # C
            chosen = [int(c) for c in np.argsort(-probabilities, kind="stable") if probabilities[c] >= cut[c]]
            chosen = chosen[:top_k] if top_k is not None else chosen
            height, width = image.shape[:2]
            where = None
            if output.attention is not None:
                where = {self.labels[c]: attention_peak(output.attention[index][c], width, height) for c in chosen}
            predictions.append(Prediction(
                labels=[self.labels[c] for c in chosen], scores=[float(probabilities[c]) for c in chosen],
                probabilities={label: float(p) for label, p in zip(self.labels, probabilities)}, where=where,
                source=str(item) if isinstance(item, (str, Path)) else None, size=(width, height)))
        return predictions

    # The earlier name, kept for one release: calling the classifier is the way to predict.
    predict_batch = classify_batch

    def cut(self, threshold: float | None = None) -> np.ndarray:
        """The per-label thresholds in force: the call's, else the classifier's, else the manifest's."""
        threshold = check_threshold(threshold if threshold is not None else self.threshold)
        return self.thresholds if threshold is None else np.full(len(self.labels), threshold, np.float32)


def check_threshold(threshold: float | None) -> float | None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    return threshold


def check_top_k(top_k: int | None) -> int | None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    return top_k


def load(item: ImageLike, max_megapixels: float | None = None) -> np.ndarray:
    """A path (decoded by hsvlt.images.read_image, refused above max_megapixels) or an array -> RGB uint8
    H x W x 3. An array is RGB (or grayscale H x W), 8-bit, 16-bit or float in [0, 1]; use read_image for files
    with transparency."""
    if isinstance(item, (str, Path)):
        return read_image(item, max_megapixels)
    if not isinstance(item, np.ndarray):
        raise ValueError(f"an image must be a path or a numpy array, got {type(item).__name__}")
    if item.ndim == 2:
        item = np.repeat(item[..., None], 3, axis=2)
    if item.ndim != 3 or item.shape[2] != 3 or min(item.shape[:2]) < 1:
        raise ValueError(f"an image array must be H x W x 3 RGB (or H x W grayscale), got shape {item.shape}")
    return np.ascontiguousarray(to_uint8(item, "image array"))
