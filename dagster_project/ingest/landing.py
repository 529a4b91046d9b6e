"""Land klines from any source into ``raw/klines``, one atomic partition per symbol, interval, day.

Rows are fetched completely before anything is written, so a source that fails mid-way leaves the
lake exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from dagster_project.errors import InvalidRequestError, SourceDataError
from dagster_project.klines import TIMESTAMP, TimeRange, conform, interval_length, to_utc
from dagster_project.lake import Lake
from dagster_project.schemas import RAW_TABLES, conform_to

log = logging.getLogger(__name__)

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,30}$")


class KlineSource(Protocol):
    """Anything that returns contract klines for a symbol, interval and time range."""

    name: str

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame: ...


class TradeSource(Protocol):
    """A source that also returns aggregate trades (``schemas.AGG_TRADE_SCHEMA``)."""

    name: str

    def fetch_agg_trades(self, symbol: str, time_range: TimeRange) -> pl.DataFrame: ...


@dataclass(frozen=True)
class LandedPartition:
    symbol: str
    date: dt.date
    path: Path
    rows: int
    interval: str | None = None  # for tables partitioned by interval (klines)


def check_symbol(symbol: str) -> str:
    if not SYMBOL_PATTERN.match(symbol):
        raise InvalidRequestError(
            f"bad symbol {symbol!r}; expected an exchange symbol in upper case such as BTCUSDT"
        )
    return symbol


def land_day(
    lake: Lake, source: KlineSource, symbol: str, interval: str, day: dt.date
) -> LandedPartition:
    """Fetch one UTC day from ``source`` and replace its raw partition (empty if no rows)."""
    return land_days(lake, source, symbol, interval, [day])[0]


def land_days(
    lake: Lake, source: KlineSource, symbol: str, interval: str, days: list[dt.date]
) -> list[LandedPartition]:
    """Fetch ``days`` (sorted) from ``source`` in one request range and replace their raw
    partitions (a day without rows lands empty). REST pages and Vision monthly archives serve a
    range far faster than day by day."""
    check_symbol(symbol)
    interval_length(interval)
    span = TimeRange.checked(to_utc(days[0]), to_utc(days[-1]) + dt.timedelta(days=1))
    frame = source.fetch_klines(symbol, interval, span)
    # rows of days between the wanted ones are dropped; rows outside the span stay, so that
    # land_klines refuses a source that answers outside what was asked
    skipped = pl.col("open_time").dt.date().is_between(days[0], days[-1]) & ~pl.col(
        "open_time"
    ).dt.date().is_in(days)
    return land_klines(lake, symbol, interval, frame.filter(~skipped), days=days)


def land_symbol_day(
    lake: Lake, table: str, symbol: str, day: dt.date, frame: pl.DataFrame
) -> LandedPartition:
    """Replace one ``raw/<table>`` partition (a ``schemas.RAW_TABLES`` table) for a symbol-day."""
    schema, time_column = RAW_TABLES[table]
    return land_daily(
        lake, table, {"symbol": symbol}, conform_to(frame, schema, table), time_column, [day]
    )[0]


def land_klines(
    lake: Lake,
    symbol: str,
    interval: str,
    frame: pl.DataFrame,
    days: list[dt.date] | None = None,
    ingested_at: dt.datetime | None = None,
) -> list[LandedPartition]:
    """Write ``frame`` into one raw partition per UTC day of ``open_time``.

    ``days`` names days to write even when they hold no rows (an empty partition records that the
    source had nothing); rows outside ``days`` are an error when it is given.
    """
    check_symbol(symbol)
    interval_length(interval)
    frame = with_ingested_at(conform(frame), ingested_at)
    keys = {"symbol": symbol, "interval": interval}
    return land_daily(lake, "klines", keys, frame, "open_time", days)


def land_daily(
    lake: Lake,
    table: str,
    keys: dict[str, str],
    frame: pl.DataFrame,
    time_column: str,
    days: list[dt.date] | None = None,
) -> list[LandedPartition]:
    """Write ``frame`` into ``raw/<table>``, one partition per UTC day of ``time_column``.

    ``days`` names days to write even when they hold no rows (an empty partition records that the
    source had nothing); rows outside ``days`` are an error when it is given. Nothing is written
    unless every row is valid.
    """
    symbol = check_symbol(keys["symbol"])
    frame = sorted_by_time(frame, time_column, f"{symbol} {table}")
    by_day = split_by_day(frame, time_column)
    if days is not None:
        stray = sorted(set(by_day) - set(days))
        if stray:
            raise SourceDataError(
                f"source returned {symbol} {table} rows on {stray[0]} outside the requested days "
                f"{days[0]}..{days[-1]}"
            )
        by_day = {day: by_day.get(day, frame.clear()) for day in days}
    landed = []
    for day, rows in sorted(by_day.items()):
        path = lake.write_partition("raw", table, {**keys, "date": day}, rows)
        landed.append(LandedPartition(symbol, day, path, rows.height, keys.get("interval")))
        log.info("landed %s %s %s: %d rows", table, " ".join(keys.values()), day, rows.height)
    return landed


def sorted_by_time(frame: pl.DataFrame, time_column: str, what: str) -> pl.DataFrame:
    nulls = frame.select(pl.col(time_column).null_count()).item()
    if nulls:
        raise SourceDataError(f"{nulls} {what} rows have no {time_column}")
    return frame.sort(time_column, maintain_order=True)


def with_ingested_at(frame: pl.DataFrame, ingested_at: dt.datetime | None) -> pl.DataFrame:
    stamp = ingested_at or dt.datetime.now(dt.UTC)
    return frame.with_columns(pl.lit(stamp).cast(TIMESTAMP).alias("ingested_at"))


def split_by_day(frame: pl.DataFrame, time_column: str) -> dict[dt.date, pl.DataFrame]:
    if frame.is_empty():
        return {}
    parts = frame.with_columns(pl.col(time_column).dt.date().alias("_day")).partition_by(
        "_day", as_dict=True, include_key=False
    )
    return {key[0]: rows for key, rows in parts.items()}
