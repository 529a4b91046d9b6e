"""Ingest layer: land raw klines for one UTC day and symbol from the configured source."""

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result, check_specs
from dagster_project.checks import KLINE_CHECKS, kline_checks
from dagster_project.ingest.landing import land_day
from dagster_project.partitions import day_and_symbol, day_symbol
from dagster_project.resources import LakeResource, MarketSourceResource

RAW_KLINES = dg.AssetKey(["raw", "klines"])


@dg.asset(
    key=RAW_KLINES,
    group_name="ingest",
    partitions_def=day_symbol,
    check_specs=check_specs(RAW_KLINES, KLINE_CHECKS),
    kinds={"parquet", "binance"},
    description="Klines exactly as the source gave them, one Parquet partition per symbol and "
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
    context.log.info(
        f"landed {landed.rows} {symbol} {landed.interval} rows for {day} from {source.name}"
    )
    return dg.MaterializeResult(
        metadata={
            "rows": landed.rows,
            "source": source.name,
            "interval": landed.interval,
            "path": dg.MetadataValue.path(str(landed.path)),
            "first_open_time": str(frame["open_time"].min()),
            "last_open_time": str(frame["open_time"].max()),
        },
        check_results=[check_result(RAW_KLINES, o) for o in kline_checks(frame, day)],
    )
