"""Datasets layer: labels with known_at and the sliding windows of the named datasets (SQL)."""

import dagster as dg

from dagster_project.assets.common import check_result
from dagster_project.assets.curate import CURATED_KLINES
from dagster_project.checks import CheckOutcome
from dagster_project.datasets import (
    NEIGHBOUR_DAYS,
    assign_splits,
    build_dataset_day,
    training_rows_reaching_test,
)
from dagster_project.partitions import day_and_symbol, day_symbol, same_symbol_days
from dagster_project.resources import DuckDBResource, LakeResource

LABELS = dg.AssetKey(["labels", "labels"])
WINDOWS = dg.AssetKey(["windows", "windows"])
# labels and windows read the neighbouring days' klines (datasets.neighbour_kline_files)
NEIGHBOUR_KLINES = dg.AssetDep(
    CURATED_KLINES, partition_mapping=same_symbol_days(NEIGHBOUR_DAYS, NEIGHBOUR_DAYS)
)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LABELS,
            deps=[NEIGHBOUR_KLINES],
            kinds={"parquet", "duckdb"},
            description="Labels per decision time with known_at (sql/labels/labels.sql): "
            "next_up_h, window_up_w, fwd_logret_h, triple-barrier tb_h, and the seed's two "
            "leaky definitions as flagged leakage controls.",
        ),
        dg.AssetSpec(
            WINDOWS,
            deps=[NEIGHBOUR_KLINES],
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


SPLITS = dg.AssetKey(["windows", "splits"])


@dg.asset(
    key=SPLITS,
    deps=[LABELS, WINDOWS],
    group_name="datasets",
    kinds={"parquet", "duckdb"},
    check_specs=[dg.AssetCheckSpec("no_training_label_reaches_test", asset=SPLITS)],
    description="Every sample (window + label) with its split: time-ordered train / validation "
    "/ test blocks per symbol, interval, dataset and window size, training rows whose "
    "[decision_time, known_at] overlaps a later block purged, and an embargo before each later "
    "block (windows/splits).",
)
def splits(lake: LakeResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.connect() as con:
        assigned = assign_splits(lake.get(), con)
    leaks = training_rows_reaching_test(assigned)
    counts = assigned.group_by("split").len()
    return dg.MaterializeResult(
        metadata={row["split"] or "none": row["len"] for row in counts.iter_rows(named=True)},
        check_results=[
            check_result(
                SPLITS,
                CheckOutcome(
                    "no_training_label_reaches_test",
                    leaks == 0,
                    "no training sample's label is known at or after its series' first test "
                    "decision time",
                    {"leaking_rows": leaks},
                ),
            )
        ],
    )
