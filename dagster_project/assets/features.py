"""Features layer: microstructure features per symbol and minute (SQL)."""

import dagster as dg

from dagster_project.assets.curate import CURATED_KLINES
from dagster_project.assets.ingest import RAW_AGG_TRADES, RAW_DEPTH_SNAPSHOTS
from dagster_project.features import (
    INDICATOR_HISTORY_DAYS,
    MicrostructureSettings,
    build_indicators,
    build_microstructure,
)
from dagster_project.partitions import day_and_symbol, day_symbol, same_symbol_days
from dagster_project.resources import DuckDBResource, LakeResource

MICROSTRUCTURE = dg.AssetKey(["features", "microstructure"])
INDICATORS = dg.AssetKey(["features", "indicators"])


class MicrostructureConfig(dg.Config):
    top_n: int = MicrostructureSettings.top_n  # levels per side summed by imbalance_top_n


@dg.asset(
    key=MICROSTRUCTURE,
    deps=[CURATED_KLINES, RAW_DEPTH_SNAPSHOTS, RAW_AGG_TRADES],
    group_name="features",
    partitions_def=day_symbol,
    kinds={"parquet", "duckdb"},
    description="Spread, mid, microprice, top-N imbalance, depth within ±10/±50 bps, trade-flow "
    "imbalance, VWAP and close's deviation from it, per symbol and 1-minute bucket aligned to "
    "kline open_time, from data inside the minute only (sql/features/microstructure.sql).",
)
def microstructure(
    context: dg.AssetExecutionContext,
    config: MicrostructureConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
) -> dg.MaterializeResult:
    day, symbol = day_and_symbol(context.partition_key)
    with duckdb.connect() as con:
        features = build_microstructure(
            lake.get(), con, symbol, day, MicrostructureSettings(top_n=config.top_n)
        )
    return dg.MaterializeResult(
        metadata={
            "rows": features.height,
            "minutes_with_book": int(features["mid"].is_not_null().sum()),
            "minutes_with_trades": int((features["trade_count"] > 0).sum()),
            "median_spread_bps": features["spread_bps"].median(),
        }
    )


@dg.asset(
    key=INDICATORS,
    deps=[dg.AssetDep(CURATED_KLINES, partition_mapping=same_symbol_days(INDICATOR_HISTORY_DAYS))],
    group_name="features",
    partitions_def=day_symbol,
    kinds={"parquet", "duckdb"},
    description="45 technical indicators per bar at every curated interval (SQL window functions "
    "in sql/features/indicators.sql plus one vectorised recursive smoother), equal to the `ta` "
    "library after warm-up and to a whole-series computation; NULL while warming up. "
    "features/indicator_availability says which are usable per day.",
)
def indicators(
    context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    day, symbol = day_and_symbol(context.partition_key)
    with duckdb.connect() as con:
        built = build_indicators(lake.get(), con, symbol, day)
    metadata: dict[str, object] = {}
    for b in built:
        metadata[f"{b.interval}_rows"] = b.rows
        metadata[f"{b.interval}_usable_indicators"] = b.usable
        if b.unusable:
            metadata[f"{b.interval}_warming_up"] = ", ".join(b.unusable)
    return dg.MaterializeResult(metadata=metadata)
