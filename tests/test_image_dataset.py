"""ml.image_dataset: images streamed from lake partitions, equal to rendering them directly."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

import ml.image_cache as image_cache
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.lake import Lake, connect
from ml.image_cache import ImageCacheSettings, cache_dataset_day, shard_path
from ml.image_dataset import ImageSample, LakeImageDataset, image_loader
from ml.rendering import CandleStyle, OhlcBarStyle, render
from ml.split_specs import SplitSpec, SplitSpecError, assign_splits, store_spec
from ml.splits import SplitError
from ml.window_data import WindowPartition, attach_labels, load_windows
from tests.helpers import simulated_dataset_lake

DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
SYMBOL = "BTCUSDT"
# A calendar with every split inside DAYS (the built-in default tests from 03-03 on).
TWO_DAYS = SplitSpec(
    "two_days",
    validation_start=dt.datetime(2024, 3, 1, 16, tzinfo=dt.UTC),
    test_start=dt.datetime(2024, 3, 2, 8, tzinfo=dt.UTC),
)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    """The simulated days with the default spec's splits and TWO_DAYS' splits."""
    lake = simulated_dataset_lake(tmp_path_factory.mktemp("lake"), SYMBOL, DAYS)
    store_spec(lake, TWO_DAYS)
    assign_splits(lake, connect(), [TWO_DAYS.name])
    return lake


@pytest.fixture
def own_lake(lake, tmp_path) -> Lake:
    """A copy of the module's lake that a test may write shards into."""
    shutil.copytree(lake.root, tmp_path / "lake")
    return Lake(tmp_path / "lake")


def dataset(lake: Lake, interval="15m", name="regular", window_size=5, **kw) -> LakeImageDataset:
    return LakeImageDataset(lake, SYMBOL, interval, DAYS[0], DAYS[-1], name, window_size, **kw)


def expected(lake: Lake, interval, name, window_size, style, label=None):
    """Per day: the labelled windows' frame and their images, rendered straight from
    load_windows (the reference the dataset must equal)."""
    con = connect()
    result = []
    for day in DAYS:
        part = WindowPartition(SYMBOL, interval, day, name, window_size)
        batch, frame = load_windows(lake, con, part)
        frame = attach_labels(lake, part, frame, label)
        keep = frame["value"].is_not_null()
        result.append((frame.filter(keep), render(batch.take(np.flatnonzero(keep)), style)))
    return result


def stacked(samples: list[ImageSample]):
    times = [s.decision_time for s in samples]
    return torch.stack([s.image for s in samples]).numpy(), [s.label.item() for s in samples], times


@pytest.mark.parametrize(
    ("interval", "name", "window_size", "style"),
    [
        ("15m", "regular", 5, CandleStyle()),
        ("1m", "fullimage", 30, CandleStyle(height=32, width=48)),
        ("5m", "irregular_80", 15, OhlcBarStyle()),
    ],
)
def test_yields_every_labelled_window_in_time_order_as_rendered(
    lake, interval, name, window_size, style
):
    samples = list(dataset(lake, interval, name, window_size, style=style))
    reference = expected(lake, interval, name, window_size, style)
    frames = pl.concat([frame for frame, _ in reference])
    images, labels, times = stacked(samples)

    assert times == frames["decision_time"].dt.epoch("us").to_list()
    assert times == sorted(times) and len(set(times)) == len(times)
    assert labels == frames["value"].to_list()
    assert images.tobytes() == np.concatenate([img for _, img in reference]).tobytes()
    first = samples[0]
    assert first.image.dtype == torch.uint8 and first.image.shape == reference[0][1].shape[1:]
    assert first.label.dtype == torch.float32 and first.label.shape == ()
    assert isinstance(first.decision_time, int)


def test_windows_without_a_label_value_are_left_out(lake):
    """On the last day landed, the last fullimage windows have no window_up_5 yet: the next 5
    candles are not all in the lake."""
    last_day = WindowPartition(SYMBOL, "1m", DAYS[-1], "fullimage", 5)
    _, windows = load_windows(lake, connect(), last_day)
    labelled = attach_labels(lake, last_day, windows).filter(pl.col("value").is_not_null())
    start_us = int(dt.datetime.combine(DAYS[-1], dt.time(), tzinfo=dt.UTC).timestamp() * 1e6)
    times = [s.decision_time for s in dataset(lake, "1m", "fullimage", 5)]
    assert [t for t in times if t >= start_us] == labelled["decision_time"].dt.epoch("us").to_list()
    assert windows.height - labelled.height == 4


def test_a_label_override_yields_that_labels_values(lake):
    samples = list(dataset(lake, label="leaky_last_candle_up"))
    reference = pl.concat(
        [f for f, _ in expected(lake, "15m", "regular", 5, CandleStyle(), "leaky_last_candle_up")]
    )
    assert [s.label.item() for s in samples] == reference["value"].to_list()
    assert set(reference["label"]) == {"leaky_last_candle_up"}


