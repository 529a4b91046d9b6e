"""The days the simulator tests simulate."""

from __future__ import annotations

import datetime as dt

from dagster_project.core.klines import UTC, TimeRange

DAY1 = dt.datetime(2024, 3, 4, tzinfo=UTC)  # a Monday; three_days_1m covers Monday to Wednesday
TRADE_DAY = dt.datetime(2024, 3, 5, tzinfo=UTC)  # the day of the trade and book fixtures


def days(start: dt.datetime, n: int) -> TimeRange:
    return TimeRange(start, start + dt.timedelta(days=n))
