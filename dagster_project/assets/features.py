"""Features layer: microstructure features per symbol and minute (SQL)."""

import dagster as dg
import polars as pl

from dagster_project.assets.curated import CURATED_KLINES
from dagster_project.assets.raw import RAW_AGG_TRADES, RAW_DEPTH_SNAPSHOTS
from dagster_project.partitions import (
    days_by_symbol,
    range_asset,
    run_partition_keys,
    same_symbol_days,
)
from dagster_project.resources import DuckDBResource, LakeResource
from dagster_project.transform.indicators import INDICATOR_HISTORY_DAYS, build_indicators
from dagster_project.transform.microstructure import (
    MicrostructureSettings,
    build_microstructure,
    has_microstructure_inputs,
)

MICROSTRUCTURE = dg.AssetKey(["features", "microstructure"])
INDICATORS = dg.AssetKey(["features", "indicators"])


class MicrostructureConfig(dg.Config):
    top_n: int = MicrostructureSettings.top_n  # levels per side summed by imbalance_top_n


@range_asset(
    dg.asset,
    key=MICROSTRUCTURE,
    deps=[CURATED_KLINES, RAW_DEPTH_SNAPSHOTS, RAW_AGG_TRADES],
    group_name="features",
    output_required=False,
    kinds={"parquet", "duckdb"},
    description="Spread, mid, microprice, top-N imbalance, depth within ±10/±50 bps, trade-flow "
    "imbalance, VWAP and close's deviation from it, per symbol and 1-minute bucket aligned to "
    "kline open_time, from data inside the minute only (sql/features/microstructure.sql). Not "
    "materialized for days without landed books and trades (a real source without recordings).",
)
def microstructure(
    context: dg.AssetExecutionContext,
    config: MicrostructureConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
):
    the_lake = lake.get()
    settings = MicrostructureSettings(top_n=config.top_n)
    built, absent = [], []
    with duckdb.connect() as con:
        for symbol, days in days_by_symbol(run_partition_keys(context)).items():
            for day in days:
                if not has_microstructure_inputs(the_lake, symbol, day):
                    absent.append(f"{symbol} {day}")
                    continue
                built.append(build_microstructure(the_lake, con, symbol, day, settings))
    if absent:
        context.log.info(f"no book or trades landed (absent): {', '.join(absent)}")
    if not built:
        return
    features = pl.concat(built)
    yield dg.MaterializeResult(
        metadata={
            "rows": features.height,
            "days": len(built),
            "minutes_with_book": int(features["mid"].is_not_null().sum()),
            "minutes_with_trades": int((features["trade_count"] > 0).sum()),
            "median_spread_bps": features["spread_bps"].median(),
        }
    )


@range_asset(
    dg.asset,
    key=INDICATORS,
    deps=[dg.AssetDep(CURATED_KLINES, partition_mapping=same_symbol_days(INDICATOR_HISTORY_DAYS))],
    group_name="features",
    kinds={"parquet", "duckdb"},
    description="45 technical indicators per bar at every curated interval (SQL window functions "
    "in sql/features/indicators.sql plus one vectorised recursive smoother), equal to the `ta` "
    "library after warm-up and to a whole-series computation; NULL while warming up. "
    "features/indicator_availability says which are usable per day.",
)
def indicators(
    context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    built = []
    with duckdb.connect() as con:
        for symbol, days in days_by_symbol(run_partition_keys(context)).items():
            built += build_indicators(lake.get(), con, symbol, days)
    metadata: dict[str, object] = {"days": len({b.day for b in built})}
    for interval in dict.fromkeys(b.interval for b in built):
        of_interval = [b for b in built if b.interval == interval]
        metadata[f"{interval}_rows"] = sum(b.rows for b in of_interval)
        metadata[f"{interval}_usable_indicators"] = min(b.usable for b in of_interval)
        warming_up = sorted({name for b in of_interval for name in b.unusable})
        if warming_up:
            metadata[f"{interval}_warming_up"] = ", ".join(warming_up)
    return dg.MaterializeResult(metadata=metadata)
