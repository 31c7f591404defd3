"""marks: circles, squares and crosses drawn on grey, a dataset of your own outside the hsvlt package.

    python -m hsvlt.train --data marks:marks             # from the folder that holds marks.py
    python -m hsvlt.train --data path/to/marks.py:marks  # from anywhere
"""

from dataclasses import replace

import cv2
import numpy as np

from hsvlt.data import DataRequest, register_dataset
from hsvlt.data.base import MultiLabelDataset
from hsvlt.recipes import GENERATED_DATA_DEFAULTS

# Names of the shipped `shapes` label set, so its file gives their text embeddings (embeddings="shapes" below).
LABELS = ("circle", "square", "cross")
SPLITS = {"train": 0, "val": 1}
PALETTE = ((220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 30), (20, 20, 20), (250, 250, 250))


class MarksDataset(MultiLabelDataset):
    """`length` scenes of `size` pixels; each mark is in a scene or not, at a random place, size and colour."""

    def __init__(self, split: str, length: int, size: int, seed: int):
        super().__init__(list(LABELS))
        self.split, self.length, self.size, self.seed = SPLITS[split], length, size, seed

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.split, index])  # a scene depends on its index alone
        present = rng.random(len(LABELS)) < 0.5
        present[rng.integers(len(LABELS))] = True  # at least one mark
        image = np.full((self.size, self.size, 3), 128, np.uint8)
        for label in np.array(LABELS)[present]:
            radius = int(rng.integers(self.size // 10, self.size // 4 + 1))
            x, y = (int(v) for v in rng.integers(radius, self.size - radius, 2))
            colour = PALETTE[rng.integers(len(PALETTE))]
            if label == "circle":
                cv2.circle(image, (x, y), radius, colour, -1, cv2.LINE_AA)
            elif label == "square":
                cv2.rectangle(image, (x - radius, y - radius), (x + radius, y + radius), colour, -1)
            else:
                width = max(1, radius // 3)
                cv2.line(image, (x - radius, y - radius), (x + radius, y + radius), colour, width, cv2.LINE_AA)
                cv2.line(image, (x - radius, y + radius), (x + radius, y - radius), colour, width, cv2.LINE_AA)
        return image, present.astype(np.float32)


# Drawn scenes train like the built-in generated ones: their recipe, fewer scenes and epochs for three classes.
@register_dataset("marks", labels=LABELS, embeddings="shapes", generated=True,
                  recipe=replace(GENERATED_DATA_DEFAULTS, train_size=3000, epochs=3))
def marks(request: DataRequest) -> tuple[MarksDataset, MarksDataset]:
    """circles, squares and crosses on grey (generated)"""
    return (MarksDataset("train", request.train_size, request.image_size, request.seed),
            MarksDataset("val", request.val_size, request.image_size, request.seed))
