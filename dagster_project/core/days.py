"""UTC-day arithmetic: the lake is partitioned by UTC day, and every layer cuts time into days.

Ranges of days, the days a time range touches, runs of consecutive days (what one query
computes at once) and the rows of a frame by UTC day (what one partition holds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TimeRange

_DAY_KEY = "__day"


def day_range(first: dt.date | str, last: dt.date | str) -> list[dt.date]:
    """The UTC days from ``first`` to ``last`` (dates or ``YYYY-MM-DD``), both included."""
    start, end = (d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in (first, last))
    if end < start:
        raise InvalidRequestError(f"day range {start} .. {end} is empty; expected start <= end")
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def whole_days(time_range: TimeRange) -> list[dt.date]:
    """The UTC days a range touches (partitions are whole days, so a range widens to them)."""
    last = time_range.end - dt.timedelta(microseconds=1)
    return day_range(time_range.start.date(), last.date())


def consecutive_stretches(days: Iterable[dt.date]) -> list[list[dt.date]]:
    """``days`` (deduplicated, sorted) cut into runs of consecutive days."""
    stretches: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if stretches and stretches[-1][-1] == day - dt.timedelta(days=1):
            stretches[-1].append(day)
        else:
            stretches.append([day])
    return stretches


def rows_by_day(
    frame: pl.DataFrame, time_column: str, days: Sequence[dt.date] | None = None
) -> dict[dt.date, pl.DataFrame]:
    """The rows of ``frame`` by the UTC day of ``time_column`` (a day holds its 00:00 inclusive
    to the next 00:00 exclusive).

    Without ``days``: the days that have rows, in the order they first appear. With ``days``:
    exactly those days, in that order, an empty frame for a day without rows; rows on other days
    are left out (callers that must refuse them compare the keys of the first form).
    """
    if days is None:
        parts = frame.with_columns(pl.col(time_column).dt.date().alias(_DAY_KEY)).partition_by(
            _DAY_KEY, as_dict=True, include_key=False
        )
        return {key[0]: rows for key, rows in parts.items()}
    day_of = frame[time_column].dt.date()
    return {day: frame.filter(day_of == day) for day in days}
