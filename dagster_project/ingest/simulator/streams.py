"""The seeded random streams: one generator per (seed, symbol, stream, index), and their shocks.

Each stream tag keeps one kind of draw apart from the others, so adding draws to one part of the
simulator never shifts another part's numbers.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dagster_project.ingest.simulator.config import SimulatorConfig, symbol_key

STREAM_DAILY = 1  # one tag per kind of draw, so that the kinds never share a stream
STREAM_INTRADAY = 2
STREAM_TRADES = 3
STREAM_KNOTS = 4
STREAM_BOOK = 5


def stream_rng(
    config: SimulatorConfig, symbol: str, stream: int, index: int
) -> np.random.Generator:
    """The generator of ``stream`` number ``index`` (a day, or a block of days) of ``symbol``."""
    entropy = [config.seed, symbol_key(symbol), stream, index]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def student_t(rng: np.random.Generator, dof: float, size: int) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(dof, size) * math.sqrt((dof - 2) / dof)


@functools.lru_cache(maxsize=8)
def mean_abs_t(dof: float) -> float:
    """E|T| of a unit-variance Student-t with ``dof`` degrees of freedom."""
    log_ratio = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)
    return 2 * math.sqrt(dof - 2) * math.exp(log_ratio) / ((dof - 1) * math.sqrt(math.pi))