def split_rows(lake: Lake, spec: str, interval: str) -> pl.DataFrame:
    keys = {"spec": spec, "symbol": SYMBOL, "interval": interval}
    return pl.read_parquet(lake.partition_files("windows", "splits", keys))


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_split_filter_keeps_exactly_that_splits_rows(lake, split):
    chosen = dataset(lake, "1m", window_size=15, split=split, split_spec="two_days")
    times = [s.decision_time for s in chosen]
    rows = split_rows(lake, "two_days", "1m").filter(
        (pl.col("dataset") == "regular")
        & (pl.col("window_size") == 15)
        & (pl.col("split") == split)
    )
    assert len(times) > 0
    assert times == rows.sort("decision_time")["decision_time"].dt.epoch("us").to_list()


def test_every_split_together_is_the_whole_dataset(lake):
    whole = [s.decision_time for s in dataset(lake, "15m", window_size=15)]
    parts = [
        s.decision_time
        for split in ("train", "validation", "test", "purged", "embargoed")
        for s in dataset(lake, "15m", window_size=15, split=split, split_spec="two_days")
    ]
    assert sorted(parts) == whole


def test_the_split_spec_defaults_to_the_built_in_default(lake):
    """The default spec validates from 03-02 00:00: its validation rows are 03-02's, two_days'
    start at 03-01 16:00."""

    def first_time(**kw) -> dt.datetime:
        first = next(iter(dataset(lake, "15m", window_size=5, split="validation", **kw)))
        return dt.datetime.fromtimestamp(first.decision_time / 1e6, dt.UTC)

    assert first_time() == dt.datetime(2024, 3, 2, tzinfo=dt.UTC)
    assert first_time(split_spec="two_days") == dt.datetime(2024, 3, 1, 16, tzinfo=dt.UTC)
    with pytest.raises(SplitSpecError, match="unknown split spec 'weekly'; known: default"):
        dataset(lake, split="train", split_spec="weekly")


def test_a_label_override_must_fit_in_the_specs_embargo(lake, tmp_path):
    """Splits are purged on the paired label (next_up_1); a label looking further ahead than
    the spec's embargo could be known inside the next block. A spec stored with a 10-bar embargo
    (as if before the 30-bar labels existed) refuses tb_30, keeps next_up_5 and the leakage
    controls (no horizon)."""
    own = Lake(tmp_path / "lake")
    shutil.copytree(lake.root, own.root)
    row = pl.DataFrame(
        {
            "validation_start": [TWO_DAYS.validation_start],
            "test_start": [TWO_DAYS.test_start],
            "embargo_bars": [10],
        }
    )
    own.write_partition("windows", "split_specs", {"spec": "short"}, row)
    with pytest.raises(
        SplitError,
        match="label 'tb_30' looks 30 bars ahead, but split spec 'short' embargoes only 10",
    ):
        dataset(own, split="train", split_spec="short", label="tb_30")
    for label in ("next_up_5", "leaky_window_up_30"):  # past the embargo check: no splits yet
        with pytest.raises(InvalidRequestError, match="windows/splits short BTCUSDT 15m"):
            dataset(own, split="train", split_spec="short", label=label)
    assert len(list(dataset(own, split="train", split_spec="two_days", label="fwd_logret_15"))) > 0


def test_two_dataloader_workers_produce_each_sample_once(lake):
    single = [s.decision_time for s in dataset(lake, "1m", window_size=5)]
    loader = image_loader(dataset(lake, "1m", window_size=5), batch_size=128, num_workers=2)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    batches = list(loader)
    times = [t for batch in batches for t in batch.decision_time.tolist()]
    assert sorted(times) == single and len(set(times)) == len(times)
    assert batches[0].image.shape == (128, 3, 64, 64) and batches[0].image.dtype == torch.uint8
    assert batches[0].label.dtype == torch.float32


def test_partitions_are_loaded_one_at_a_time_as_items_are_consumed(lake, monkeypatch):
    loads, renders = [], []
    real_load, real_render = image_cache.load_windows, image_cache.render

    def counting_load(lake, con, part):
        loads.append(part.day)
        return real_load(lake, con, part)

    def recording_render(batch, style):
        renders.append(batch.size)
        return real_render(batch, style)

    first_day = len(expected(lake, "1m", "regular", 5, CandleStyle())[0][0])
    items = iter(dataset(lake, "1m", window_size=5, chunk_size=100))
    monkeypatch.setattr(image_cache, "load_windows", counting_load)
    monkeypatch.setattr(image_cache, "render", recording_render)

    assert loads == []  # nothing is read before the first item is asked for
    next(items)
    assert loads == [DAYS[0]] and renders == [100]
    for _ in range(first_day - 1):
        next(items)
    assert loads == [DAYS[0]]  # the whole first day consumed, the second not read yet
    next(items)
    assert loads == list(DAYS)
    assert max(renders) == 100  # images are drawn one chunk at a time


