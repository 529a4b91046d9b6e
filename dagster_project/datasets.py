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

from dagster_project.klines import CURATED_INTERVALS, interval_length, to_utc
from dagster_project.labels import build_labels, build_windows, check_known_at
from dagster_project.lake import Lake
from dagster_project.sql import run_sql
from ml.splits import time_split


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


# Days of curated klines read on each side of a labels / windows day: the windows' and the
# volatility's history before it, the label horizons past its midnight after it.
NEIGHBOUR_DAYS = 1


def neighbour_kline_files(lake: Lake, symbol: str, interval: str, day: dt.date) -> list[str]:
    """The curated klines files from NEIGHBOUR_DAYS before to NEIGHBOUR_DAYS after ``day`` that
    exist; none when the day itself has no curated klines at this interval."""

    def file(d: dt.date):
        return lake.partition_file(
            "curated", "klines", {"symbol": symbol, "interval": interval, "date": d}
        )

    if not file(day).is_file():
        return []
    days = (day + dt.timedelta(days=n) for n in range(-NEIGHBOUR_DAYS, NEIGHBOUR_DAYS + 1))
    return [str(file(d)) for d in days if file(d).is_file()]


def bad_known_at(labels: pl.DataFrame) -> int:
    return check_known_at(labels).height


@dataclass(frozen=True)
class SplitSettings:
    train: float = 0.6  # share of each series' samples, oldest first
    validation: float = 0.2
    test: float = 0.2
    embargo_bars: int = 30  # bars dropped before each later block (the longest window)


SERIES = ("symbol", "interval", "dataset", "window_size")


def assign_splits(
    lake: Lake, con: duckdb.DuckDBPyConnection, settings: SplitSettings = SplitSettings()
) -> pl.DataFrame:
    """Every landed sample with its ``split`` (train / validation / test / purged / embargoed),
    assigned per series (symbol, interval, dataset, window size) in time order with purging on
    ``known_at`` and an embargo (``ml.splits.time_split``); written to ``windows/splits``."""
    samples = run_sql(
        con,
        "windows/samples",
        {
            "window_files": lake.glob("windows", "windows", ("symbol", "interval", "date")),
            "label_files": lake.glob("labels", "labels", ("symbol", "interval", "date")),
        },
    ).pl()
    parts = []
    for (_symbol, interval, *_), series in samples.group_by(SERIES, maintain_order=True):
        embargo = settings.embargo_bars * interval_length(interval)
        parts.append(
            time_split(series, settings.train, settings.validation, settings.test, embargo)
        )
    splits = pl.concat(parts) if parts else samples.with_columns(split=pl.lit(None, pl.String))
    for (symbol, interval), rows in splits.group_by(["symbol", "interval"]):
        lake.write_partition("windows", "splits", {"symbol": symbol, "interval": interval}, rows)
    return splits


def training_rows_reaching_test(splits: pl.DataFrame) -> int:
    """Training samples whose label is known at or after the first test decision time of their
    series: must be 0 (purging guarantees it)."""
    first_test = (
        splits.filter(pl.col("split") == "test")
        .group_by(SERIES)
        .agg(pl.col("decision_time").min().alias("test_start"))
    )
    train = splits.filter(pl.col("split") == "train").join(first_test, on=SERIES)
    return train.filter(pl.col("known_at") >= pl.col("test_start")).height
