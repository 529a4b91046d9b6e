"""core/days.py: the one home of UTC-day arithmetic."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from dagster_project.core.days import consecutive_stretches, day_range, rows_by_day, whole_days
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TimeRange

D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


def test_day_range_includes_both_ends_and_refuses_an_inverted_range():
    assert day_range(D1, D3) == [D1, D2, D3]
    assert day_range("2024-03-01", "2024-03-01") == [D1]
    with pytest.raises(InvalidRequestError, match="2024-03-03 .. 2024-03-01 is empty"):
        day_range(D3, D1)


def test_whole_days_widens_a_range_to_the_days_it_touches():
    now = at(dt.date(2025, 1, 1), 0)
    assert whole_days(TimeRange.checked(at(D1, 23), at(D3, 0), now)) == [D1, D2]
    assert whole_days(TimeRange.checked(at(D1, 23), at(D3, 0, 1), now)) == [D1, D2, D3]


def test_consecutive_stretches_sorts_deduplicates_and_cuts_at_missing_days():
    assert consecutive_stretches([D3, D1, D1]) == [[D1], [D3]]
    assert consecutive_stretches([D2, D1, D3]) == [[D1, D2, D3]]
    assert consecutive_stretches([]) == []


def test_rows_by_day_cuts_at_utc_midnight():
    frame = pl.DataFrame({"t": [at(D1, 23, 59), at(D2, 0), at(D3, 12)], "v": [1, 2, 3]})
    by_day = rows_by_day(frame, "t")
    assert list(by_day) == [D1, D2, D3]
    assert [rows["v"].to_list() for rows in by_day.values()] == [[1], [2], [3]]
    assert rows_by_day(frame.clear(), "t") == {}


def test_rows_by_day_with_days_gives_exactly_those_days():
    frame = pl.DataFrame({"t": [at(D1, 5), at(D3, 5)], "v": [1, 3]})
    by_day = rows_by_day(frame, "t", [D2, D3])
    assert list(by_day) == [D2, D3]  # D1's row is left out, D2 is empty
    assert by_day[D2].is_empty() and by_day[D2].schema == frame.schema
    assert by_day[D3]["v"].to_list() == [3]
