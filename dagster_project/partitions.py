"""Every partitions definition of the project, defined once.

Assets are partitioned by UTC day × symbol. Symbols are a dynamic dimension: adding one
(`candlelake` CLI, the main job, or the Dagster UI) needs no code change.
"""

from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg

# Binance spot opened on 2017-07-14; no kline is older.
FIRST_DAY = "2017-07-14"
SYMBOLS_PARTITION_NAME = "symbols"

days = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
symbols = dg.DynamicPartitionsDefinition(name=SYMBOLS_PARTITION_NAME)
day_symbol = dg.MultiPartitionsDefinition({"date": days, "symbol": symbols})


def day_symbol_key(day: dt.date | str, symbol: str) -> dg.MultiPartitionKey:
    text = day.isoformat() if isinstance(day, dt.date) else day
    return dg.MultiPartitionKey({"date": text, "symbol": symbol})


def day_and_symbol(partition_key: str | dg.MultiPartitionKey) -> tuple[dt.date, str]:
    """The (UTC day, symbol) of a date × symbol partition key."""
    if not isinstance(partition_key, dg.MultiPartitionKey):
        partition_key = day_symbol.get_partition_key_from_str(partition_key)
    keys = partition_key.keys_by_dimension
    return dt.date.fromisoformat(keys["date"]), keys["symbol"]


def same_symbol_days(before: int, after: int = 0) -> dg.MultiPartitionMapping:
    """An asset's day × symbol partition reads its upstream's same symbol from ``before`` days
    earlier to ``after`` days later (warm-up history, label horizons past midnight), declared so
    that Dagster's lineage and backfills account for them. Days that do not exist (the future,
    before FIRST_DAY) are not required."""
    with warnings.catch_warnings():  # both are beta in Dagster 1.13; the pin guards against drift
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _same_symbol_days(before, after)


def _same_symbol_days(before: int, after: int) -> dg.MultiPartitionMapping:
    return dg.MultiPartitionMapping(
        {
            "date": dg.DimensionPartitionMapping(
                "date",
                dg.TimeWindowPartitionMapping(
                    start_offset=-before,
                    end_offset=after,
                    allow_nonexistent_upstream_partitions=True,
                ),
            ),
            "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        }
    )
