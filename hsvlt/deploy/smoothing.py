"""Temporal smoothing with hysteresis, so that the labels on screen do not flicker.

Probabilities are averaged over time (exponential moving average). A label switches on when its smoothed
probability reaches the class's threshold and switches off only when it falls below a lower level,
threshold x (1 - hysteresis): a probability hovering around the threshold keeps the label's current state.
"""

import numpy as np


class LabelSmoother:
    """Feed it one frame's probabilities (C,) at a time; it returns the labels to show (boolean C)."""

    def __init__(self, thresholds: np.ndarray, smoothing: float = 0.5, hysteresis: float = 0.2):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"--smoothing must be in [0, 1), got {smoothing}")
        if not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"--hysteresis must be in [0, 1), got {hysteresis}")
        self.on_level = np.asarray(thresholds, dtype=np.float32)
        self.off_level = self.on_level * (1.0 - hysteresis)
        self.smoothing = smoothing  # weight of the past: 0 = no smoothing
        self.probabilities: np.ndarray | None = None  # smoothed, C
        self.active = np.zeros(len(self.on_level), dtype=bool)

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if self.probabilities is None:
            self.probabilities = probabilities.copy()
        else:
            self.probabilities = self.smoothing * self.probabilities + (1.0 - self.smoothing) * probabilities
        self.active = np.where(self.active, self.probabilities >= self.off_level,
                               self.probabilities >= self.on_level)
        return self.active.copy()
