"""Ingest layer: land raw klines, aggregate trades and book snapshots per UTC day and symbol.

Each asset lands every day of its run (one day, or a backfill's range of days per symbol). Trades
and books come from the source when it has them (the simulator, REST/Vision trades, recorded
streams); for a source without them the asset is simply not materialized, and says why in its log.
"""

import datetime as dt
from collections.abc import Callable, Iterator

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result, check_specs
from dagster_project.core.checks import (
    AGG_TRADE_CHECKS,
    DEPTH_SNAPSHOT_CHECKS,
    DEPTH_UPDATE_CHECKS,
    KLINE_CHECKS,
    CheckOutcome,
    agg_trade_checks,
    depth_snapshot_checks,
    depth_update_checks,
    kline_checks,
    merge_by_name,
)
from dagster_project.core.klines import TimeRange
from dagster_project.core.lake import Lake
from dagster_project.ingest.landing import LandedPartition, land_days, land_symbol_day
from dagster_project.ingest.sources import book_source, recording_source, trades_source
from dagster_project.partitions import days_by_symbol, range_asset, run_partition_keys
from dagster_project.resources import LakeResource, MarketSourceResource

RAW_KLINES = dg.AssetKey(["raw", "klines"])
RAW_AGG_TRADES = dg.AssetKey(["raw", "agg_trades"])
RAW_DEPTH_SNAPSHOTS = dg.AssetKey(["raw", "depth_snapshots"])
RAW_DEPTH_UPDATES = dg.AssetKey(["raw", "depth_updates"])


def raw_table_asset(
    key: dg.AssetKey, checks: tuple[str, ...], description: str, optional: bool = False
):
    """An ingest asset of one raw lake table, partitioned by day × symbol, with its checks;
    ``optional``: not materialized (nor checked) when the source has no such data."""
    spec = dg.AssetSpec(
        key,
        group_name="ingest",
        kinds={"parquet", "binance"},
        description=description,
        skippable=optional,
    )
    # a multi-asset, because only a subsettable one may skip its checks' outputs
    return range_asset(
        dg.multi_asset, specs=[spec], check_specs=check_specs(key, checks), can_subset=optional
    )


