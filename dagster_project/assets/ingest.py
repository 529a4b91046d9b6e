"""Ingest layer: land raw klines, aggregate trades and book snapshots per UTC day and symbol."""

import datetime as dt
from collections.abc import Callable

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result, check_specs
from dagster_project.checks import (
    AGG_TRADE_CHECKS,
    DEPTH_SNAPSHOT_CHECKS,
    DEPTH_UPDATE_CHECKS,
    KLINE_CHECKS,
    CheckOutcome,
    agg_trade_checks,
    depth_snapshot_checks,
    depth_update_checks,
    kline_checks,
)
from dagster_project.errors import SourceCapabilityError
from dagster_project.ingest.landing import land_day, land_symbol_day
from dagster_project.ingest.sources import (
    depth_snapshot_source,
    recording_source,
    trade_source,
)
from dagster_project.klines import TimeRange
from dagster_project.lake import Lake
from dagster_project.partitions import day_and_symbol, day_symbol
from dagster_project.resources import LakeResource, MarketSourceResource
from dagster_project.schemas import RAW_TABLES

RAW_KLINES = dg.AssetKey(["raw", "klines"])
RAW_AGG_TRADES = dg.AssetKey(["raw", "agg_trades"])
RAW_DEPTH_SNAPSHOTS = dg.AssetKey(["raw", "depth_snapshots"])
RAW_DEPTH_UPDATES = dg.AssetKey(["raw", "depth_updates"])


def raw_table_asset(key: dg.AssetKey, checks: tuple[str, ...], description: str):
    """An ingest asset of one raw lake table, partitioned by day × symbol, with its checks."""
    return dg.asset(
        key=key,
        group_name="ingest",
        partitions_def=day_symbol,
        check_specs=check_specs(key, checks),
        kinds={"parquet", "binance"},
        description=description,
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
    day, symbol = day_and_symbol(context.partition_key)
    the_lake = lake.get()
    source = market_source.build(the_lake)
    landed = land_day(the_lake, source, symbol, market_source.interval, day)
    frame = pl.read_parquet(landed.path)
    context.log.info(f"landed {landed.rows} {symbol} {landed.interval} rows for {day}")
    return dg.MaterializeResult(
        metadata={"source": source.name, "interval": landed.interval, **landed_metadata(landed)}
        | time_range_metadata(frame, "open_time"),
        check_results=[check_result(RAW_KLINES, o) for o in kline_checks(frame, day)],
    )


@raw_table_asset(
    RAW_AGG_TRADES,
    AGG_TRADE_CHECKS,
    "Aggregate trades (Binance aggTrades) per symbol and UTC day "
    "(lake/raw/agg_trades): simulator, REST /api/v3/aggTrades or Binance Vision archives.",
)
def raw_agg_trades(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> dg.MaterializeResult:
    day, symbol = day_and_symbol(context.partition_key)
    the_lake = lake.get()
    source = trade_source(market_source.build(the_lake))
    frame = source.fetch_agg_trades(symbol, TimeRange.for_day(day))
    return land_and_check(
        the_lake,
        RAW_AGG_TRADES,
        symbol,
        day,
        frame,
        lambda landed: agg_trade_checks(landed, day),
        {"source": source.name},
    )


@raw_table_asset(
    RAW_DEPTH_SNAPSHOTS,
    DEPTH_SNAPSHOT_CHECKS,
    "The top of the order book sampled at a fixed cadence (default 1 s, 50 levels) "
    "per symbol and UTC day (lake/raw/depth_snapshots). Past days come from the simulator; real "
    "books only from a recording (`candlelake collect-depth` or a replayed stream).",
)
def raw_depth_snapshots(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> dg.MaterializeResult:
    day, symbol = day_and_symbol(context.partition_key)
    the_lake = lake.get()
    cadence_s, levels = market_source.depth_cadence_s, market_source.depth_levels
    recordings = recording_source(market_source.settings())
    if recordings is not None:
        replayed = recordings.replay_day(symbol, TimeRange.for_day(day), cadence_s, levels)
        frame, source_name = replayed.snapshots, recordings.name
        context.log.info(f"replayed {symbol}: {replayed.stats}; {replayed.book_tickers}")
    else:
        source = depth_snapshot_source(market_source.build(the_lake))
        frame = source.fetch_depth_snapshots(symbol, TimeRange.for_day(day), cadence_s, levels)
        source_name = source.name
    return land_and_check(
        the_lake,
        RAW_DEPTH_SNAPSHOTS,
        symbol,
        day,
        frame,
        lambda landed: depth_snapshot_checks(landed, day, cadence_s),
        {"source": source_name},
    )


@raw_table_asset(
    RAW_DEPTH_UPDATES,
    DEPTH_UPDATE_CHECKS,
    "Every diff-depth event applied to the book, for exact replay "
    "(lake/raw/depth_updates). Only real streams have them: replayed from "
    "market_source.depth_recordings here, or landed live by `candlelake collect-depth`.",
)
def raw_depth_updates(
    context: dg.AssetExecutionContext, lake: LakeResource, market_source: MarketSourceResource
) -> dg.MaterializeResult:
    day, symbol = day_and_symbol(context.partition_key)
    the_lake = lake.get()
    recordings = recording_source(market_source.settings())
    if recordings is None:
        raise SourceCapabilityError(
            "raw/depth_updates needs recorded streams: set market_source.depth_recordings, or "
            "land them live with `candlelake collect-depth`"
        )
    replayed = recordings.replay_day(
        symbol, TimeRange.for_day(day), market_source.depth_cadence_s, market_source.depth_levels
    )
    return land_and_check(
        the_lake,
        RAW_DEPTH_UPDATES,
        symbol,
        day,
        replayed.updates,
        lambda landed: depth_update_checks(landed, day, recordings.market),
        {"source": recordings.name, "resyncs": replayed.stats.resync_count},
    )


def land_and_check(
    lake: Lake,
    asset: dg.AssetKey,
    symbol: str,
    day: dt.date,
    frame: pl.DataFrame,
    checks: Callable[[pl.DataFrame], list[CheckOutcome]],
    metadata: dict[str, object],
) -> dg.MaterializeResult:
    """Replace the symbol-day partition of a ``raw/<table>`` asset, then check what landed."""
    table = asset.path[-1]
    landed = land_symbol_day(lake, table, symbol, day, frame)
    rows = lake.read_partition("raw", table, {"symbol": symbol, "date": day})
    return dg.MaterializeResult(
        metadata=metadata
        | landed_metadata(landed)
        | time_range_metadata(rows, RAW_TABLES[table][1]),
        check_results=[check_result(asset, outcome) for outcome in checks(rows)],
    )


def landed_metadata(landed) -> dict[str, object]:
    return {"rows": landed.rows, "path": dg.MetadataValue.path(str(landed.path))}


def time_range_metadata(frame: pl.DataFrame, column: str) -> dict[str, str]:
    return {f"first_{column}": str(frame[column].min()), f"last_{column}": str(frame[column].max())}
