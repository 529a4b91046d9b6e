"""The klines data contract shared by every source, the lake and the SQL.

Every source returns a polars DataFrame with exactly ``RAW_KLINE_COLUMNS`` (``ingested_at`` is added
when the rows are landed). Symbol, interval and date are partition keys and live in the path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from dagster_project.core.errors import (
    InvalidRequestError,
    SourceDataError,
    UnsupportedIntervalError,
)

UTC = dt.UTC
TIMESTAMP = pl.Datetime("us", "UTC")

# Binance kline intervals that fit inside one UTC day (3d, 1w and 1M do not: a daily partition
# could not hold a whole bar).
INTERVALS: dict[str, dt.timedelta] = {
    "1s": dt.timedelta(seconds=1),
    "1m": dt.timedelta(minutes=1),
    "3m": dt.timedelta(minutes=3),
    "5m": dt.timedelta(minutes=5),
    "15m": dt.timedelta(minutes=15),
    "30m": dt.timedelta(minutes=30),
    "1h": dt.timedelta(hours=1),
    "2h": dt.timedelta(hours=2),
    "4h": dt.timedelta(hours=4),
    "6h": dt.timedelta(hours=6),
    "8h": dt.timedelta(hours=8),
    "12h": dt.timedelta(hours=12),
    "1d": dt.timedelta(days=1),
}

# The intervals curated/klines holds: 1m as landed, the rest resampled from it in SQL.
CURATED_INTERVALS: tuple[str, ...] = ("1m", "5m", "15m", "1h")

RAW_KLINE_SCHEMA: dict[str, pl.DataType] = {
    "open_time": TIMESTAMP,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "close_time": TIMESTAMP,
    "quote_volume": pl.Float64(),
    "trades": pl.Int64(),
    "taker_buy_base_volume": pl.Float64(),
    "taker_buy_quote_volume": pl.Float64(),
    "source": pl.String(),
}
RAW_KLINE_COLUMNS: tuple[str, ...] = tuple(RAW_KLINE_SCHEMA)
LANDED_KLINE_SCHEMA: dict[str, pl.DataType] = {**RAW_KLINE_SCHEMA, "ingested_at": TIMESTAMP}

SOURCES: tuple[str, ...] = ("binance_rest", "binance_vision", "freqtrade", "simulator")

# Binance timestamps are epoch milliseconds, except Binance Vision spot files from 2025-01-01 which
# are microseconds. Any epoch-ms value before the year 5138 is below this; any epoch-µs value after
# 1973 is above it.
_MICROSECOND_THRESHOLD = 10**14


def interval_length(interval: str) -> dt.timedelta:
    """The length of a Binance interval string such as ``"1m"``; raises for anything else."""
    try:
        return INTERVALS[interval]
    except KeyError:
        raise UnsupportedIntervalError(
            f"unsupported kline interval {interval!r}; expected one of {', '.join(INTERVALS)}"
        ) from None


def interval_us(interval: str) -> int:
    """The length of ``interval`` in microseconds (the ``bar_us`` parameter of the queries)."""
    return interval_length(interval) // dt.timedelta(microseconds=1)


def to_utc(value: dt.datetime | dt.date | str) -> dt.datetime:
    """A timezone-aware UTC datetime from a datetime, a date (midnight) or an ISO string."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequestError(
                f"cannot parse time {value!r}; expected ISO format like 2024-01-31 or "
                "2024-01-31T12:00:00Z"
            ) from None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)


