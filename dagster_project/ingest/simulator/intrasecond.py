"""The path inside each second, which trades and books between whole seconds follow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dagster_project.ingest.simulator.config import SimulatorConfig
from dagster_project.ingest.simulator.day_path import DayPath, day_index
from dagster_project.ingest.simulator.streams import STREAM_KNOTS, stream_rng
from dagster_project.ingest.simulator.units import SECONDS_PER_DAY, Grid


@dataclass(frozen=True)
class Knots:
    """Each second's intra-second path in ticks: from the mid at its start through its two
    extremes (at fractions ``u1 < u2`` of the second) to the mid at its end, linear in between."""

    start: np.ndarray
    extreme1: np.ndarray
    extreme2: np.ndarray
    end: np.ndarray
    u1: np.ndarray
    u2: np.ndarray

    def at(self, second: np.ndarray, frac: np.ndarray) -> np.ndarray:
        """The path (real ticks) at ``frac`` of the way through ``second``."""
        u1, u2 = self.u1[second], self.u2[second]
        a, b = self.start[second], self.extreme1[second]
        c, d = self.extreme2[second], self.end[second]
        rise1 = a + (b - a) * frac / np.maximum(u1, 1e-12)
        rise2 = b + (c - b) * (frac - u1) / np.maximum(u2 - u1, 1e-12)
        rise3 = c + (d - c) * (frac - u2) / np.maximum(1 - u2, 1e-12)
        return np.where(frac < u1, rise1, np.where(frac < u2, rise2, rise3))


def knots_of(path: DayPath, config: SimulatorConfig) -> Knots:
    """The intra-second paths of ``path``'s day: the high comes first in 30 % of rising seconds,
    70 % of falling ones and half of flat ones; the turning times are random, then moved so that
    the path's mean over the second is as near its VWAP as they allow."""
    rng = stream_rng(config, path.symbol, STREAM_KNOTS, day_index(path, config))
    a, b, c = rng.random((3, SECONDS_PER_DAY))
    tick = Grid(path.tick_size)
    opens, closes = tick.to_steps(path.open), tick.to_steps(path.close)
    low, high = tick.to_steps(path.low), tick.to_steps(path.high)
    high_first = c < np.where(closes > opens, 0.3, np.where(closes < opens, 0.7, 0.5))
    mid = tick.scale(path.mid)
    start, end = mid[:-1], mid[1:]
    first, then = np.where(high_first, high, low), np.where(high_first, low, high)
    # turning times moved (least squares) so that the path's mean is the second's VWAP:
    # mean = (then + end) / 2 + u1 (start - then) / 2 + u2 (first - end) / 2
    vwap = tick.scale(path.quote_volume / path.volume())
    g1, g2 = (start - then) / 2, (first - end) / 2
    u1, u2 = np.minimum(a, b), np.maximum(a, b)
    miss = (vwap - (then + end) / 2 - g1 * u1 - g2 * u2) / np.maximum(g1**2 + g2**2, 1e-12)
    u1 = np.clip(u1 + miss * g1, 0.0, 1.0)
    u2 = np.clip(u2 + miss * g2, u1, 1.0)
    return Knots(start=start, extreme1=first, extreme2=then, end=end, u1=u1, u2=u2)
