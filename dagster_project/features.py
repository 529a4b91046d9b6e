"""Feature tables built in SQL from the curated and raw layers, one symbol-day at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dagster_project.errors import InvalidRequestError
from dagster_project.indicators import compute_indicators, feature_availability, warmup_days
from dagster_project.integrity import verify_files
from dagster_project.klines import CURATED_INTERVALS, to_utc
from dagster_project.lake import Lake
from dagster_project.partitions import consecutive_stretches
from dagster_project.sql import run_sql

# Earlier days of curated klines an indicators day reads, at its longest-warm-up interval.
INDICATOR_HISTORY_DAYS = max(warmup_days(interval) for interval in CURATED_INTERVALS)


@dataclass(frozen=True)
class MicrostructureSettings:
    top_n: int = 5  # levels per side summed by imbalance_top_n


def microstructure_inputs(lake: Lake, symbol: str, day: dt.date) -> dict[str, Path]:
    """The day's 1m curated klines, depth snapshots and agg trades files, by query parameter."""
    return {
        "kline_files": lake.partition_file(
            "curated", "klines", {"symbol": symbol, "interval": "1m", "date": day}
        ),
        "snapshot_files": lake.partition_file(
            "raw", "depth_snapshots", {"symbol": symbol, "date": day}
        ),
        "trade_files": lake.partition_file("raw", "agg_trades", {"symbol": symbol, "date": day}),
    }


def has_microstructure_inputs(lake: Lake, symbol: str, day: dt.date) -> bool:
    return all(path.is_file() for path in microstructure_inputs(lake, symbol, day).values())


def build_microstructure(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    day: dt.date,
    settings: MicrostructureSettings = MicrostructureSettings(),
) -> pl.DataFrame:
    """Write ``features/microstructure`` for a symbol-day from its 1m klines, book and trades."""
    inputs = microstructure_inputs(lake, symbol, day)
    missing = [str(path) for path in inputs.values() if not path.is_file()]
    if missing:
        raise InvalidRequestError(
            f"microstructure for {symbol} on {day} needs 1m curated klines, depth snapshots and "
            f"agg trades; missing {', '.join(missing)}"
        )
    verify_files(list(inputs.values()))
    params = {name: [str(path)] for name, path in inputs.items()} | {"top_n": settings.top_n}
    features = run_sql(con, "features/microstructure", params).pl()
    lake.write_partition("features", "microstructure", {"symbol": symbol, "date": day}, features)
    return features


@dataclass(frozen=True)
class IndicatorDay:
    interval: str
    day: dt.date
    rows: int
    usable: int  # indicators non-NULL on every row of the day
    unusable: tuple[str, ...]  # still in warm-up (not enough history landed)


def build_indicators(
    lake: Lake, con: duckdb.DuckDBPyConnection, symbol: str, days: Sequence[dt.date]
) -> list[IndicatorDay]:
    """Write ``features/indicators`` (and ``features/indicator_availability``) for each curated
    interval of each of a symbol's ``days``. Consecutive days are computed in one query over the
    whole stretch plus ``warmup_days(interval)`` earlier days of warm-up, then written day by
    day: equal to computing each day alone (indicators are partition-exact), at a fraction of
    the cost. Days without curated klines at an interval are skipped."""
    built = []
    for interval in CURATED_INTERVALS:
        warmup = warmup_days(interval)
        for stretch in landed_stretches(lake, symbol, interval, days):
            files = span_files(lake, symbol, interval, stretch[0], stretch[-1], warmup)
            start, end = to_utc(stretch[0]), to_utc(stretch[-1]) + dt.timedelta(days=1)
            frame = compute_indicators(con, files, interval, start, end)
            for day, rows in split_by_date(frame, stretch).items():
                built.append(write_indicator_day(lake, symbol, interval, day, rows))
    return built


def write_indicator_day(
    lake: Lake, symbol: str, interval: str, day: dt.date, frame: pl.DataFrame
) -> IndicatorDay:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    lake.write_partition("features", "indicators", keys, frame)
    availability = feature_availability(frame)
    lake.write_partition("features", "indicator_availability", keys, availability)
    unusable = tuple(availability.filter(~pl.col("usable"))["indicator"].to_list())
    return IndicatorDay(
        interval, day, frame.height, availability.height - len(unusable), unusable
    )


def split_by_date(frame: pl.DataFrame, days: Sequence[dt.date]) -> dict[dt.date, pl.DataFrame]:
    """Rows of each of ``days`` by the UTC date of ``open_time`` (a day without rows: empty)."""
    dates = frame["open_time"].dt.date()
    return {day: frame.filter(dates == day) for day in days}


def landed_stretches(
    lake: Lake, symbol: str, interval: str, days: Sequence[dt.date]
) -> list[list[dt.date]]:
    """``days`` that have curated klines at ``interval``, cut into runs of consecutive days."""
    return consecutive_stretches(
        d for d in days if curated_file(lake, symbol, interval, d).is_file()
    )


def span_files(
    lake: Lake,
    symbol: str,
    interval: str,
    first: dt.date,
    last: dt.date,
    days_before: int = 0,
    days_after: int = 0,
) -> list[str]:
    """Curated klines files from ``days_before`` days before ``first`` to ``days_after`` days
    after ``last`` that exist, oldest first."""
    span = (last - first).days + days_before + days_after
    days = (first - dt.timedelta(days=days_before - n) for n in range(span + 1))
    files = (curated_file(lake, symbol, interval, d) for d in days)
    return verify_files([str(f) for f in files if f.is_file()])


def curated_file(lake: Lake, symbol: str, interval: str, day: dt.date) -> Path:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    return lake.partition_file("curated", "klines", keys)
