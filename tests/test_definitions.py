"""The Definitions object: exactly the assets, checks, jobs and schedules we promise."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context

from dagster_project.definitions import defs
from dagster_project.jobs import daily_klines_schedule
from dagster_project.partitions import SYMBOLS_PARTITION_NAME
from dagster_project.transform.dataset_days import LABEL_HISTORY_DAYS, LABEL_LOOKAHEAD_DAYS
from dagster_project.transform.indicators import INDICATOR_HISTORY_DAYS
from tests.helpers import ALL_ASSET_KEYS

IMAGE_DATASETS = ("regular", "fullimage", "irregular_60", "irregular_80", "irregular_95")

KLINE_CHECKS = {
    "unique_open_time",
    "ohlc_consistent",
    "monotonic_open_time",
    "no_future_timestamps",
    "inside_partition_day",
}
DEPTH_CHECKS = {
    "unique_ts",
    "monotonic_ts",
    "no_crossed_books",
    "inside_partition_day",
    "snapshot_cadence",
}
UPDATE_CHECKS = {
    "unique_final_update_id",
    "monotonic_final_update_id",
    "sequence_integrity",
    "inside_partition_day",
}
TRADE_CHECKS = {
    "unique_agg_trade_id",
    "monotonic_agg_trade_id",
    "trade_ids_contiguous",
    "positive_price_qty",
    "inside_partition_day",
}


def test_definitions_load_exactly_these_assets():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == ALL_ASSET_KEYS


def test_every_landed_table_has_its_checks():
    checks = {
        (k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys
    }
    expected = {
        (table, name) for table in ("raw/klines", "curated/klines") for name in KLINE_CHECKS
    }
    expected |= {("raw/depth_snapshots", name) for name in DEPTH_CHECKS}
    expected |= {("raw/agg_trades", name) for name in TRADE_CHECKS}
    expected |= {("raw/depth_updates", name) for name in UPDATE_CHECKS}
    expected |= {("labels/labels", "known_at_after_decision_time")}
    expected |= {("windows/splits", "no_training_label_reaches_test")}
    expected |= {(f"images/{dataset}", "images_match_windows") for dataset in IMAGE_DATASETS}
    expected |= {("catalog", "lake_files_intact")}
    expected |= {("experiments/cells", name) for name in ("known_at_before_test", "not_suspicious")}
    assert checks == expected | {("curated/kline_gaps", "gap_report")}


def test_assets_are_grouped_by_layer_and_partitioned_by_day_and_symbol():
    graph = defs.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {
        "raw/klines": "ingest",
        "raw/agg_trades": "ingest",
        "raw/depth_snapshots": "ingest",
        "raw/depth_updates": "ingest",
        "features/microstructure": "features",
        "features/indicators": "features",
        "labels/labels": "datasets",
        "windows/windows": "datasets",
        "windows/splits": "datasets",
        **{f"images/{dataset}": "images" for dataset in IMAGE_DATASETS},
        "curated/klines": "curate",
        "curated/kline_gaps": "curate",
        "experiments/cells": "experiments",
        "catalog": "catalog",
    }
    partitions = graph.get(dg.AssetKey(["raw", "klines"])).partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    assert {d.name for d in partitions.partitions_defs} == {"date", "symbol"}


def upstream_days(asset: list[str], upstream: list[str], day: str) -> list[str]:
    """The curated-klines days Dagster maps one day × symbol partition of ``asset`` to."""
    graph = defs.resolve_asset_graph()
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, ["BTCUSDT"])
    key = dg.MultiPartitionKey({"date": day, "symbol": "BTCUSDT"})
    with partition_loading_context(dynamic_partitions_store=instance):
        mapped = graph.get_parent_partition_keys_for_child(
            key, dg.AssetKey(upstream), dg.AssetKey(asset)
        )
    assert {
        k.keys_by_dimension["symbol"] for k in mapped.partitions_subset.get_partition_keys()
    } == {"BTCUSDT"}
    return sorted(
        k.keys_by_dimension["date"] for k in mapped.partitions_subset.get_partition_keys()
    )


def days_around(day: str, before: int, after: int) -> list[str]:
    first = dt.date.fromisoformat(day) - dt.timedelta(days=before)
    return [str(first + dt.timedelta(days=n)) for n in range(before + after + 1)]


def test_partition_mappings_declare_the_neighbouring_days_read():
    """Labels read the days after (horizons past midnight) and before (tb volatility warm-up,
    windows), indicators their warm-up days; the asset graph declares exactly the days the code
    reads."""
    curated = ["curated", "klines"]
    # the 1h tb volatility warm-up needs 850 candles: 36 days; the 1h 30-bar horizons of the
    # day's last decisions reach 2 days ahead
    assert (LABEL_HISTORY_DAYS, LABEL_LOOKAHEAD_DAYS) == (36, 2)
    label_days = days_around("2024-03-10", 36, 2)
    assert upstream_days(["labels", "labels"], curated, "2024-03-10") == label_days
    assert upstream_days(["windows", "windows"], curated, "2024-03-10") == label_days
    assert upstream_days(["labels", "labels"], curated, "2017-07-14") == days_around(
        "2017-07-14", 0, 2
    )
    # images draw the windows' candles and their moving averages: 2w - 1 candles before each
    # decision (1h, w=30: 59 hours, 3 days)
    assert upstream_days(["images", "regular"], curated, "2024-03-10") == days_around(
        "2024-03-10", 3, 0
    )
    # the 1h EMA 200 needs 2,963 bars of history: 124 days
    history = [str(dt.date(2024, 3, 10) - dt.timedelta(days=n)) for n in range(124, -1, -1)]
    assert INDICATOR_HISTORY_DAYS == 124
    assert upstream_days(["features", "indicators"], curated, "2024-03-10") == history
    assert upstream_days(["curated", "klines"], ["raw", "klines"], "2024-03-10") == ["2024-03-10"]
    # the first day has no earlier neighbour; nothing is required that cannot exist
    assert upstream_days(["features", "indicators"], curated, "2017-07-14") == ["2017-07-14"]


def test_jobs_and_schedules():
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "klines_job",
        "windows_job",
        "images_job",
        "market_job",
        "catalog_job",
        "experiments_job",
        "experiment_grid_job",
    }
    assert {s.name for s in defs.schedules} == {"daily_klines_schedule", "daily_catalog_schedule"}
    market = defs.resolve_job_def("market_job").asset_layer.selected_asset_keys
    assert {f"images/{dataset}" for dataset in IMAGE_DATASETS} <= {
        k.to_user_string() for k in market
    }


def test_daily_schedule_requests_yesterday_for_every_registered_symbol():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, ["BTCUSDT", "ETHUSDT"])
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime(2024, 5, 2, 0, 15, tzinfo=dt.UTC),
        )
        requests = daily_klines_schedule(context)
    assert sorted(r.partition_key for r in requests) == ["2024-05-01|BTCUSDT", "2024-05-01|ETHUSDT"]


def test_daily_schedule_skips_without_symbols():
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2024, 5, 2, tzinfo=dt.UTC)
        )
        skipped = daily_klines_schedule(context)
    assert isinstance(skipped, dg.SkipReason)
    from dagster_project.cli import main

    commands = re.findall(r"`candlelake ([a-z-]+)", skipped.skip_message)
    assert commands and set(commands) <= set(main.commands)


def test_collected_depth_sensor_reports_new_appended_parts_once(tmp_path):
    import polars as pl

    from dagster_project.core.lake import Lake
    from dagster_project.jobs import collected_depth_sensor
    from dagster_project.resources import LakeResource

    lake = Lake(tmp_path)
    rows = pl.DataFrame({"ts": [dt.datetime(2024, 3, 1, tzinfo=dt.UTC)], "x": [1.0]})
    lake.append_part(
        "raw", "depth_snapshots", {"symbol": "XRPUSDT", "date": "2024-03-01"}, rows, "c1"
    )
    lake.append_part(
        "raw", "depth_updates", {"symbol": "XRPUSDT", "date": "2024-03-01"}, rows, "c1"
    )
    lake.write_partition(
        "raw", "depth_snapshots", {"symbol": "BTCUSDT", "date": "2024-03-01"}, rows
    )
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"lake": LakeResource(root=str(tmp_path))}
        )
        first = collected_depth_sensor(context)
        reported = sorted((e.asset_key.to_user_string(), e.partition) for e in first.asset_events)
        assert reported == [
            ("raw/depth_snapshots", "2024-03-01|XRPUSDT"),
            ("raw/depth_updates", "2024-03-01|XRPUSDT"),
        ]
        assert instance.get_dynamic_partitions(SYMBOLS_PARTITION_NAME) == ["XRPUSDT"]
        context = dg.build_sensor_context(
            instance=instance,
            cursor=first.cursor,
            resources={"lake": LakeResource(root=str(tmp_path))},
        )
        assert collected_depth_sensor(context).asset_events == []
