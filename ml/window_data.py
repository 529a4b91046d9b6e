"""Windows of the lake as arrays: one ``windows/windows`` partition joined to its curated klines.

``load_windows`` reads the windows of one symbol, interval, day, dataset and window size with
their candles (``sql/images/window_candles.sql``) into a ``WindowBatch`` for
``ml.rendering.render``, plus a frame of what identifies each window (``decision_time``, its
paired ``label``).
``attach_labels`` adds each window's label value and ``known_at`` from ``labels/labels``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from dagster_project.core.days import day_range
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.integrity import verify_files
from dagster_project.core.klines import interval_us
from dagster_project.core.lake import Lake
from dagster_project.core.sql import run_sql
from dagster_project.transform.curate import span_files
from dagster_project.transform.dataset_days import candle_history_days
from ml.rendering import WindowBatch

SQL_NAME = "images/window_candles"
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class WindowPartition:
    """The windows of one dataset and window size in one symbol-interval-day partition, or in
    the consecutive days ``day`` .. ``last_day`` (a backfill's range, read at once)."""

    symbol: str
    interval: str
    day: dt.date
    dataset: str
    window_size: int
    last_day: dt.date | None = None

    @property
    def keys(self) -> dict[str, object]:
        return {"symbol": self.symbol, "interval": self.interval, "date": self.day}

    @property
    def days(self) -> list[dt.date]:
        return day_range(self.day, self.last_day or self.day)

    def day_keys(self) -> list[dict[str, object]]:
        return [{"symbol": self.symbol, "interval": self.interval, "date": d} for d in self.days]


def load_windows(
    lake: Lake, con: duckdb.DuckDBPyConnection, part: WindowPartition
) -> tuple[WindowBatch, pl.DataFrame]:
    """The partition's windows (oldest first) and a frame ``decision_time, label`` in the same
    order. A window whose candles are not all in the lake (a re-landed day) is left out."""
    window_files = [lake.partition_file("windows", "windows", keys) for keys in part.day_keys()]
    missing = [str(path) for path in window_files if not path.is_file()]
    if missing:
        raise InvalidRequestError(f"no windows partition at {', '.join(missing)}")
    verify_files(window_files)
    history = candle_history_days(part.interval)
    frame = run_sql(
        con,
        SQL_NAME,
        {
            "window_files": [str(path) for path in window_files],
            "kline_files": span_files(
                lake, part.symbol, part.interval, part.days[0], part.days[-1], history
            ),
            "bar_us": interval_us(part.interval),
            "dataset": part.dataset,
            "window_size": part.window_size,
        },
    ).pl()
    return batch_from_frame(frame, part.window_size), frame.select("decision_time", "label")


def batch_from_frame(frame: pl.DataFrame, window_size: int) -> WindowBatch:
    """A WindowBatch from list columns open/high/low/close/volume/moving_average/dropped_mask."""

    def matrix(column: str, dtype: type[pl.DataType] = pl.Float64) -> np.ndarray:
        """(windows, window_size); NULL elements of a float column become NaN."""
        if frame.height == 0:
            return np.empty((0, window_size))
        return frame[column].cast(pl.List(dtype)).list.to_array(window_size).to_numpy()

    prices = {c: matrix(c).astype(np.float64) for c in PRICE_COLUMNS}
    present = ~matrix("dropped_mask", pl.Boolean).astype(bool)
    return WindowBatch(**prices, present=present, ma=matrix("moving_average").astype(np.float64))


def attach_labels(
    lake: Lake, part: WindowPartition, windows: pl.DataFrame, label: str | None = None
) -> pl.DataFrame:
    """``windows`` with ``value`` and ``known_at`` of its paired label (or of ``label`` for every
    window, e.g. a leakage control); NULL where the label is not in the lake (yet)."""
    labels = pl.concat(
        [lake.read_partition("labels", "labels", keys) for keys in part.day_keys()],
        how="diagonal_relaxed",
    ).select("decision_time", "label", "value", "known_at")
    if label is not None:
        windows = windows.with_columns(pl.lit(label).alias("label"))
    return windows.join(labels, on=["decision_time", "label"], how="left", maintain_order="left")
