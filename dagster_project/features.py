"""Feature tables built in SQL from the curated and raw layers, one symbol-day at a time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from dagster_project.errors import InvalidRequestError
from dagster_project.indicators import compute_indicators, feature_availability, warmup_days
from dagster_project.klines import CURATED_INTERVALS, to_utc
from dagster_project.lake import Lake
from dagster_project.sql import run_sql

# Earlier days of curated klines an indicators day reads, at its longest-warm-up interval.
INDICATOR_HISTORY_DAYS = max(warmup_days(interval) for interval in CURATED_INTERVALS)


@dataclass(frozen=True)
class MicrostructureSettings:
    top_n: int = 5  # levels per side summed by imbalance_top_n


def build_microstructure(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    day: dt.date,
    settings: MicrostructureSettings = MicrostructureSettings(),
) -> pl.DataFrame:
    """Write ``features/microstructure`` for a symbol-day from its 1m klines, book and trades."""
    inputs = {
        "kline_files": lake.partition_file(
            "curated", "klines", {"symbol": symbol, "interval": "1m", "date": day}
        ),
        "snapshot_files": lake.partition_file(
            "raw", "depth_snapshots", {"symbol": symbol, "date": day}
        ),
        "trade_files": lake.partition_file("raw", "agg_trades", {"symbol": symbol, "date": day}),
    }
    missing = [str(path) for path in inputs.values() if not path.is_file()]
    if missing:
        raise InvalidRequestError(
            f"microstructure for {symbol} on {day} needs 1m curated klines, depth snapshots and "
            f"agg trades; missing {', '.join(missing)}"
        )
    params = {name: [str(path)] for name, path in inputs.items()} | {"top_n": settings.top_n}
    features = run_sql(con, "features/microstructure", params).pl()
    lake.write_partition("features", "microstructure", {"symbol": symbol, "date": day}, features)
    return features


@dataclass(frozen=True)
class IndicatorDay:
    interval: str
    rows: int
    usable: int  # indicators non-NULL on every row of the day
    unusable: tuple[str, ...]  # still in warm-up (not enough history landed)


def build_indicators(
    lake: Lake, con: duckdb.DuckDBPyConnection, symbol: str, day: dt.date
) -> list[IndicatorDay]:
    """Write ``features/indicators`` (and ``features/indicator_availability``) for each curated
    interval of a symbol-day, reading ``warmup_days(interval)`` earlier days for the warm-up."""
    built = []
    for interval in CURATED_INTERVALS:
        files = history_files(lake, symbol, interval, day, warmup_days(interval))
        if not files:
            continue
        start = to_utc(day)
        frame = compute_indicators(con, files, start, start + dt.timedelta(days=1))
        keys = {"symbol": symbol, "interval": interval, "date": day}
        lake.write_partition("features", "indicators", keys, frame)
        availability = feature_availability(frame)
        lake.write_partition("features", "indicator_availability", keys, availability)
        unusable = tuple(availability.filter(~pl.col("usable"))["indicator"].to_list())
        built.append(
            IndicatorDay(interval, frame.height, availability.height - len(unusable), unusable)
        )
    return built


def history_files(
    lake: Lake, symbol: str, interval: str, day: dt.date, days_before: int
) -> list[str]:
    """Curated klines files of ``day`` and up to ``days_before`` earlier days that exist; none
    when ``day`` itself has none."""

    def file(d: dt.date):
        keys = {"symbol": symbol, "interval": interval, "date": d}
        return lake.partition_file("curated", "klines", keys)

    if not file(day).is_file():
        return []
    days = [day - dt.timedelta(days=n) for n in range(days_before, -1, -1)]
    return [str(file(d)) for d in days if file(d).is_file()]
