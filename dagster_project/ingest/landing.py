"""Land klines from any source into ``raw/klines``, one atomic partition per symbol, interval, day.

Rows are fetched completely and checked before anything is written, so a source that fails mid-way
or answers with bad rows leaves the lake exactly as it was. Klines pass the raw/klines asset's data
checks (``checks.kline_checks``) before they land, and a landed day never shrinks unless the caller
asks to replace it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl
import pyarrow.parquet as pq

from dagster_project.core.checks import CheckOutcome, kline_checks
from dagster_project.core.days import rows_by_day
from dagster_project.core.errors import (
    DataCheckError,
    InvalidRequestError,
    ShrinkRefusedError,
    SourceDataError,
)
from dagster_project.core.klines import TIMESTAMP, TimeRange, conform, interval_length
from dagster_project.core.lake import Lake
from dagster_project.core.schemas import RAW_TABLES, conform_to

log = logging.getLogger(__name__)

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,30}$")


class KlineSource(Protocol):
    """Anything that returns contract klines for a symbol, interval and time range."""

    name: str

    def check_symbols(self, symbols: Sequence[str]) -> None:
        """Raise ``InvalidRequestError`` naming every symbol the source does not serve."""

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
    lake: Lake,
    source: KlineSource,
    symbol: str,
    interval: str,
    day: dt.date,
    replace: bool = False,
) -> LandedPartition:
    """Fetch one UTC day from ``source`` and replace its raw partition (empty if no rows)."""
    return land_days(lake, source, symbol, interval, [day], replace)[0]


def land_days(
    lake: Lake,
    source: KlineSource,
    symbol: str,
    interval: str,
    days: list[dt.date],
    replace: bool = False,
) -> list[LandedPartition]:
    """Fetch ``days`` (sorted) from ``source`` in one request range and replace their raw
    partitions (a day without rows lands empty). REST pages and Vision monthly archives serve a
    range far faster than day by day. Every day is checked before any lands (``land_klines``)."""
    check_symbol(symbol)
    interval_length(interval)
    span = TimeRange.for_days(days[0], days[-1])
    frame = source.fetch_klines(symbol, interval, span)
    # rows of days between the wanted ones are dropped; rows outside the span stay, so that
    # land_klines refuses a source that answers outside what was asked
    skipped = pl.col("open_time").dt.date().is_between(days[0], days[-1]) & ~pl.col(
        "open_time"
    ).dt.date().is_in(days)
    return land_klines(
        lake, symbol, interval, frame.filter(~skipped), days, replace=replace, origin=source.name
    )


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
    replace: bool = False,
    origin: str | None = None,
) -> list[LandedPartition]:
    """Write ``frame`` into one raw partition per UTC day of ``open_time``, once every day has
    passed ``check_klines`` (nothing is written when one fails).

    ``days`` names days to write even when they hold no rows (an empty partition records that the
    source had nothing); rows outside ``days`` are an error when it is given.
    """
    by_day = check_klines(lake, symbol, interval, frame, days, ingested_at, replace, origin)
    return write_days(lake, "klines", {"symbol": symbol, "interval": interval}, by_day)


def check_klines(
    lake: Lake,
    symbol: str,
    interval: str,
    frame: pl.DataFrame,
    days: list[dt.date] | None = None,
    ingested_at: dt.datetime | None = None,
    replace: bool = False,
    origin: str | None = None,
    now: dt.datetime | None = None,
) -> dict[dt.date, pl.DataFrame]:
    """The rows ``land_klines`` would write, by day, after the checks that must pass first.

    Each day must pass the raw/klines asset's data checks (``checks.kline_checks``), else
    :class:`DataCheckError`; and unless ``replace``, it must hold at least as many rows as are
    landed for it already, else :class:`ShrinkRefusedError`. Both name ``origin`` (a file, a
    source; by default the rows' ``source``), the day and what failed. Nothing is written here.
    """
    check_symbol(symbol)
    interval_length(interval)
    frame = with_ingested_at(conform(frame), ingested_at)
    origin = origin or source_names(frame)
    by_day = day_partitions(frame, "open_time", days, f"{symbol} klines")
    now = now or dt.datetime.now(dt.UTC)
    keys = {"symbol": symbol, "interval": interval}
    for day, rows in by_day.items():
        refuse_failed_checks(rows, day, now, f"{origin}: {symbol} {interval} {day}")
        if not replace:
            refuse_shrink(lake, keys, day, rows.height, origin)
    return by_day


def refuse_failed_checks(rows: pl.DataFrame, day: dt.date, now: dt.datetime, what: str) -> None:
    failed = [o for o in kline_checks(rows, day, now) if not o.passed and not o.warn_only]
    if failed:
        raise DataCheckError(
            f"{what} fails data check {', '.join(o.name for o in failed)}: "
            f"{'; '.join(describe_failure(o) for o in failed)}; refused, nothing of it was landed"
        )


def describe_failure(outcome: CheckOutcome) -> str:
    details = ", ".join(f"{key}={value}" for key, value in outcome.metadata.items())
    return f"expected {outcome.description} ({details})"


def refuse_shrink(lake: Lake, keys: dict[str, str], day: dt.date, rows: int, origin: str) -> None:
    landed = landed_rows(lake, "klines", {**keys, "date": day})
    if rows < landed:
        raise ShrinkRefusedError(
            f"{origin}: {' '.join(keys.values())} {day} has {rows} rows but {landed} are landed; "
            "refused to shrink a landed day (replace it on purpose with --replace, or "
            "replace=True); nothing was landed"
        )


def landed_rows(lake: Lake, table: str, keys: dict[str, object]) -> int:
    """Rows in a raw partition now (0 when it does not exist), from the Parquet footers."""
    files = lake.partition_files("raw", table, keys)
    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def source_names(frame: pl.DataFrame) -> str:
    names = sorted(frame["source"].drop_nulls().unique().to_list())
    return ",".join(names) or "source"


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
    by_day = day_partitions(frame, time_column, days, f"{symbol} {table}")
    return write_days(lake, table, keys, by_day)


def day_partitions(
    frame: pl.DataFrame, time_column: str, days: list[dt.date] | None, what: str
) -> dict[dt.date, pl.DataFrame]:
    """``frame`` split by UTC day of ``time_column``, in day order; with ``days``, exactly those
    days (empty frames for days without rows), and rows on any other day are an error."""
    frame = sorted_by_time(frame, time_column, what)
    by_day = rows_by_day(frame, time_column)
    if days is not None:
        stray = sorted(set(by_day) - set(days))
        if stray:
            raise SourceDataError(
                f"source returned {what} rows on {stray[0]} outside the requested days "
                f"{days[0]}..{days[-1]}"
            )
        by_day = {day: by_day.get(day, frame.clear()) for day in days}
    return dict(sorted(by_day.items()))


def write_days(
    lake: Lake, table: str, keys: dict[str, str], by_day: dict[dt.date, pl.DataFrame]
) -> list[LandedPartition]:
    landed = []
    for day, rows in by_day.items():
        path = lake.write_partition("raw", table, {**keys, "date": day}, rows)
        landed.append(LandedPartition(keys["symbol"], day, path, rows.height, keys.get("interval")))
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
