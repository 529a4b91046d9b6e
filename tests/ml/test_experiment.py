"""ml.experiment: cells and their keys, the cell runner on a simulated lake, skip-if-unchanged,
the time-honesty of every stored cell checked against the lake's own labels, and bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil

import polars as pl
import pytest

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.integrity import digest_of
from dagster_project.core.lake import Lake
from ml.experiment import (
    Cell,
    CellError,
    CellSettings,
    ShuffledLabelDataset,
    cell_fingerprint,
    grid,
    parse_training,
    plan_cell,
    run_cell,
    run_grid,
    training_name,
)
from ml.image_dataset import LakeImageDataset
from ml.protocols import EXPERIMENT_I, EXPERIMENT_II, SEED_REPLICA, Length
from ml.splits import DEFAULT_EMBARGO_BARS
from ml.train import TrainConfig, load_checkpoint
from ml.zoo import UnknownModelError
from tests.helpers import simulated_dataset_lake

pytestmark = pytest.mark.slow

SYMBOL = "BTCUSDT"
# Two days: 12-hour trainings, each tested on two 12-hour blocks, fit in the first day and a half
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
BAR = dt.timedelta(minutes=1)
SETTINGS = CellSettings(
    blocks=2,
    image_size=32,
    train=TrainConfig(lr=3e-3, batch_size=64, max_epochs=2, t_0=2, patience=2),
    n_boot=50,
    model_overrides={"channels": (8, 16, 32), "dropout": 0.0},
)
HONEST = Cell(SYMBOL, "1m", "regular", 5, "custom", "exp1_t720bar")
SEED = Cell(SYMBOL, "1m", "regular", 5, "custom", "seed_t720bar")
TIMING = {"created_at", "train_seconds", "train_samples_per_s"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), SYMBOL, DAYS)


@pytest.fixture(scope="module")
def first_run(lake):
    return run_grid(lake, [HONEST, SEED], SETTINGS)


def snapshot(lake: Lake) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(lake.root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in lake.root.rglob("*")
        if p.is_file()
    }


def stored(lake: Lake, table: str, cell: Cell) -> pl.DataFrame:
    return pl.read_parquet(lake.partition_files("results", table, {"cell": cell.key}))


# --- cells and keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [
        HONEST,
        Cell("ETHUSDT", "15m", "fullimage", 30, "jkx", "exp2_t7d_test14d", "leaky_window_up_30"),
        Cell(SYMBOL, "1h", "irregular_95", 15, "levit", "exp1_t120bar", shuffled=True),
        Cell(SYMBOL, "1m", "regular", 5, "custom", "seed_t7d", "leaky_window_up_5", True),
    ],
)
def test_a_cell_key_round_trips(cell):
    assert Cell.from_key(cell.key) == cell
    assert "." not in cell.symbol and cell.key.startswith(f"{cell.symbol}.{cell.interval}.")


def test_a_label_equal_to_the_default_is_the_default_cell():
    assert Cell(SYMBOL, "1m", "regular", 5, "custom", "exp1_t720bar", "next_up_1") == HONEST
    seed = Cell(SYMBOL, "1m", "fullimage", 15, "custom", "seed_t1d", "leaky_window_up_15")
    assert seed.label is None and seed.effective_label == "leaky_window_up_15"
    assert HONEST.effective_label == "next_up_1" and not HONEST.is_control
    assert SEED.effective_label == "leaky_last_candle_up" and SEED.is_control
    assert dataclasses.replace(HONEST, shuffled=True).is_control


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("BTCUSDT.1m.regular.w5.custom", "expected symbol.interval"),
        ("BTCUSDT.2m.regular.w5.custom.exp1_t1d", "'2m'"),
        ("BTCUSDT.1m.squares.w5.custom.exp1_t1d", "'squares'"),
        ("BTCUSDT.1m.regular.w7.custom.exp1_t1d", "window size 7"),
        ("BTCUSDT.1m.regular.5.custom.exp1_t1d", "window part '5'"),
        ("BTCUSDT.1m.regular.w5.resnet.exp1_t1d", "'resnet'"),
        ("BTCUSDT.1m.regular.w5.custom.exp3_t1d", "'exp3_t1d'"),
        ("BTCUSDT.1m.regular.w5.custom.exp2_t1d", "'exp2_t1d'"),
        ("BTCUSDT.1m.regular.w5.custom.exp1_t1d.tb_5", "'tb_5'"),
        ("BTCUSDT.1m.regular.w5.custom.exp1_t1d.next_up_1", "own key is"),
        ("btc.1m.regular.w5.custom.exp1_t1d", "'btc'"),
    ],
)
def test_a_bad_key_names_its_bad_part(key, bad):
    with pytest.raises(CellError, match=f"bad cell key {key!r}.*{bad}"):
        Cell.from_key(key)


def test_training_names_round_trip_through_the_protocols_keywords():
    assert training_name(EXPERIMENT_I, 7) == "exp1_t7d"
    assert training_name(EXPERIMENT_II, "7d", "120b") == "exp2_t7d_test120bar"
    assert training_name(SEED_REPLICA, Length(bars=90)) == "seed_t90bar"
    assert parse_training("exp1_t7d") == (EXPERIMENT_I, {"train_lengths": (Length(days=7),)})
    assert parse_training("exp2_t7d_test120bar") == (
        EXPERIMENT_II,
        {"train_length": Length(days=7), "test_lengths": (Length(bars=120),)},
    )
    with pytest.raises(CellError, match="as long as its training"):
        training_name(EXPERIMENT_I, 7, 14)


def test_a_grid_is_every_combination_once():
    cells = grid(
        [SYMBOL],
        ["1m"],
        ["regular"],
        [5, 15],
        ["custom"],
        ["exp1_t1d"],
        labels=[None, "next_up_1", "leaky_last_candle_up"],
    )
    assert [c.key for c in cells] == [
        "BTCUSDT.1m.regular.w5.custom.exp1_t1d",
        "BTCUSDT.1m.regular.w5.custom.exp1_t1d.leaky_last_candle_up",
        "BTCUSDT.1m.regular.w15.custom.exp1_t1d",
        "BTCUSDT.1m.regular.w15.custom.exp1_t1d.leaky_last_candle_up",
    ]


# --- running cells ---------------------------------------------------------------------------


def lake_known_at(lake: Lake, label: str, times: pl.Series) -> pl.Series:
    """The ``known_at`` of ``label`` at each decision time, read from labels/labels directly."""
    labels = pl.concat(
        lake.read_partition("labels", "labels", {"symbol": SYMBOL, "interval": "1m", "date": d})
        for d in DAYS
    ).filter(pl.col("label") == label)
    found = pl.DataFrame({"decision_time": times}).join(
        labels, on="decision_time", how="left", maintain_order="left"
    )["known_at"]
    assert found.null_count() == 0
    return found


def validation_times(lake: Lake, spec: str) -> pl.Series:
    """The validation rows of a split spec, from windows/splits."""
    keys = {"spec": spec, "symbol": SYMBOL, "interval": "1m"}
    return pl.read_parquet(lake.partition_files("windows", "splits", keys)).filter(
        (pl.col("dataset") == HONEST.dataset)
        & (pl.col("window_size") == HONEST.window_size)
        & (pl.col("split") == "validation")
    )["decision_time"]


def test_every_honest_test_block_starts_after_the_last_training_known_at_plus_the_embargo(
    lake, first_run
):
    card = load_checkpoint(first_run[0].checkpoint).card
    predictions = stored(lake, "predictions", HONEST).filter(pl.col("scorer") == HONEST.model)
    train_times = predictions.filter(pl.col("split") == "train")["decision_time"]
    training = pl.concat([train_times, validation_times(lake, card["folds"][0]["spec"])])
    last_known = lake_known_at(lake, HONEST.effective_label, training).max()

    metrics = stored(lake, "metrics", HONEST).filter(pl.col("split") == "test")
    assert metrics.height == 4 * 2 + 4  # 4 scorers × (2 blocks + pooled)
    assert (metrics["test_start"] > last_known + DEFAULT_EMBARGO_BARS * BAR).all()
    assert (metrics["last_training_known_at"] == last_known).all() and metrics["known_at_ok"].all()
    for block, rows in predictions.filter(pl.col("split") == "test").group_by("block"):
        start = metrics.filter(pl.col("block") == block[0])["test_start"][0]
        assert rows["decision_time"].min() >= start


def test_a_seed_replica_cell_is_stored_dishonest_and_as_a_control(lake, first_run):
    metrics = stored(lake, "metrics", SEED)
    assert not metrics["is_honest"].any() and not metrics["known_at_ok"].any()
    assert metrics["is_control"].all() and set(metrics["label"]) == {"leaky_last_candle_up"}
    assert not metrics["suspicious"].any()
    tests = metrics.filter(pl.col("split") == "test")
    assert (tests["test_start"] < tests["train_start"]).all()  # tested before it trained


def test_the_checkpoint_card_names_the_cell_its_folds_image_and_onnx(lake, first_run):
    outcome = first_run[0]
    card = load_checkpoint(outcome.checkpoint).card
    assert outcome.trained and outcome.checkpoint.name == HONEST.key
    assert card["cell"]["key"] == HONEST.key and card["cell"]["label"] == "next_up_1"
    assert card["fingerprint"] == outcome.fingerprint
    assert [f["fold"] for f in card["folds"]] == ["exp1_t720bar_b0", "exp1_t720bar_b1"]
    assert card["image"] | {"style_fields": None} == {
        "style": "candle-32x32",
        "style_fields": None,
        "in_chans": 3,
        "height": 32,
        "width": 32,
    }
    assert card["onnx"]["sha256"] == digest_of(outcome.checkpoint / card["onnx"]["file"])
    pooled = outcome.metrics.filter(
        (pl.col("scorer") == "custom") & (pl.col("split") == "test") & pl.col("block").is_null()
    )
    assert card["test_metrics"]["auroc"] == pytest.approx(pooled["auroc"][0])
    json.dumps(card, allow_nan=False)  # plain JSON


def comparable(metrics: pl.DataFrame) -> pl.DataFrame:
    return metrics.drop(TIMING).sort("scorer", "split", "block", nulls_last=True)


def test_an_unchanged_grid_trains_nothing_and_a_lost_cell_alone_retrains_the_same(lake, first_run):
    again = run_grid(lake, [HONEST, SEED], SETTINGS)
    assert [o.trained for o in again] == [False, False]
    assert [o.fingerprint for o in again] == [o.fingerprint for o in first_run]

    shutil.rmtree(lake.partition_dir("results", "metrics", {"cell": HONEST.key}))
    resumed = run_grid(lake, [HONEST, SEED], SETTINGS)
    assert [o.trained for o in resumed] == [True, False]
    # same seed, same data: the same metrics, to the last bit
    assert comparable(resumed[0].metrics).equals(comparable(first_run[0].metrics))


def test_the_fingerprint_follows_the_settings_and_the_data(lake, first_run):
    before = first_run[0].fingerprint
    assert cell_fingerprint(lake, HONEST, SETTINGS) == before
    assert cell_fingerprint(lake, HONEST, dataclasses.replace(SETTINGS, n_boot=51)) != before
    keys = {"symbol": SYMBOL, "interval": "1m", "date": DAYS[1]}
    labels = lake.read_partition("labels", "labels", keys)
    lake.write_partition("labels", "labels", keys, labels.head(labels.height - 1))
    try:
        assert cell_fingerprint(lake, HONEST, SETTINGS) != before
    finally:
        lake.write_partition("labels", "labels", keys, labels)
    assert cell_fingerprint(lake, HONEST, SETTINGS) == before


def test_the_shuffled_controls_training_labels_are_a_permutation_of_the_truth(lake, first_run):
    run = plan_cell(lake, dataclasses.replace(HONEST, shuffled=True), SETTINGS)
    truth, shuffled = run.image_data("train"), run.image_data("train", shuffle=True)
    assert isinstance(shuffled, ShuffledLabelDataset)
    plain = pl.concat(truth.wanted_windows(p) for p in truth.partitions)
    permuted = pl.concat(shuffled.wanted_windows(p) for p in shuffled.partitions)
    assert permuted["decision_time"].equals(plain["decision_time"])
    assert sorted(permuted["value"]) == sorted(plain["value"])
    assert (permuted["value"] != plain["value"]).mean() > 0.3
    samples, originals = list(shuffled), list(truth)
    assert [s.decision_time for s in samples] == plain["decision_time"].dt.epoch("us").to_list()
    assert [s.label.item() for s in samples] == permuted["value"].to_list()
    assert all((s.image == o.image).all() for s, o in zip(samples, originals, strict=True))
    validation = run.image_data("validation")
    assert type(validation) is LakeImageDataset  # validation and test keep the truth


def test_between_keeps_the_rows_of_a_range_with_or_without_a_split(lake, first_run):
    start, end = (
        dt.datetime(2024, 3, 2, 6, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 2, 7, tzinfo=dt.UTC),
    )
    data = LakeImageDataset(
        lake, SYMBOL, "1m", DAYS[1], DAYS[1], "regular", 5, between=(start, end)
    )
    times = [s.decision_time for s in data]
    assert len(times) == 60
    assert times[0] == int(start.timestamp() * 1e6) and times[-1] < int(end.timestamp() * 1e6)
    with pytest.raises(InvalidRequestError, match="must be before its end"):
        LakeImageDataset(lake, SYMBOL, "1m", DAYS[1], DAYS[1], "regular", 5, between=(end, start))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: dataclasses.replace(HONEST, model="resnet"), UnknownModelError, "'resnet'"),
        (lambda: dataclasses.replace(HONEST, window_size=7), InvalidRequestError, "window size 7"),
        (
            lambda: dataclasses.replace(HONEST, symbol="ETHUSDT"),
            InvalidRequestError,
            "no windows for ETHUSDT 1m",
        ),
        (lambda: HONEST, InvalidRequestError, "no windows for BTCUSDT 1m from 2023-01-01"),
    ],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(lake, first_run, make, error, message):
    settings = dataclasses.replace(
        SETTINGS, first_day=dt.date(2023, 1, 1), last_day=dt.date(2023, 1, 9)
    )
    before = snapshot(lake)
    with pytest.raises(error, match=message):
        run_cell(lake, make(), settings, force=True)
    assert snapshot(lake) == before


def test_a_range_too_short_for_a_fold_is_refused_before_writing(lake, first_run):
    settings = dataclasses.replace(SETTINGS, first_day=DAYS[0], last_day=DAYS[0])
    before = snapshot(lake)
    with pytest.raises(InvalidRequestError, match="holds no fold"):
        run_cell(lake, dataclasses.replace(HONEST, training="exp1_t1d"), settings)
    assert snapshot(lake) == before


def test_the_baselines_score_exactly_the_models_rows(lake, first_run):
    predictions = stored(lake, "predictions", HONEST)
    by_scorer = {
        (scorer, split): rows["decision_time"].to_list()
        for (scorer, split), rows in predictions.group_by("scorer", "split")
    }
    for split in ("train", "test"):
        model_rows = by_scorer[("custom", split)]
        assert all(by_scorer[(b, split)] == model_rows for b in ("majority", "persistence"))
    assert not set(by_scorer[("custom", "train")]) & set(by_scorer[("custom", "test")])
    test_times = by_scorer[("custom", "test")]
    assert test_times == sorted(set(test_times))  # each row once, in time order
