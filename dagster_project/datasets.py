"""Labels and windows of one symbol-day, at every curated interval that day has.

Labels look ahead (their horizons) and windows and volatility look back, so each day reads the
curated klines of the day before and after as well, where they exist. A label whose future is
not in the lake yet is absent, not guessed: re-materialize a day once the next one has landed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from dagster_project.klines import CURATED_INTERVALS, to_utc
from dagster_project.labels import build_labels, build_windows, check_known_at
from dagster_project.lake import Lake


@dataclass(frozen=True)
class DatasetDay:
    interval: str
    labels: int
    windows: int
    windows_excluded: int  # windows crossing a gap in the klines
    bad_known_at: int  # non-leaky labels not known after their decision time (must be 0)


def build_dataset_day(
    lake: Lake, con: duckdb.DuckDBPyConnection, symbol: str, day: dt.date
) -> list[DatasetDay]:
    """Write ``labels/labels`` and ``windows/windows`` for each curated interval of the day."""
    start = to_utc(day)
    end = start + dt.timedelta(days=1)
    built = []
    for interval in CURATED_INTERVALS:
        files = neighbour_kline_files(lake, symbol, interval, day)
        if not files:
            continue
        keys = {"symbol": symbol, "interval": interval, "date": day}
        labels = build_labels(con, files, interval, start, end)
        windows, excluded = build_windows(con, files, interval, start, end, symbol=symbol)
        lake.write_partition("labels", "labels", keys, labels)
        lake.write_partition("windows", "windows", keys, windows)
        built.append(
            DatasetDay(interval, labels.height, windows.height, excluded, bad_known_at(labels))
        )
    return built


def neighbour_kline_files(lake: Lake, symbol: str, interval: str, day: dt.date) -> list[str]:
    """The curated klines files of the day before, the day and the day after that exist; none
    when the day itself has no curated klines at this interval."""

    def file(d: dt.date):
        return lake.partition_file(
            "curated", "klines", {"symbol": symbol, "interval": interval, "date": d}
        )

    if not file(day).is_file():
        return []
    days = (day - dt.timedelta(days=1), day, day + dt.timedelta(days=1))
    return [str(file(d)) for d in days if file(d).is_file()]


def bad_known_at(labels: pl.DataFrame) -> int:
    return check_known_at(labels).height
