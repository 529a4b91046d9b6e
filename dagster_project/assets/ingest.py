"""Ingest layer: land raw klines, aggregate trades and book snapshots per UTC day and symbol."""

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result, check_specs
from dagster_project.checks import (
    AGG_TRADE_CHECKS,
    DEPTH_SNAPSHOT_CHECKS,
    DEPTH_UPDATE_CHECKS,
    KLINE_CHECKS,
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
from dagster_project.partitions import day_and_symbol, day_symbol
from dagster_project.resources import LakeResource, MarketSourceResource

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
    landed = land_symbol_day(the_lake, "agg_trades", symbol, day, frame)
    frame = pl.read_parquet(landed.path)
    return dg.MaterializeResult(
        metadata={"source": source.name, **landed_metadata(landed)}
        | time_range_metadata(frame, "ts"),
        check_results=[check_result(RAW_AGG_TRADES, o) for o in agg_trade_checks(frame, day)],
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
    landed = land_symbol_day(the_lake, "depth_snapshots", symbol, day, frame)
    frame = the_lake.read_partition("raw", "depth_snapshots", {"symbol": symbol, "date": day})
    outcomes = depth_snapshot_checks(frame, day, cadence_s)
    return dg.MaterializeResult(
        metadata={"source": source_name, **landed_metadata(landed)}
        | time_range_metadata(frame, "ts"),
        check_results=[check_result(RAW_DEPTH_SNAPSHOTS, o) for o in outcomes],
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
    landed = land_symbol_day(the_lake, "depth_updates", symbol, day, replayed.updates)
    frame = the_lake.read_partition("raw", "depth_updates", {"symbol": symbol, "date": day})
    outcomes = depth_update_checks(frame, day, recordings.market)
    return dg.MaterializeResult(
        metadata={
            "source": recordings.name,
            "resyncs": replayed.stats.resync_count,
            **landed_metadata(landed),
        }
        | time_range_metadata(frame, "event_time"),
        check_results=[check_result(RAW_DEPTH_UPDATES, o) for o in outcomes],
    )


def landed_metadata(landed) -> dict[str, object]:
    return {"rows": landed.rows, "path": dg.MetadataValue.path(str(landed.path))}


def time_range_metadata(frame: pl.DataFrame, column: str) -> dict[str, str]:
    return {f"first_{column}": str(frame[column].min()), f"last_{column}": str(frame[column].max())}