@raw_table_asset(
    RAW_KLINES,
    KLINE_CHECKS,
    "Klines exactly as the source gave them, one Parquet partition per symbol and "
    "UTC day (lake/raw/klines). Source: the market_source resource (simulator by default).",
)
def raw_klines(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> dg.MaterializeResult:
    the_lake = lake.get()
    source = market_source.build(the_lake)
    landed: list[LandedPartition] = []
    for symbol, days in days_by_symbol(run_partition_keys(context)).items():
        landed += land_days(the_lake, source, symbol, market_source.interval, days)
    checked = [
        (f"{p.symbol} {p.date}", kline_checks(pl.read_parquet(p.path), p.date)) for p in landed
    ]
    context.log.info(f"landed {sum(p.rows for p in landed)} rows in {len(landed)} partitions")
    return dg.MaterializeResult(
        metadata={"source": source.name, "interval": market_source.interval}
        | landed_metadata(landed),
        check_results=[check_result(RAW_KLINES, o) for o in merge_by_name(checked)],
    )


@raw_table_asset(
    RAW_AGG_TRADES,
    AGG_TRADE_CHECKS,
    "Aggregate trades (Binance aggTrades) per symbol and UTC day (lake/raw/agg_trades): "
    "simulator, REST /api/v3/aggTrades or Binance Vision archives; not materialized for a source "
    "without trades (freqtrade).",
    optional=True,
)
def raw_agg_trades(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> Iterator[dg.MaterializeResult]:
    the_lake = lake.get()
    source = trades_source(market_source.build(the_lake))
    if source is None:
        kind = market_source.settings().kind
        context.log.info(f"source {kind!r} has no trades: raw/agg_trades is absent")
        return

    def fetch(symbol: str, day: dt.date) -> pl.DataFrame:
        return source.fetch_agg_trades(symbol, TimeRange.for_day(day))

    yield from land_and_check(
        context, the_lake, RAW_AGG_TRADES, fetch, agg_trade_checks, {"source": source.name}
    )


@raw_table_asset(
    RAW_DEPTH_SNAPSHOTS,
    DEPTH_SNAPSHOT_CHECKS,
    "The top of the order book sampled at a fixed cadence (default 1 s, 50 levels) "
    "per symbol and UTC day (lake/raw/depth_snapshots), from the simulator or replayed from "
    "recorded streams (market_source.depth_recordings). Binance publishes no depth history: for a "
    "real source without recordings the asset is not materialized (live books land through "
    "`candlelake collect-depth`).",
    optional=True,
)
def raw_depth_snapshots(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> Iterator[dg.MaterializeResult]:
    the_lake = lake.get()
    cadence_s, levels = market_source.depth_cadence_s, market_source.depth_levels
    books = book_source(market_source.settings(), market_source.build(the_lake))
    if books is None:
        kind = market_source.settings().kind
        context.log.info(
            f"source {kind!r} has no order-book history and no recordings are configured: "
            "raw/depth_snapshots is absent"
        )
        return

    def fetch(symbol: str, day: dt.date) -> pl.DataFrame:
        return books.fetch_depth_snapshots(symbol, TimeRange.for_day(day), cadence_s, levels)

    yield from land_and_check(
        context,
        the_lake,
        RAW_DEPTH_SNAPSHOTS,
        fetch,
        lambda frame, day: depth_snapshot_checks(frame, day, cadence_s),
        {"source": books.name},
        skip_empty=books.name != "simulator",
    )


@raw_table_asset(
    RAW_DEPTH_UPDATES,
    DEPTH_UPDATE_CHECKS,
    "Every diff-depth event applied to the book, for exact replay "
    "(lake/raw/depth_updates). Only real streams have them: replayed from "
    "market_source.depth_recordings here, or landed live by `candlelake collect-depth`; "
    "not materialized without recordings.",
    optional=True,
)
def raw_depth_updates(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> Iterator[dg.MaterializeResult]:
    recordings = recording_source(market_source.settings())
    if recordings is None:
        context.log.info("no market_source.depth_recordings: raw/depth_updates is absent")
        return
    cadence_s, levels = market_source.depth_cadence_s, market_source.depth_levels

    def fetch(symbol: str, day: dt.date) -> pl.DataFrame:
        return recordings.replay_day(symbol, TimeRange.for_day(day), cadence_s, levels).updates

    yield from land_and_check(
        context,
        lake.get(),
        RAW_DEPTH_UPDATES,
        fetch,
        lambda frame, day: depth_update_checks(frame, day, recordings.market),
        {"source": recordings.name},
        skip_empty=True,
    )


def land_and_check(
    context: dg.AssetExecutionContext,
    lake: Lake,
    asset: dg.AssetKey,
    fetch: Callable[[str, dt.date], pl.DataFrame],
    checks: Callable[[pl.DataFrame, dt.date], list[CheckOutcome]],
    metadata: dict[str, object],
    skip_empty: bool = False,
) -> Iterator[dg.MaterializeResult]:
    """Replace each symbol-day partition of a ``raw/<table>`` asset in the run with what ``fetch``
    returns, then check what landed. ``skip_empty``: a day without rows is absent (a recording
    that does not cover it), not landed empty; no day landed, no materialization."""
    table = asset.path[-1]
    landed, checked = [], []
    for symbol, days in days_by_symbol(run_partition_keys(context)).items():
        for day in days:
            frame = fetch(symbol, day)
            if skip_empty and frame.is_empty():
                context.log.info(f"no {table} for {symbol} on {day}: absent")
                continue
            partition = land_symbol_day(lake, table, symbol, day, frame)
            rows = lake.read_partition("raw", table, {"symbol": symbol, "date": day})
            landed.append(partition)
            checked.append((f"{symbol} {day}", checks(rows, day)))
    if not landed:
        return
    context.log.info(f"landed {sum(p.rows for p in landed)} {table} rows")
    yield dg.MaterializeResult(
        asset_key=asset,
        metadata=metadata | landed_metadata(landed),
        check_results=[check_result(asset, outcome) for outcome in merge_by_name(checked)],
    )


def landed_metadata(landed: list[LandedPartition]) -> dict[str, object]:
    """Rows and partitions landed; the path when the run landed one partition."""
    metadata: dict[str, object] = {"rows": sum(p.rows for p in landed), "partitions": len(landed)}
    if len(landed) == 1:
        metadata["path"] = dg.MetadataValue.path(str(landed[0].path))
    return metadata

