"""The images assets: cached shards per dataset, their check, config and catalog views."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

import ml.image_cache as image_cache
from dagster_project.assets.catalog import CATALOG_VIEWS
from dagster_project.assets.images import IMAGES, images
from dagster_project.core.lake import Lake, build_catalog, connect
from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key
from dagster_project.resources import DuckDBResource, LakeResource
from ml.image_cache import (
    ImageCacheSettings,
    check_images_match_windows,
    labelled_window_counts,
    read_shard,
    shard_path,
)
from ml.rendering import CandleStyle, OhlcBarStyle, render
from ml.window_data import WindowPartition, attach_labels, load_windows
from tests.helpers import simulated_dataset_lake

SYMBOL = "BTCUSDT"
DAY = dt.date(2024, 3, 2)
KEY = str(day_symbol_key(DAY, SYMBOL))
DEFAULT_SETTINGS = ImageCacheSettings()


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory) -> Lake:
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), SYMBOL)


@pytest.fixture
def lake(built_lake, tmp_path) -> Lake:
    shutil.copytree(built_lake.root, tmp_path / "lake")
    return Lake(tmp_path / "lake")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, [SYMBOL])
        yield instance


def materialize_images(lake: Lake, instance, config: dict | None = None, selection=None):
    return dg.materialize(
        [images],
        selection=selection,
        partition_key=KEY,
        instance=instance,
        resources={"lake": LakeResource(root=str(lake.root)), "duckdb": DuckDBResource()},
        run_config={"ops": {"images": {"config": config or {}}}},
        raise_on_error=False,
    )


def test_default_materialization_caches_every_dataset_and_passes_its_checks(lake, instance):
    result = materialize_images(lake, instance)
    assert result.success
    checks = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == set(IMAGES) and all(c.passed for c in checks.values())
    assert all(c.check_name == "images_match_windows" for c in checks.values())

    events = {e.asset_key: e.materialization for e in result.get_asset_materialization_events()}
    for dataset, key in IMAGES.items():
        metadata = {k: v.value for k, v in events[key].metadata.items()}
        assert metadata["shards"] == 6  # 15m and 1h × window sizes 5, 15, 30
        assert metadata["images"] == metadata["15m_images"] + metadata["1h_images"] > 0
        assert metadata["bytes"] > 0 and metadata["seconds"] > 0
        for interval in ("15m", "1h"):
            expected = labelled_window_counts(lake, SYMBOL, interval, DAY, dataset)
            assert sum(expected.values()) == metadata[f"{interval}_images"]
    assert not list((lake.root / "images").glob("*/*/interval=1m"))  # not cached by default


def test_a_shard_holds_the_rendered_images_of_the_labelled_windows(lake, instance):
    materialize_images(lake, instance)
    part = WindowPartition(SYMBOL, "15m", DAY, "irregular_60", 15)
    path = shard_path(lake, part, CandleStyle())
    assert path.relative_to(lake.root).as_posix() == (
        "images/irregular_60/symbol=BTCUSDT/interval=15m/date=2024-03-02/window_size=15/"
        "style=candle-64x64/part-0.parquet"
    )
    table = pq.read_table(path)
    assert table.column_names == [
        "decision_time",
        "label",
        "value",
        "known_at",
        "image",
        "channels",
        "height",
        "width",
    ]
    assert str(table.schema.field("image").type) == "fixed_size_binary[12288]"
    batch, frame = load_windows(lake, connect(), part)
    labelled = attach_labels(lake, part, frame)["value"].is_not_null().to_numpy()
    shard = read_shard(lake, part, CandleStyle())
    assert shard.images.tobytes() == render(batch.take(np.flatnonzero(labelled))).tobytes()
    assert shard.frame["value"].null_count() == 0
    assert set(table.column("height").to_pylist()) == {64}


def test_config_picks_styles_sizes_intervals_and_a_subset_of_datasets(lake, instance):
    config = {"styles": ["ohlc_bar", "candle"], "window_sizes": [5], "intervals": ["1m"]}
    config |= {"candle_height": 32, "candle_width": 32}
    result = materialize_images(lake, instance, config, selection=[IMAGES["regular"]])
    assert result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [IMAGES["regular"]]
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["shards"].value == 2
    leaves = sorted(
        p.parent.relative_to(lake.root / "images").as_posix()
        for p in (lake.root / "images").rglob("part-0.parquet")
    )
    base = "regular/symbol=BTCUSDT/interval=1m/date=2024-03-02/window_size=5"
    assert leaves == [f"{base}/style=candle-32x32", f"{base}/style=ohlc_bar-32x15"]


def test_the_check_fails_when_a_shard_misses_an_image(lake, instance, monkeypatch):
    real_table = image_cache.shard_table

    def one_row_short(frame, images, style, window_size):
        return real_table(frame, images, style, window_size).slice(1)

    monkeypatch.setattr(image_cache, "shard_table", one_row_short)
    config = {"window_sizes": [15], "intervals": ["1h"]}
    result = materialize_images(lake, instance, config, selection=[IMAGES["fullimage"]])
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    expected = labelled_window_counts(lake, SYMBOL, "1h", DAY, "fullimage")[15]
    assert check.metadata["mismatched"].value == [
        f"1h w=15 candle-64x64: {expected - 1} images, {expected} labelled windows"
    ]


def test_the_check_counts_missing_and_shortened_shards_from_the_lake(lake, instance):
    materialize_images(lake, instance, selection=[IMAGES["regular"]])
    assert check_images_match_windows(lake, SYMBOL, DAY, "regular", DEFAULT_SETTINGS).passed
    part = WindowPartition(SYMBOL, "15m", DAY, "regular", 30)
    path = shard_path(lake, part, CandleStyle())
    shortened = pq.read_table(path)
    shortened = shortened.slice(0, shortened.num_rows - 1)
    keys = {**part.keys, "window_size": 30, "style": "candle-64x64"}
    lake.write_partition("images", "regular", keys, shortened)
    shard_path(lake, WindowPartition(SYMBOL, "1h", DAY, "regular", 5), CandleStyle()).unlink()

    outcome = check_images_match_windows(lake, SYMBOL, DAY, "regular", DEFAULT_SETTINGS)
    assert not outcome.passed
    assert [m.split(":")[0] for m in outcome.metadata["mismatched"]] == [
        "15m w=30 candle-64x64",
        "1h w=5 candle-64x64",
    ]
    assert outcome.metadata["mismatched"][1].startswith("1h w=5 candle-64x64: 0 images")


def test_catalog_views_read_shards_of_every_style(lake, instance):
    materialize_images(lake, instance, selection=[IMAGES["regular"]])
    materialize_images(
        lake,
        instance,
        {"styles": ["ohlc_bar"], "intervals": ["15m"]},
        selection=[IMAGES["regular"]],
    )
    assert "images_regular" in build_catalog(lake, CATALOG_VIEWS)
    con = connect(lake.catalog_path, read_only=True)
    rows = con.sql(
        "select style, window_size, count(*), min(octet_length(image)), "
        "min(channels * height * width) from images_regular "
        "where interval = '15m' group by all order by all"
    ).fetchall()
    counts = labelled_window_counts(lake, SYMBOL, "15m", DAY, "regular")
    assert rows == [
        ("candle-64x64", 5, counts[5], 12288, 12288),
        ("candle-64x64", 15, counts[15], 12288, 12288),
        ("candle-64x64", 30, counts[30], 12288, 12288),
        ("ohlc_bar-32x15", 5, counts[5], 480, 480),
        ("ohlc_bar-64x45", 15, counts[15], 2880, 2880),
        ("ohlc_bar-96x90", 30, counts[30], 8640, 8640),
    ]
    assert OhlcBarStyle().size_for(30) == (96, 90)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"styles": ["heikin_ashi"]}, "unknown image style 'heikin_ashi'"),
        ({"intervals": ["4h"]}, "unknown interval '4h'"),
        ({"candle_width": 8, "window_sizes": [15]}, "8 px is too narrow for 15 candles"),
        ({"window_sizes": []}, "no window_sizes to render"),
    ],
)
def test_bad_config_fails_the_run_with_a_clear_message(lake, instance, config, message):
    result = materialize_images(lake, instance, config, selection=[IMAGES["regular"]])
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert message in " | ".join(messages)
    assert not (lake.root / "images").exists()