@dataclass(frozen=True)
class TimeRange:
    """A half-open UTC range ``[start, end)`` checked to be non-empty and not in the future."""

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def checked(
        cls,
        start: dt.datetime | dt.date | str,
        end: dt.datetime | dt.date | str,
        now: dt.datetime | None = None,
    ) -> TimeRange:
        start_utc, end_utc = to_utc(start), to_utc(end)
        now = now or dt.datetime.now(UTC)
        if start_utc >= end_utc:
            raise InvalidRequestError(
                f"start {start_utc.isoformat()} is not before end {end_utc.isoformat()}; "
                "expected start < end"
            )
        if start_utc > now:
            raise InvalidRequestError(
                f"start {start_utc.isoformat()} is in the future (now is {now.isoformat()}); "
                "klines exist only for past times"
            )
        return cls(start_utc, min(end_utc, now))

    @classmethod
    def for_day(cls, day: dt.date | str, now: dt.datetime | None = None) -> TimeRange:
        return cls.for_days(day, day, now)

    @classmethod
    def for_days(
        cls, first: dt.date | str, last: dt.date | str, now: dt.datetime | None = None
    ) -> TimeRange:
        """The whole UTC days ``first`` through ``last``: [first 00:00, the day after last)."""
        start = to_utc(first).replace(hour=0, minute=0, second=0, microsecond=0)
        end = to_utc(last).replace(hour=0, minute=0, second=0, microsecond=0)
        return cls.checked(start, end + dt.timedelta(days=1), now)

    @property
    def start_ms(self) -> int:
        return to_epoch_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_epoch_ms(self.end)


def to_epoch_ms(value: dt.datetime) -> int:
    return int(to_utc(value).timestamp() * 1000)


def normalise_epoch_to_us(values: pl.Expr) -> pl.Expr:
    """Epoch integers in ms or µs (decided per value) as µs."""
    return pl.when(values >= _MICROSECOND_THRESHOLD).then(values).otherwise(values * 1000)


def klines_from_binance_rows(rows: Sequence[Sequence], source: str) -> pl.DataFrame:
    """Binance's 12-field kline arrays (REST JSON or Vision CSV rows) as the contract.

    The 12th field ("ignore") is dropped. Times may be ms or µs.
    """
    if not rows:
        return empty_klines()
    bad = next((i for i, row in enumerate(rows) if len(row) < 11), None)
    if bad is not None:
        raise SourceDataError(
            f"kline row {bad} has {len(rows[bad])} fields; expected 12 (Binance kline array): "
            f"{list(rows[bad])!r}"
        )
    columns = list(zip(*(row[:11] for row in rows), strict=True))
    try:
        frame = pl.DataFrame(
            {
                "open_time": pl.Series(columns[0]).cast(pl.Int64),
                "open": pl.Series(columns[1]).cast(pl.Float64),
                "high": pl.Series(columns[2]).cast(pl.Float64),
                "low": pl.Series(columns[3]).cast(pl.Float64),
                "close": pl.Series(columns[4]).cast(pl.Float64),
                "volume": pl.Series(columns[5]).cast(pl.Float64),
                "close_time": pl.Series(columns[6]).cast(pl.Int64),
                "quote_volume": pl.Series(columns[7]).cast(pl.Float64),
                "trades": pl.Series(columns[8]).cast(pl.Int64),
                "taker_buy_base_volume": pl.Series(columns[9]).cast(pl.Float64),
                "taker_buy_quote_volume": pl.Series(columns[10]).cast(pl.Float64),
            }
        )
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise SourceDataError(f"kline rows hold a value that is not a number: {exc}") from exc
    return frame.with_columns(
        normalise_epoch_to_us(pl.col("open_time")).cast(TIMESTAMP),
        normalise_epoch_to_us(pl.col("close_time")).cast(TIMESTAMP),
        pl.lit(source, pl.String).alias("source"),
    ).select(RAW_KLINE_COLUMNS)


def empty_klines() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_KLINE_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly the contract's columns, order and types (extra columns dropped)."""
    missing = [c for c in RAW_KLINE_COLUMNS if c not in frame.columns]
    if missing:
        raise SourceDataError(f"klines frame lacks columns {missing}; has {frame.columns}")
    return frame.select(pl.col(name).cast(dtype) for name, dtype in RAW_KLINE_SCHEMA.items())
