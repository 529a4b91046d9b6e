"""Datasets layer: labels with known_at and the sliding windows of the named datasets (SQL)."""

import dagster as dg
import polars as pl

from dagster_project.assets.common import check_result
from dagster_project.assets.curated import CURATED_KLINES
from dagster_project.core.checks import CheckOutcome
from dagster_project.partitions import (
    days_by_symbol,
    range_asset,
    run_partition_keys,
    same_symbol_days,
)
from dagster_project.resources import DuckDBResource, LakeResource
from dagster_project.transform.dataset_days import (
    LABEL_HISTORY_DAYS,
    LABEL_LOOKAHEAD_DAYS,
    DatasetDays,
    build_dataset_days,
)
from ml.split_specs import (
    DEFAULT_SPEC,
    SplitSpec,
    assign_splits,
    no_training_label_reaches_test,
    split_counts,
)

LABELS = dg.AssetKey(["labels", "labels"])
WINDOWS = dg.AssetKey(["windows", "windows"])
# labels and windows read klines days before (warm-up) and after (horizons) the day, up to the
# most any interval reads (datasets.label_kline_files)
NEIGHBOUR_KLINES = dg.AssetDep(
    CURATED_KLINES,
    partition_mapping=same_symbol_days(LABEL_HISTORY_DAYS, LABEL_LOOKAHEAD_DAYS),
)


@range_asset(
    dg.multi_asset,
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
    check_specs=[dg.AssetCheckSpec("known_at_after_decision_time", asset=LABELS)],
)
def labels_and_windows(
    context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource
):
    built = []
    with duckdb.connect() as con:
        for symbol, days in days_by_symbol(run_partition_keys(context)).items():
            built += build_dataset_days(lake.get(), con, symbol, days)
    bad = sum(b.bad_known_at for b in built)
    yield dg.MaterializeResult(
        asset_key=LABELS,
        metadata=per_interval(built, "labels"),
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
        metadata=per_interval(built, "windows")
        | per_interval(built, "windows_excluded", "excluded_for_gaps"),
    )


def per_interval(built: list[DatasetDays], field: str, name: str = "") -> dict[str, int]:
    """``<interval>_<name or field>``: the field summed over the run's stretches of that
    interval."""
    totals: dict[str, int] = {}
    for b in built:
        key = f"{b.interval}_{name or field}"
        totals[key] = totals.get(key, 0) + getattr(b, field)
    return totals


SPLITS = dg.AssetKey(["windows", "splits"])


class SplitsConfig(dg.Config):
    """Which split specs to assign: built in, or stored with `candlelake split-spec add`."""

    specs: list[str] = [DEFAULT_SPEC]


@dg.asset(
    key=SPLITS,
    deps=[LABELS, WINDOWS],
    group_name="datasets",
    kinds={"parquet", "duckdb"},
    check_specs=[dg.AssetCheckSpec("no_training_label_reaches_test", asset=SPLITS)],
    description="Every sample (window + label) with its split under each configured split spec "
    "(default: the built-in 'default'): one calendar of cut times for every symbol, interval, "
    "dataset and window size; training and validation rows whose label is known at or after the "
    "next cut purged, rows within the spec's embargo before a cut embargoed "
    "(windows/splits/spec=/symbol=/interval=). A row's split never changes as days land.",
)
def splits(
    config: SplitsConfig, lake: LakeResource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    with duckdb.connect() as con:
        assigned, specs = assign_splits(lake.get(), con, config.specs)
    return dg.MaterializeResult(
        metadata=splits_metadata(assigned, specs),
        check_results=[check_result(SPLITS, no_training_label_reaches_test(assigned, specs))],
    )


def splits_metadata(assigned: pl.DataFrame, specs: dict[str, SplitSpec]) -> dict[str, object]:
    """Per spec: its cut times and embargo, and the rows of each split."""
    metadata: dict[str, object] = {}
    for name, spec in specs.items():
        metadata[f"{name}_spec"] = dg.MetadataValue.json(spec.as_metadata())
        metadata |= {f"{name}_{split}": n for split, n in split_counts(assigned, name).items()}
    return metadata
