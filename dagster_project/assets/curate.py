"""Curate layer: deduplicated and resampled klines (SQL) and the gaps table, per symbol-day."""

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result, check_specs
from dagster_project.assets.ingest import RAW_KLINES
from dagster_project.checks import KLINE_CHECKS, gap_report, kline_checks, merge_outcomes
from dagster_project.curate import CuratedInterval, curate_day
from dagster_project.lake import Lake
from dagster_project.partitions import day_and_symbol, day_symbol
from dagster_project.resources import DuckDBResource, LakeResource

CURATED_KLINES = dg.AssetKey(["curated", "klines"])
KLINE_GAPS = dg.AssetKey(["curated", "kline_gaps"])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CURATED_KLINES,
            deps=[RAW_KLINES],
            kinds={"parquet", "duckdb"},
            description="Deduplicated klines at the raw interval plus 5m/15m/1h resampled from it "
            "in SQL (sql/curate/klines.sql). Bars are never invented: is_complete says whether "
            "every base bar was present.",
        ),
        dg.AssetSpec(
            KLINE_GAPS,
            deps=[CURATED_KLINES],
            kinds={"parquet", "duckdb"},
            description="Runs of missing bars per interval (sql/curate/kline_gaps.sql).",
        ),
    ],
    group_name="curate",
    partitions_def=day_symbol,
    check_specs=[
        *check_specs(CURATED_KLINES, KLINE_CHECKS),
        *check_specs(KLINE_GAPS, ("gap_report",)),
    ],
)
def curated_klines(context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource):
    day, symbol = day_and_symbol(context.partition_key)
    the_lake = lake.get()
    with duckdb.connect() as con:
        curated = curate_day(the_lake, symbol, day, con=con)
    klines = {c.interval: read(the_lake, "klines", symbol, c.interval, day) for c in curated}
    gaps = {c.interval: read(the_lake, "kline_gaps", symbol, c.interval, day) for c in curated}

    by_interval = {interval: kline_checks(frame, day) for interval, frame in klines.items()}
    yield dg.MaterializeResult(
        asset_key=CURATED_KLINES,
        metadata=curated_metadata(curated),
        check_results=[
            check_result(
                CURATED_KLINES,
                merge_outcomes(name, [(i, outcomes[k]) for i, outcomes in by_interval.items()]),
            )
            for k, name in enumerate(KLINE_CHECKS)
        ],
    )
    reports = [(i, gap_report(g, i)) for i, g in gaps.items()]
    yield dg.MaterializeResult(
        asset_key=KLINE_GAPS,
        metadata={f"{c.interval}_missing_bars": c.missing_bars for c in curated}
        | {f"{c.interval}_gaps": c.gaps for c in curated},
        check_results=[check_result(KLINE_GAPS, merge_outcomes("gap_report", reports))],
    )


def read(lake: Lake, table: str, symbol: str, interval: str, day) -> pl.DataFrame:
    return lake.read_partition(
        "curated", table, {"symbol": symbol, "interval": interval, "date": day}
    )


def curated_metadata(curated: list[CuratedInterval]) -> dict[str, object]:
    metadata: dict[str, object] = {"intervals": ", ".join(c.interval for c in curated)}
    for c in curated:
        metadata[f"{c.interval}_rows"] = c.rows
        metadata[f"{c.interval}_incomplete_bars"] = c.incomplete_bars
    return metadata
