"""Klines of any interval, aggregated from the per-second path."""

from __future__ import annotations

import numpy as np
import polars as pl

from dagster_project.core.klines import (
    TIMESTAMP,
    TimeRange,
    conform,
    empty_klines,
    interval_length,
    to_utc,
)
from dagster_project.ingest.simulator.config import SOURCE, SimulatorConfig
from dagster_project.ingest.simulator.day_path import DayPath, day_paths
from dagster_project.ingest.simulator.units import SECONDS_PER_DAY, US_PER_SECOND, Grid


def simulate_klines(
    symbol: str,
    interval: str,
    time_range: TimeRange,
    config: SimulatorConfig | None = None,
) -> pl.DataFrame:
    """Simulated klines of ``symbol`` with ``open_time`` in ``[start, end)``, in the contract."""
    config = config or SimulatorConfig()
    interval_length(interval)
    frames = [aggregate_day(path, interval) for path in day_paths(symbol, time_range, config)]
    frame = pl.concat(frames) if frames else empty_klines()
    start, end = to_utc(time_range.start), to_utc(time_range.end)
    return frame.filter(pl.col("open_time").is_between(start, end, closed="left"))


def aggregate_day(path: DayPath, interval: str) -> pl.DataFrame:
    """``path`` as klines of ``interval`` (any of ``klines.INTERVALS``), in the contract schema."""
    seconds = int(interval_length(interval).total_seconds())
    bars = SECONDS_PER_DAY // seconds

    def by_bar(values: np.ndarray) -> np.ndarray:
        return values.reshape(bars, seconds)

    lots = Grid(path.lot_size)
    open_us = path.start_us + np.arange(bars, dtype=np.int64) * seconds * US_PER_SECOND
    frame = pl.DataFrame(
        {
            "open_time": pl.Series(open_us).cast(TIMESTAMP),
            "open": by_bar(path.open)[:, 0],
            "high": by_bar(path.high).max(axis=1),
            "low": by_bar(path.low).min(axis=1),
            "close": by_bar(path.close)[:, -1],
            "volume": lots.to_value(by_bar(path.volume_lots).sum(axis=1)),
            "close_time": pl.Series(open_us + seconds * US_PER_SECOND - 1_000).cast(TIMESTAMP),
            "quote_volume": by_bar(path.quote_volume).sum(axis=1),
            "trades": by_bar(path.trades).sum(axis=1),
            "taker_buy_base_volume": lots.to_value(by_bar(path.taker_buy_lots).sum(axis=1)),
            "taker_buy_quote_volume": by_bar(path.taker_buy_quote_volume).sum(axis=1),
            "source": pl.repeat(SOURCE, bars, dtype=pl.String, eager=True),
        }
    )
    return conform(frame)
