"""A range of days in one run equals the same days one at a time, and backfills are few runs.

Every partitioned asset processes a run's whole range of days (``partitions.RANGE_POLICY``); its
SQL works over the range at once. These tests compare the lake a range run writes with the lake
that single-day runs write, file by file, and count the runs a range takes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dagster_project.build import RangeRun, range_runs, run_range, step_failure
from dagster_project.core.lake import Lake, connect
from dagster_project.ingest.landing import land_days
from dagster_project.ingest.sources import SourceSettings, make_source
from dagster_project.partitions import RANGE_POLICY, day_symbol, day_symbol_key, days_by_symbol
from dagster_project.transform.curate import curate_day
from dagster_project.transform.dataset_days import build_dataset_day, build_dataset_days
from dagster_project.transform.indicators import build_indicators
from ml.image_cache import ImageCacheSettings, cache_dataset_day, cache_dataset_days
from ml.rendering import CandleStyle, OhlcBarStyle

DAYS = [dt.date(2024, 3, 1) + dt.timedelta(days=n) for n in range(4)]


def landed_lake(root: Path, days=DAYS, symbol: str = "BTCUSDT") -> Lake:
    lake = Lake(root)
    land_days(lake, make_source(SourceSettings(), lake.root), symbol, "1m", days)
    con = connect()
    for day in days:
        curate_day(lake, symbol, day, con=con)
    return lake


def table_files(lake: Lake, layer: str, table: str) -> dict[str, Path]:
    folder = lake.table_dir(layer, table)
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.parquet"))}


def assert_same_table(
    one: Lake, other: Lake, layer: str, table: str, ignore: tuple[str, ...] = ()
) -> int:
    """Both lakes hold the same partitions of a table with equal rows (but for the ``ignore``
    columns, e.g. when a row was landed); returns the number of partitions."""
    ours, theirs = table_files(one, layer, table), table_files(other, layer, table)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        left, right = (
            pl.read_parquet(files[name]).drop(ignore, strict=False) for files in (ours, theirs)
        )
        assert_frame_equal(left, right)
    return len(ours)


def test_indicators_over_a_range_equal_each_day_alone(tmp_path):
    ranged, daily = landed_lake(tmp_path / "ranged"), landed_lake(tmp_path / "daily")
    built = build_indicators(ranged, connect(), "BTCUSDT", DAYS)
    for day in DAYS:
        build_indicators(daily, connect(), "BTCUSDT", [day])
    intervals = ("1m", "5m", "15m", "1h")
    assert {(b.interval, b.day) for b in built} == {(i, d) for i in intervals for d in DAYS}
    assert assert_same_table(ranged, daily, "features", "indicators") == 16
    assert_same_table(ranged, daily, "features", "indicator_availability")


def test_a_day_missing_inside_the_range_is_skipped_and_the_rest_still_equal(tmp_path):
    days = [DAYS[0], DAYS[1], DAYS[3]]  # DAYS[2] never landed
    ranged, daily = landed_lake(tmp_path / "ranged", days), landed_lake(tmp_path / "daily", days)
    built = build_indicators(ranged, connect(), "BTCUSDT", DAYS)
    for day in days:
        build_indicators(daily, connect(), "BTCUSDT", [day])
    assert {b.day for b in built} == set(days)
    assert assert_same_table(ranged, daily, "features", "indicators") == 12


def test_labels_and_windows_over_a_range_equal_each_day_alone(tmp_path):
    ranged, daily = landed_lake(tmp_path / "ranged"), landed_lake(tmp_path / "daily")
    built = build_dataset_days(ranged, connect(), "BTCUSDT", DAYS)
    for day in DAYS:
        build_dataset_day(daily, connect(), "BTCUSDT", day)
    assert {(b.interval, b.first, b.last) for b in built} == {
        (i, DAYS[0], DAYS[-1]) for i in ("1m", "5m", "15m", "1h")
    }
    assert assert_same_table(ranged, daily, "labels", "labels") == 16
    assert assert_same_table(ranged, daily, "windows", "windows") == 16


def test_images_over_a_range_equal_each_day_alone(tmp_path):
    """Both styles (ohlc_bar draws a moving average reaching 2w - 2 candles back) at 15m and 1h."""
    settings = ImageCacheSettings(styles=(CandleStyle(), OhlcBarStyle()))
    lakes = {name: landed_lake(tmp_path / name) for name in ("ranged", "daily")}
    for lake in lakes.values():
        build_dataset_days(lake, connect(), "BTCUSDT", DAYS)
    shards = cache_dataset_days(lakes["ranged"], connect(), "BTCUSDT", DAYS, "regular", settings)
    for day in DAYS:
        cache_dataset_day(lakes["daily"], connect(), "BTCUSDT", day, "regular", settings)
    assert len(shards) == len(DAYS) * 2 * 3 * 2  # days × intervals × window sizes × styles
    assert sum(s.images for s in shards) > 0
    assert assert_same_table(lakes["ranged"], lakes["daily"], "images", "regular") == len(shards)


def test_days_by_symbol_groups_a_runs_keys():
    keys = [str(day_symbol_key(d, s)) for s in ("ETHUSDT", "BTCUSDT") for d in reversed(DAYS[:2])]
    assert days_by_symbol(keys) == {"ETHUSDT": DAYS[:2], "BTCUSDT": DAYS[:2]}


def test_range_runs_are_one_per_symbol_and_stretch_of_consecutive_days():
    runs = range_runs(["BTCUSDT", "ETHUSDT"], [DAYS[3], DAYS[0], DAYS[1], DAYS[1]])
    assert runs == [
        RangeRun("BTCUSDT", DAYS[0], DAYS[1]),
        RangeRun("BTCUSDT", DAYS[3], DAYS[3]),
        RangeRun("ETHUSDT", DAYS[0], DAYS[1]),
        RangeRun("ETHUSDT", DAYS[3], DAYS[3]),
    ]
    assert runs[0].tags == {
        "dagster/asset_partition_range_start": "2024-03-01|BTCUSDT",
        "dagster/asset_partition_range_end": "2024-03-02|BTCUSDT",
    }


def test_every_partitioned_asset_runs_a_range_in_one_run():
    """Every day x symbol asset; the experiment cells are partitioned by cell key instead."""
    from dagster_project.assets.common import EXPERIMENT_CELLS
    from dagster_project.definitions import defs

    graph = defs.resolve_asset_graph()
    nodes = [graph.get(key) for key in graph.materializable_asset_keys]
    partitioned = [node for node in nodes if node.is_partitioned]
    assert {n.key for n in partitioned if n.partitions_def != day_symbol} == {EXPERIMENT_CELLS}
    partitioned = [node for node in partitioned if node.key != EXPERIMENT_CELLS]
    assert len(partitioned) > 10
    for node in partitioned:
        assert node.partitions_def == day_symbol
        assert node.backfill_policy == RANGE_POLICY, node.key


@pytest.mark.slow
def test_a_windows_job_range_run_equals_single_day_runs(tmp_path, monkeypatch):
    """Through Dagster: one run over two days writes the same lake as two one-day runs, and
    the instance records one run for the range and a materialization for every partition."""
    from dagster_project.definitions import defs

    windows_job = defs.resolve_job_def("windows_job")
    klines_job = defs.resolve_job_def("klines_job")
    days = DAYS[:2]
    whole = RangeRun("BTCUSDT", days[0], days[-1])
    lakes = {name: Lake(tmp_path / name) for name in ("ranged", "daily")}
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("CANDLELAKE_LAKE", str(lakes["ranged"].root))
        assert run_range(windows_job, instance, whole).success
        ranged_run = instance.get_runs()[0]
        # the same days one at a time, with every day's klines landed first (the labels of a
        # day read the next days' klines; a range run lands them all before any label)
        monkeypatch.setenv("CANDLELAKE_LAKE", str(lakes["daily"].root))
        assert run_range(klines_job, instance, whole).success
        for day in days:
            assert run_range(windows_job, instance, RangeRun("BTCUSDT", day, day)).success
        assert len(instance.get_runs()) == 4
        materialized = instance.fetch_materializations(
            dg.AssetKey(["labels", "labels"]), limit=100
        ).records
        in_ranged = {m.partition_key for m in materialized if m.run_id == ranged_run.run_id}
        assert in_ranged == {str(day_symbol_key(d, "BTCUSDT")) for d in days}
    for layer, table in (
        ("curated", "klines"),
        ("features", "indicators"),
        ("labels", "labels"),
        ("windows", "windows"),
    ):
        assert_same_table(lakes["ranged"], lakes["daily"], layer, table, ignore=("ingested_at",))


def test_a_job_backfill_run_that_dagster_cuts_to_one_partition_fails_before_writing(
    tmp_path, monkeypatch
):
    """A job's Partitions tab backfill gives its range run the first partition's dimension tags
    too (Dagster 1.13), and Dagster then treats the run as that one partition while the backfill
    counts the whole range done. The run must fail loudly, not land one day of thirty."""
    from dagster_project.definitions import defs

    monkeypatch.setenv("CANDLELAKE_LAKE", str(tmp_path / "lake"))
    run = RangeRun("BTCUSDT", DAYS[0], DAYS[2])
    first = {"dagster/partition/date": "2024-03-01", "dagster/partition/symbol": "BTCUSDT"}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
        result = defs.resolve_job_def("klines_job").execute_in_process(
            instance=instance, tags=run.tags | first, raise_on_error=False
        )
        assert not result.success
        assert not instance.get_materialized_partitions(dg.AssetKey(["raw", "klines"]))
    message = step_failure(result)
    assert "launched for 2024-03-01|BTCUSDT..2024-03-03|BTCUSDT (3 partitions)" in message
    assert "Materialize or `candlelake build`" in message
    assert not Lake(tmp_path / "lake").table_dir("raw", "klines").exists()
