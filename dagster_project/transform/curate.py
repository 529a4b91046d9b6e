"""Curate one symbol-day: deduplicate raw klines, resample them in SQL, and record the gaps.

The base is the finest interval landed in ``raw/klines`` for that day (1m from Binance or the
simulator; 15m or 1h for some freqtrade folders). Each curated interval that is a whole multiple of
the base is resampled from it by ``sql/curate/klines.sql``; ``sql/curate/kline_gaps.sql`` then lists
the bars that should exist and do not.

The curated layer's files, as the layers above read them (one day, a span of days around a
stretch, the stretches of days that have them), are found here too: ``curated_file``,
``span_files``, ``landed_stretches``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dagster_project.core.days import consecutive_stretches, day_range
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.integrity import verify_files
from dagster_project.core.klines import (
    CURATED_INTERVALS,
    INTERVALS,
    interval_length,
    interval_us,
    to_utc,
)
from dagster_project.core.lake import Lake, connect
from dagster_project.core.sql import run_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CuratedInterval:
    interval: str
    rows: int
    incomplete_bars: int
    gaps: int
    missing_bars: int


def curate_day(
    lake: Lake,
    symbol: str,
    day: dt.date,
    now: dt.datetime | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[CuratedInterval]:
    """Write ``curated/klines`` and ``curated/kline_gaps`` for every interval derivable that day."""
    base = finest_raw_interval(lake, symbol, day)
    con = con or connect()
    return [
        curate_interval(lake, con, symbol, day, base, interval, now)
        for interval in derivable_intervals(base)
    ]


def finest_raw_interval(lake: Lake, symbol: str, day: dt.date) -> str:
    for interval in INTERVALS:
        keys = {"symbol": symbol, "interval": interval, "date": day}
        if lake.partition_file("raw", "klines", keys).is_file():
            return interval
    raise InvalidRequestError(
        f"no raw klines landed for {symbol} on {day}; land them first (raw/klines asset or "
        "`candlelake ingest`)"
    )


def derivable_intervals(base: str) -> list[str]:
    """The base interval and every curated interval that is a whole multiple of it."""
    base_length = interval_length(base)
    coarser = [
        interval
        for interval in CURATED_INTERVALS
        if INTERVALS[interval] > base_length
        and INTERVALS[interval] % base_length == dt.timedelta(0)
    ]
    return [base, *coarser]


def curate_interval(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    day: dt.date,
    base: str,
    interval: str,
    now: dt.datetime | None,
) -> CuratedInterval:
    raw_file = lake.partition_file(
        "raw", "klines", {"symbol": symbol, "interval": base, "date": day}
    )
    verify_files([raw_file])
    keys = {"symbol": symbol, "interval": interval, "date": day}
    bar_us = interval_us(interval)
    klines = run_sql(
        con,
        "curate/klines",
        {"raw_files": [str(raw_file)], "base_us": interval_us(base), "bar_us": bar_us},
    ).to_arrow_table()
    klines_file = lake.write_partition("curated", "klines", keys, klines)

    grid_start, grid_end = expected_grid(day, interval, now)
    gaps = run_sql(
        con,
        "curate/kline_gaps",
        {
            "curated_file": str(klines_file),
            "bar_us": bar_us,
            "grid_start": grid_start,
            "grid_end": grid_end,
        },
    ).to_arrow_table()
    lake.write_partition("curated", "kline_gaps", keys, gaps)

    gap_frame = pl.from_arrow(gaps)
    result = CuratedInterval(
        interval=interval,
        rows=klines.num_rows,
        incomplete_bars=klines.num_rows - sum(klines.column("is_complete").to_pylist()),
        gaps=gap_frame.height,
        missing_bars=int(gap_frame["missing_bars"].sum()) if gap_frame.height else 0,
    )
    log.info("curated %s %s %s: %s", symbol, interval, day, result)
    return result


def expected_grid(
    day: dt.date, interval: str, now: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """``[00:00 of day, next 00:00)``, cut at the last bar that has closed when ``day`` is today."""
    start = to_utc(day)
    end = start + dt.timedelta(days=1)
    now = now or dt.datetime.now(dt.UTC)
    if now < end:
        length = INTERVALS[interval]
        closed_bars = (now - start) // length
        end = start + closed_bars * length
    return start, max(start, end)


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
    days = day_range(first - dt.timedelta(days=days_before), last + dt.timedelta(days=days_after))
    files = (curated_file(lake, symbol, interval, d) for d in days)
    return verify_files([str(f) for f in files if f.is_file()])


def curated_file(lake: Lake, symbol: str, interval: str, day: dt.date) -> Path:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    return lake.partition_file("curated", "klines", keys)
