"""Labels and windows of a symbol's days, at every curated interval each day has.

A stretch of consecutive days is computed in one query (``build_dataset_days``, what a backfill's
range run calls) and written one partition per day; that equals computing each day alone
(``build_dataset_day``).

Labels look ahead (their horizons) and windows and the triple-barrier volatility look back, so a
day reads the curated klines of ``label_history_days(interval)`` days before it and
``label_lookahead_days(interval)`` days after it, where they exist (``label_kline_files``). With
those, a day computed alone equals the same day of the whole series. A label whose future is not
in the lake yet is absent, not guessed: re-materialize a day once the days after it have landed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from dagster_project.core.days import rows_by_day
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import CURATED_INTERVALS, interval_length, to_utc
from dagster_project.core.lake import Lake
from dagster_project.transform.curate import landed_stretches, span_files
from dagster_project.transform.labels import (
    build_labels,
    check_known_at,
    history_bars,
    lookahead_bars,
)
from dagster_project.transform.windows import build_windows, window_history_bars


@dataclass(frozen=True)
class DatasetDays:
    """What one interval's stretch of consecutive days got."""

    interval: str
    first: dt.date
    last: dt.date
    labels: int
    windows: int
    windows_excluded: int  # windows crossing a gap in the klines
    bad_known_at: int  # non-leaky labels not known after their decision time (must be 0)


def build_dataset_day(
    lake: Lake, con: duckdb.DuckDBPyConnection, symbol: str, day: dt.date
) -> list[DatasetDays]:
    """Write ``labels/labels`` and ``windows/windows`` for each curated interval of the day."""
    return build_dataset_days(lake, con, symbol, [day])


def build_dataset_days(
    lake: Lake, con: duckdb.DuckDBPyConnection, symbol: str, days: Sequence[dt.date]
) -> list[DatasetDays]:
    """Write ``labels/labels`` and ``windows/windows`` for each curated interval of each of a
    symbol's ``days``. Consecutive days are computed in one query each over the stretch and the
    klines around it, then written day by day: equal to each day alone. Days without curated
    klines at an interval are skipped."""
    built = []
    for interval in CURATED_INTERVALS:
        for stretch in landed_stretches(lake, symbol, interval, days):
            files = label_kline_files(lake, symbol, interval, stretch[0], stretch[-1])
            start, end = to_utc(stretch[0]), to_utc(stretch[-1]) + dt.timedelta(days=1)
            labels = build_labels(con, files, interval, start, end)
            windows, excluded = build_windows(con, files, interval, start, end, symbol=symbol)
            label_days = rows_by_day(labels, "decision_time", stretch)
            window_days = rows_by_day(windows, "decision_time", stretch)
            for day in stretch:
                keys = {"symbol": symbol, "interval": interval, "date": day}
                lake.write_partition("labels", "labels", keys, label_days[day])
                lake.write_partition("windows", "windows", keys, window_days[day])
            built.append(
                DatasetDays(
                    interval,
                    stretch[0],
                    stretch[-1],
                    labels.height,
                    windows.height,
                    excluded,
                    bad_known_at(labels),
                )
            )
    return built


def label_history_days(interval: str) -> int:
    """Whole UTC days before a decision day whose klines its labels and windows read: the
    ``labels.history_bars()`` candles (tb volatility warm-up, longest leaky window) or the
    ``windows.window_history_bars()`` (longest window), whichever is more; 1m: 1, 5m: 3,
    15m: 9, 1h: 36."""
    return _days_holding(max(history_bars(), window_history_bars()), interval)


def label_lookahead_days(interval: str) -> int:
    """Whole UTC days after a decision day whose klines its labels read: the
    ``labels.lookahead_bars()`` candles of the longest horizon; 1h: 2, the others 1."""
    return _days_holding(lookahead_bars(), interval)


def window_history_days(interval: str) -> int:
    """Whole UTC days before a decision day that hold the candles of its windows
    (``windows.window_history_bars()``); 1h: 2, the others 1. Readers of a day's window candles
    (``ml.window_data``) need these days."""
    return _days_holding(window_history_bars(), interval)


def candle_history_days(interval: str) -> int:
    """Whole UTC days before a decision day that hold its windows' candles and each candle's
    moving average over the window length (drawn on ``ohlc_bar`` images): 2w - 1 candles for
    the longest window w; 1h: 3, the others 1. A day's images read these days, so that a day
    alone and a range give the same averages."""
    return _days_holding(2 * window_history_bars() - 1, interval)


def _days_holding(bars: int, interval: str) -> int:
    """Whole UTC days that hold ``bars`` consecutive candles of ``interval`` beside a midnight."""
    return math.ceil(bars * interval_length(interval) / dt.timedelta(days=1))


# The most days any curated interval reads on each side (the Dagster partition mapping).
LABEL_HISTORY_DAYS = max(label_history_days(interval) for interval in CURATED_INTERVALS)
LABEL_LOOKAHEAD_DAYS = max(label_lookahead_days(interval) for interval in CURATED_INTERVALS)
CANDLE_HISTORY_DAYS = max(candle_history_days(interval) for interval in CURATED_INTERVALS)


def label_kline_files(
    lake: Lake, symbol: str, interval: str, first_day: dt.date, last_day: dt.date
) -> list[str]:
    """The curated klines files that labels and windows of decisions in days ``first_day`` ..
    ``last_day`` read, oldest first: from ``label_history_days`` before to
    ``label_lookahead_days`` after, those that exist. None when no day of the range has curated
    klines at this interval."""
    if last_day < first_day:
        raise InvalidRequestError(
            f"last_day {last_day} is before first_day {first_day}; expected a range of days"
        )

    if not span_files(lake, symbol, interval, first_day, last_day):
        return []
    before, after = label_history_days(interval), label_lookahead_days(interval)
    return span_files(lake, symbol, interval, first_day, last_day, before, after)


def bad_known_at(labels: pl.DataFrame) -> int:
    return check_known_at(labels).height
