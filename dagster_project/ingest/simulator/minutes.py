"""What the trade tape's fit keeps per second, per (second, side) bucket and per minute.

The fit works minute by minute: a second's own figures where its trades can reach them, the rest
moved among the seconds of its minute so that every 1m kline adds up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dagster_project.ingest.simulator.day_path import DayPath
from dagster_project.ingest.simulator.units import MINUTES_PER_DAY, SECONDS_PER_MINUTE, Grid

SIDES = 2  # trade buckets are (second, side): side 0 = taker buys, side 1 = taker sells


@dataclass(frozen=True)
class Quotes:
    """The klines' quote volumes in quanta (tick x lot): per second within 1 of the klines', and
    per minute exactly the rounded minute sums."""

    total: np.ndarray
    buys: np.ndarray
    minute_total: np.ndarray
    minute_buys: np.ndarray

    @classmethod
    def of(cls, path: DayPath) -> Quotes:
        scale = Grid(path.tick_size).scale(1.0) * Grid(path.lot_size).scale(1.0)
        total, minute_total = _cumulative_round(path.quote_volume * scale)
        buys, minute_buys = _cumulative_round(path.taker_buy_quote_volume * scale)
        return cls(total, buys, minute_total, minute_buys)


@dataclass(frozen=True)
class Bounds:
    """Each second's ``[low, high]`` in ticks."""

    low: np.ndarray
    high: np.ndarray

    def clip(self, ticks: np.ndarray, second: np.ndarray) -> np.ndarray:
        return np.clip(ticks, self.low[second], self.high[second])

    def of_buckets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(self.low, SIDES), np.repeat(self.high, SIDES)


def by_minute(values: np.ndarray) -> np.ndarray:
    """A day's per-second ``values`` as rows of minutes."""
    return values.reshape(MINUTES_PER_DAY, SECONDS_PER_MINUTE)


def fill_in_random_order(
    rng: np.random.Generator, room: np.ndarray, amount: np.ndarray
) -> np.ndarray:
    """Share ``amount[m]`` among the entries of row ``m`` of ``room`` (minutes x seconds), each up
    to its room, filling them one after another in a random order (so few seconds change)."""
    order = np.argsort(rng.random(room.shape), axis=1)
    ordered = np.take_along_axis(room, order, axis=1)
    before = np.cumsum(ordered, axis=1) - ordered
    take = np.clip(amount[:, None] - before, 0, ordered)
    out = np.empty_like(take)
    np.put_along_axis(out, order, take, axis=1)
    return out


def _cumulative_round(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-second integers within 1 of ``values`` whose minute sums are the rounded minute sums."""
    reached = np.rint(np.cumsum(by_minute(values), axis=1)).astype(np.int64)
    return np.diff(reached, axis=1, prepend=0).ravel(), reached[:, -1]
