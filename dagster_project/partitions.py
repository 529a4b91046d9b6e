"""Every partitions definition of the project, defined once.

Assets are partitioned by UTC day × symbol. Symbols are a dynamic dimension: adding one
(`candlelake` CLI, the main job, or the Dagster UI) needs no code change.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable, Sequence

import dagster as dg

from dagster_project.core.errors import InvalidRequestError

# Binance spot opened on 2017-07-14; no kline is older.
FIRST_DAY = "2017-07-14"
SYMBOLS_PARTITION_NAME = "symbols"

days = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
symbols = dg.DynamicPartitionsDefinition(name=SYMBOLS_PARTITION_NAME)
day_symbol = dg.MultiPartitionsDefinition({"date": days, "symbol": symbols})


# Every partitioned asset materializes a range of days in one run (per symbol: a backfill of a
# year of one symbol is one run, of six symbols six runs), its SQL working over the whole range.
# One run per symbol also orders the days: a day's warm-up history is written before it is read.
RANGE_POLICY = dg.BackfillPolicy.single_run()


def range_asset(decorator: Callable[..., Callable], **kwargs) -> Callable:
    """``decorator(**kwargs)`` (``dg.asset`` or ``dg.multi_asset``) partitioned by day × symbol
    with RANGE_POLICY; Dagster 1.13 marks backfill_policy beta, the pin guards against drift."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return decorator(partitions_def=day_symbol, backfill_policy=RANGE_POLICY, **kwargs)


def day_symbol_key(day: dt.date | str, symbol: str) -> dg.MultiPartitionKey:
    text = day.isoformat() if isinstance(day, dt.date) else day
    return dg.MultiPartitionKey({"date": text, "symbol": symbol})


def day_and_symbol(partition_key: str | dg.MultiPartitionKey) -> tuple[dt.date, str]:
    """The (UTC day, symbol) of a date × symbol partition key."""
    if not isinstance(partition_key, dg.MultiPartitionKey):
        partition_key = day_symbol.get_partition_key_from_str(partition_key)
    keys = partition_key.keys_by_dimension
    return dt.date.fromisoformat(keys["date"]), keys["symbol"]


# The tags Dagster gives a run of a range of partitions (a backfill, `candlelake build`).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The date × symbol keys the run materializes; refuses a run whose range tags cover more.

    Dagster 1.13's job backfills (a job's Partitions tab) give a range run the first
    partition's dimension tags as well, and Dagster then materializes (and records) that one
    partition only while the backfill counts the whole range as done. Such a run fails here,
    before anything is written, rather than leave days silently missing."""
    keys = list(context.partition_keys)
    tags = context.run.tags
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        key_range = dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        launched = day_symbol.get_partition_keys_in_range(key_range, context.instance)
        if len(launched) != len(keys):
            raise InvalidRequestError(
                f"this run was launched for {key_range.start}..{key_range.end} "
                f"({len(launched)} partitions) but Dagster gives it {len(keys)} ({keys[0]}): "
                "a job backfill from the Partitions tab (a Dagster 1.13 bug with date x symbol "
                "ranges); backfill from the asset graph's Materialize or `candlelake build`"
            )
    return keys


def days_by_symbol(partition_keys: Sequence[str]) -> dict[str, list[dt.date]]:
    """The UTC days of each symbol in a run's date × symbol partition keys (one key or a range),
    each list sorted."""
    days: dict[str, list[dt.date]] = {}
    for key in partition_keys:
        day, symbol = day_and_symbol(key)
        days.setdefault(symbol, []).append(day)
    return {symbol: sorted(d) for symbol, d in days.items()}


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
