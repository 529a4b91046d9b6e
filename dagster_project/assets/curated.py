"""Curate layer: deduplicated and resampled klines (SQL) and the gaps table, per symbol-day."""

import datetime as dt

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result, check_specs
from dagster_project.assets.raw import RAW_KLINES
from dagster_project.core.checks import KLINE_CHECKS, gap_report, kline_checks, merge_by_name
from dagster_project.core.klines import interval_length
from dagster_project.core.lake import Lake
from dagster_project.partitions import days_by_symbol, range_asset, run_partition_keys
from dagster_project.resources import DuckDBResource, LakeResource
from dagster_project.transform.curate import CuratedInterval, curate_day

CURATED_KLINES = dg.AssetKey(["curated", "klines"])
KLINE_GAPS = dg.AssetKey(["curated", "kline_gaps"])


@range_asset(
    dg.multi_asset,
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
    check_specs=[
        *check_specs(CURATED_KLINES, KLINE_CHECKS),
        *check_specs(KLINE_GAPS, ("gap_report",)),
    ],
)
def curated_klines(context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource):
    the_lake = lake.get()
    curated: list[tuple[str, dt.date, CuratedInterval]] = []
    with duckdb.connect() as con:
        for symbol, days in days_by_symbol(run_partition_keys(context)).items():
            for day in days:
                curated += [(symbol, day, c) for c in curate_day(the_lake, symbol, day, con=con)]
    kline_parts, gap_parts = [], []
    for symbol, day, c in curated:
        label = f"{symbol} {day} {c.interval}"
        klines = read(the_lake, "klines", symbol, c.interval, day)
        gaps = read(the_lake, "kline_gaps", symbol, c.interval, day)
        kline_parts.append((label, kline_checks(klines, day)))
        gap_parts.append((label, [gap_report(gaps, c.interval)]))
    intervals = [c for _, _, c in curated]
    yield dg.MaterializeResult(
        asset_key=CURATED_KLINES,
        metadata=curated_metadata(intervals),
        check_results=[check_result(CURATED_KLINES, o) for o in merge_by_name(kline_parts)],
    )
    yield dg.MaterializeResult(
        asset_key=KLINE_GAPS,
        metadata=gap_metadata(intervals),
        check_results=[check_result(KLINE_GAPS, o) for o in merge_by_name(gap_parts)],
    )


def read(lake: Lake, table: str, symbol: str, interval: str, day) -> pl.DataFrame:
    return lake.read_partition(
        "curated", table, {"symbol": symbol, "interval": interval, "date": day}
    )


def curated_metadata(curated: list[CuratedInterval]) -> dict[str, object]:
    """Rows and incomplete bars per interval, summed over the run's partitions."""
    metadata: dict[str, object] = {"intervals": ", ".join(sorted_intervals(curated))}
    for interval in sorted_intervals(curated):
        of_interval = [c for c in curated if c.interval == interval]
        metadata[f"{interval}_rows"] = sum(c.rows for c in of_interval)
        metadata[f"{interval}_incomplete_bars"] = sum(c.incomplete_bars for c in of_interval)
    return metadata


def gap_metadata(curated: list[CuratedInterval]) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for interval in sorted_intervals(curated):
        of_interval = [c for c in curated if c.interval == interval]
        metadata[f"{interval}_missing_bars"] = sum(c.missing_bars for c in of_interval)
        metadata[f"{interval}_gaps"] = sum(c.gaps for c in of_interval)
    return metadata


def sorted_intervals(curated: list[CuratedInterval]) -> list[str]:
    return sorted({c.interval for c in curated}, key=interval_length)
