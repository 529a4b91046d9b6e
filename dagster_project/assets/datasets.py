"""Datasets layer: labels with known_at and the sliding windows of the named datasets (SQL)."""

import dagster as dg

from dagster_project.assets.common import check_result
from dagster_project.assets.curate import CURATED_KLINES
from dagster_project.checks import CheckOutcome
from dagster_project.datasets import build_dataset_day
from dagster_project.partitions import day_and_symbol, day_symbol
from dagster_project.resources import DuckDBResource, LakeResource

LABELS = dg.AssetKey(["labels", "labels"])
WINDOWS = dg.AssetKey(["windows", "windows"])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LABELS,
            deps=[CURATED_KLINES],
            kinds={"parquet", "duckdb"},
            description="Labels per decision time with known_at (sql/labels/labels.sql): "
            "next_up_h, window_up_w, fwd_logret_h, triple-barrier tb_h, and the seed's two "
            "leaky definitions as flagged leakage controls.",
        ),
        dg.AssetSpec(
            WINDOWS,
            deps=[CURATED_KLINES],
            kinds={"parquet", "duckdb"},
            description="Sliding windows of 5/15/30 candles for the regular, fullimage and "
            "irregular_60/80/95 datasets (sql/windows/windows.sql); gap-crossing windows excluded.",
        ),
    ],
    group_name="datasets",
    partitions_def=day_symbol,
    check_specs=[dg.AssetCheckSpec("known_at_after_decision_time", asset=LABELS)],
)
def labels_and_windows(
    context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource
):
    day, symbol = day_and_symbol(context.partition_key)
    with duckdb.connect() as con:
        built = build_dataset_day(lake.get(), con, symbol, day)
    bad = sum(b.bad_known_at for b in built)
    yield dg.MaterializeResult(
        asset_key=LABELS,
        metadata={f"{b.interval}_labels": b.labels for b in built},
        check_results=[
            check_result(
                LABELS,
                CheckOutcome(
                    "known_at_after_decision_time",
                    bad == 0,
                    "every non-leaky label is known strictly after its decision time",
                    {"bad_labels": bad},
                ),
            )
        ],
    )
    yield dg.MaterializeResult(
        asset_key=WINDOWS,
        metadata={f"{b.interval}_windows": b.windows for b in built}
        | {f"{b.interval}_excluded_for_gaps": b.windows_excluded for b in built},
    )
