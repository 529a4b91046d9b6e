"""The units every part of the simulator shares: a day's seconds and the price/quantity grid."""

from __future__ import annotations

import numpy as np

SECONDS_PER_DAY = 86_400
SECONDS_PER_MINUTE = 60
MINUTES_PER_DAY = SECONDS_PER_DAY // SECONDS_PER_MINUTE
US_PER_SECOND = 1_000_000


class Grid:
    """A price or quantity grid: values <-> integer steps, exactly decimal when step = 10**-n."""

    def __init__(self, step: float) -> None:
        self.step = step
        inverse = 1.0 / step
        self.inverse = round(inverse) if step < 1 and abs(inverse - round(inverse)) < 1e-9 else None

    def to_steps(self, values: np.ndarray) -> np.ndarray:
        scaled = values * self.inverse if self.inverse else values / self.step
        return np.maximum(np.rint(scaled), 1).astype(np.int64)

    def to_value(self, steps: np.ndarray) -> np.ndarray:
        return steps / self.inverse if self.inverse else steps * self.step

    def scale(self, values: np.ndarray | float) -> np.ndarray | float:
        """``values`` in (real, unrounded) steps."""
        return values * self.inverse if self.inverse else values / self.step