def test_cached_shards_give_byte_identical_samples_without_loading_candles(own_lake, monkeypatch):
    settings = ImageCacheSettings(styles=(CandleStyle(), OhlcBarStyle()), intervals=("15m",))
    con = connect()
    for day in DAYS:
        for name in ("regular", "irregular_60"):
            cache_dataset_day(own_lake, con, SYMBOL, day, name, settings)
    cases = [
        {"style": CandleStyle()},
        {"style": OhlcBarStyle(), "name": "irregular_60", "window_size": 30},
        {"label": "leaky_last_candle_up", "split": "train", "split_spec": "two_days"},
    ]
    rendered = [stacked(list(dataset(own_lake, **case))) for case in cases]

    loads = []
    monkeypatch.setattr(image_cache, "load_windows", lambda *a: loads.append(a) or None)
    for case, reference in zip(cases, rendered, strict=True):
        from_cache = stacked(list(dataset(own_lake, use_cache=True, **case)))
        assert from_cache[0].tobytes() == reference[0].tobytes()
        assert from_cache[1:] == reference[1:]
    assert loads == []  # every sample came from a shard


def part_of(day, window_size=5, name="regular") -> WindowPartition:
    return WindowPartition(SYMBOL, "15m", day, name, window_size)


def test_a_shard_that_no_longer_matches_is_rendered_instead(own_lake, monkeypatch):
    settings = ImageCacheSettings(window_sizes=(5,), intervals=("15m",))
    con = connect()
    for day in DAYS:
        cache_dataset_day(own_lake, con, SYMBOL, day, "regular", settings)
    reference = stacked(list(dataset(own_lake)))
    style = CandleStyle()
    # day 1: a row fewer (as if labels landed after the shard was written)
    path = shard_path(own_lake, part_of(DAYS[0]), style)
    table = pq.read_table(path)
    own_lake.write_partition(
        "images",
        "regular",
        {**part_of(DAYS[0]).keys, "window_size": 5, "style": "candle-64x64"},
        table.slice(1),
    )
    # day 2: drawn by another version of the renderer
    monkeypatch.setattr(image_cache, "renderer_version", lambda: "0123456789abcdef")
    cache_dataset_day(own_lake, con, SYMBOL, DAYS[1], "regular", settings)
    monkeypatch.undo()

    loads = []
    real_load = image_cache.load_windows
    monkeypatch.setattr(
        image_cache,
        "load_windows",
        lambda lake, con, part: loads.append(part.day) or real_load(lake, con, part),
    )
    from_cache = stacked(list(dataset(own_lake, use_cache=True)))
    assert loads == list(DAYS)  # neither shard was used
    assert from_cache[0].tobytes() == reference[0].tobytes() and from_cache[1:] == reference[1:]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "candles"}, "unknown dataset 'candles'; expected one of regular, fullimage"),
        ({"interval": "4h"}, "unknown interval '4h'"),
        ({"window_size": 7}, "unknown window size 7; expected one of 5, 15, 30"),
        ({"style": CandleStyle(width=10), "window_size": 15}, "10 px is too narrow for 15"),
        ({"style": CandleStyle(height=2)}, "needs at least 3 rows"),
        ({"style": "candle"}, "unknown image style 'candle'"),
        ({"split": "holdout"}, "unknown split 'holdout'"),
        ({"label": "next_up_2"}, "unknown label 'next_up_2'"),
        ({"chunk_size": 0}, "chunk_size must be at least 1"),
    ],
)
def test_bad_requests_fail_when_the_dataset_is_built(lake, change, message):
    with pytest.raises(InvalidRequestError, match=message):
        dataset(lake, **change)


def test_a_missing_partition_is_named_before_any_item(lake):
    with pytest.raises(
        InvalidRequestError,
        match="lacks 2 partition.*windows/windows BTCUSDT 15m"
        " 2024-03-03; labels/labels BTCUSDT 15m 2024-03-03",
    ):
        LakeImageDataset(lake, SYMBOL, "15m", DAYS[0], "2024-03-03", "regular", 5)
    with pytest.raises(InvalidRequestError, match="day range 2024-03-02 .. 2024-03-01 is empty"):
        LakeImageDataset(lake, SYMBOL, "15m", DAYS[1], DAYS[0], "regular", 5)


def test_a_split_needs_the_splits_table(lake, tmp_path):
    shutil.copytree(lake.root, tmp_path / "lake", ignore=shutil.ignore_patterns("splits"))
    with pytest.raises(InvalidRequestError, match="windows/splits two_days BTCUSDT 15m"):
        dataset(Lake(tmp_path / "lake"), split="train", split_spec="two_days")
