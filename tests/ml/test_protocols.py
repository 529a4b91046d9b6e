"""ml.protocols: Experiment I / II and seed_replica as folds on a calendar, honest by their cut
times, and on rows through ml.split_specs."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import polars as pl
import pytest

from dagster_project.core.lake import connect
from ml.protocols import (
    LEAKY_LABEL,
    PROTOCOLS,
    TEST_BEFORE_TRAIN,
    FoldLeakError,
    Length,
    ProtocolError,
    assign_fold,
    check_fold_is_honest,
    experiment_i,
    experiment_ii,
    plan,
    seed_replica,
)
from ml.split_specs import _SPEC_NAME, assign_splits, no_training_label_reaches_test, store_spec
from ml.splits import TEST, TRAIN, VALIDATION
from tests.helpers import simulated_dataset_lake

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
MARCH = ("2024-03-01", "2024-03-31")
THREE_DAYS = ("2024-03-01", "2024-03-03")  # the main job's default days


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 3, day, hour, minute, tzinfo=UTC)


def by_name(folds) -> dict:
    return {fold.name: fold for fold in folds}


def every_plan():
    return [
        experiment_i(*MARCH),
        experiment_i(*MARCH, "15m"),
        experiment_ii(*MARCH),
        experiment_i(*THREE_DAYS, train_lengths=(Length(bars=1440),)),
        experiment_ii(*THREE_DAYS, train_length=2, test_lengths=(1,), blocks=1),
    ]


# --- Experiment I and II on a month ------------------------------------------------------------


def test_experiment_i_on_a_month_keeps_the_folds_that_fit_with_exact_boundaries():
    march = plan("experiment_i", *MARCH, "1m")

    assert [f.name for f in march] == ["exp1_t7d_b0", "exp1_t7d_b1", "exp1_t7d_b2", "exp1_t14d_b0"]
    week = by_name(march)["exp1_t7d_b1"]
    assert (week.train_start, week.validation_start, week.train_end) == (
        at(1),
        at(6, 14, 24),  # the last 20 % of 7 days: 1 day 09:36
        at(8),
    )
    assert (week.test_start, week.test_end, week.block) == (at(15), at(22), 1)
    assert (week.spec.train_start, week.spec.validation_start) == (at(1), at(6, 14, 24))
    assert (week.spec.test_start, week.spec.test_end) == (at(8), at(22))
    assert week.spec.embargo_bars == 30 + 30  # the embargo plus the longest label horizon
    fortnight = by_name(march)["exp1_t14d_b0"]
    assert (fortnight.validation_start, fortnight.test_start, fortnight.test_end) == (
        at(12, 4, 48),
        at(15),
        at(29),
    )
    assert {f.training_name for f in march} == {"exp1_t7d", "exp1_t14d"}


def test_experiment_ii_trains_once_on_7_days_and_tests_on_longer_blocks():
    march = experiment_ii(*MARCH)

    assert [f.name for f in march] == ["exp2_t7d_test14d_b0", "exp2_t7d_test21d_b0"]
    assert [(f.test_start, f.test_end) for f in march] == [(at(8), at(22)), (at(8), at(29))]
    assert {f.training_name for f in march} == {"exp2_t7d_test14d", "exp2_t7d_test21d"}
    assert {(f.train_start, f.validation_start, f.train_end) for f in march} == {
        (at(1), at(6, 14, 24), at(8))
    }


def test_folds_that_do_not_fit_are_reported_not_raised():
    march = experiment_i(*MARCH)

    left = {gone.name: gone.reason for gone in march.left_out}
    assert len(left) == 4 * 5 - 4
    assert left["exp1_t7d_b3"] == (
        "its test block 2024-03-29 00:00 .. 2024-04-05 00:00 ends after the data "
        "(2024-03-01 .. 2024-03-31 UTC)"
    )
    assert "exp1_t28d_b0" in left
    assert "exp1_t7d_b3: left out, its test block" in "\n".join(march.describe())


def test_a_range_holding_no_fold_is_one_clear_error():
    with pytest.raises(ProtocolError) as error:
        plan("experiment_i", *THREE_DAYS, "1m")
    assert str(error.value) == (
        "experiment_i: the data 2024-03-01 .. 2024-03-03 UTC holds no fold; the shortest needs a "
        "training period of 7 days and a test block of 7 days: 14 days from 2024-03-01, but the "
        "data spans 3 days"
    )
    with pytest.raises(ProtocolError, match="seed_replica: the data 2024-03-01 .. 2024-03-03"):
        seed_replica(*THREE_DAYS, train_length=2)


# --- scaled down to the default lake -----------------------------------------------------------


def test_protocols_scale_down_to_three_days_of_1m():
    two_then_one = plan(
        "experiment_ii", *THREE_DAYS, "1m", train_length="2d", test_lengths=("1d",), blocks=1
    )
    (fold,) = two_then_one
    assert (fold.train_start, fold.validation_start, fold.train_end) == (
        at(1),
        at(2, 14, 24),
        at(3),
    )
    assert (fold.test_start, fold.test_end) == (at(3), at(4))

    in_bars = experiment_i(*THREE_DAYS, train_lengths=(Length(bars=720),))  # 12 h of 1m
    assert [f.name for f in in_bars] == [f"exp1_t720bar_b{k}" for k in range(5)]
    assert [(f.test_start, f.test_end) for f in in_bars][-1] == (at(3, 12), at(4))
    assert in_bars.folds[0].validation_start == at(1, 9, 36)
    # 15m: the 60-bar embargo is 15 h, so train and validation take 18 h each
    (quarter,) = experiment_i(*THREE_DAYS, "15m", train_lengths=("144b",), validation_fraction=0.5)
    assert (quarter.validation_start, quarter.test_start, quarter.test_end) == (
        at(1, 18),
        at(2, 12),
        at(4),
    )


def test_a_training_period_too_short_for_its_embargo_is_refused():
    with pytest.raises(ProtocolError, match="leaves 0:48:00 of train and 0:12:00 of validation"):
        experiment_i(*THREE_DAYS, train_lengths=(Length(bars=60),))


@pytest.mark.parametrize("bad", [0, -3, "7 weeks", 1.5, Length])
def test_bad_lengths_are_refused(bad):
    with pytest.raises(ProtocolError, match="ength"):
        Length.of(bad() if bad is Length else bad)


def test_unknown_protocol_and_parameter_are_refused():
    with pytest.raises(ProtocolError, match="unknown protocol 'exp3'; expected one of"):
        plan("exp3", *MARCH)
    with pytest.raises(ProtocolError, match="protocol 'seed_replica': .*train_lengths"):
        plan("seed_replica", *MARCH, train_lengths=(7,))
    assert set(PROTOCOLS) == {"experiment_i", "experiment_ii", "seed_replica"}


# --- names, ordering, embargo ------------------------------------------------------------------


def test_names_are_valid_unique_spec_names_and_deterministic():
    folds = [fold for p in every_plan() for fold in p]
    for fold in folds:
        assert _SPEC_NAME.match(fold.name) and _SPEC_NAME.match(fold.spec.name)
        assert fold.spec.name.startswith(f"{fold.name}_20240301_")
    assert len({f.spec.name for f in folds}) == len(folds)
    assert [f.spec for p in every_plan() for f in p] == [f.spec for f in folds]

    other = experiment_i(*MARCH, validation_fraction=0.25).folds[0]
    assert other.name == "exp1_t7d_b0"
    assert other.spec.name != experiment_i(*MARCH).folds[0].spec.name  # other cuts, other name


def test_every_honest_fold_is_ordered_and_embargoed():
    for fold in (fold for p in every_plan() for fold in p):
        assert fold.is_honest and fold.leaderboard_eligible and fold.reasons == ()
        assert fold.train_start < fold.validation_start < fold.train_end <= fold.test_start
        assert fold.test_start < fold.test_end
        assert fold.spec.test_start == fold.train_end
        assert fold.spec.embargo_bars == fold.embargo_bars + fold.horizon_bars
        for horizon in (0, 1, fold.horizon_bars):
            check_fold_is_honest(fold, horizon, fold.interval)


def test_a_test_block_one_bar_early_is_refused():
    fold = experiment_i(*MARCH, "15m").folds[0]
    early = replace(fold, test_start=fold.test_start - dt.timedelta(minutes=15))

    with pytest.raises(FoldLeakError, match="must start at or after 2024-03-08T00:00:00"):
        check_fold_is_honest(early, fold.horizon_bars, "15m")
    with pytest.raises(FoldLeakError, match="labels looking 31 bars of 15m ahead"):
        check_fold_is_honest(fold, fold.horizon_bars + 1, "15m")


# --- seed_replica ------------------------------------------------------------------------------


def test_seed_replica_reproduces_both_mistakes_and_is_flagged():
    (fold,) = seed_replica(*MARCH)

    assert fold.name == "seed_t7d_b0"
    assert fold.reasons == (LEAKY_LABEL, TEST_BEFORE_TRAIN)
    assert not fold.is_honest and not fold.leaderboard_eligible and fold.spec is None
    assert fold.label == "leaky_last_candle_up"
    assert (fold.test_start, fold.test_end) == (at(1), at(8))
    assert (fold.train_start, fold.validation_start, fold.train_end) == (
        at(8),
        at(13, 14, 24),
        at(15),
    )
    assert fold.as_metadata()["reasons"] == ["leaky_label", "test_before_train"]
    with pytest.raises(FoldLeakError, match="dishonest by design"):
        check_fold_is_honest(fold, 0, "1m")

    three = seed_replica(*MARCH, blocks=3, label="leaky_window_up_15")
    assert [f.test_end for f in three] == [at(8), at(15), at(22)]
    assert {f.train_start for f in three} == {at(22)}
    with pytest.raises(ProtocolError, match="got 'next_up_1', expected one of leaky_"):
        seed_replica(*MARCH, label="next_up_1")


# --- on rows -----------------------------------------------------------------------------------


def samples(days: range, horizon: int) -> pl.DataFrame:
    """1m samples of a label looking ``horizon`` bars ahead, on ``days`` of March 2024."""
    decisions = [at(d) + (i + 1) * MINUTE for d in days for i in range(1440)]
    return pl.DataFrame(
        {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "decision_time": decisions,
            "known_at": [t + horizon * MINUTE for t in decisions],
        },
        schema_overrides={
            "decision_time": pl.Datetime("us", "UTC"),
            "known_at": pl.Datetime("us", "UTC"),
        },
    )


def last_training_known_at(assigned: pl.DataFrame) -> dt.datetime:
    return assigned.filter(pl.col("split").is_in([TRAIN, VALIDATION]))["known_at"].max()


@pytest.mark.parametrize("horizon", [1, 30])
def test_assigned_rows_keep_the_embargo_after_the_last_training_known_at(horizon):
    rows = samples(range(1, 4), horizon)
    for fold in experiment_i(*THREE_DAYS, train_lengths=(1,), blocks=2):
        assigned = assign_fold(rows, fold)

        tests = assigned.filter(pl.col("split") == TEST)["decision_time"]
        assert (tests.min(), tests.max()) == (fold.test_start, fold.test_end - MINUTE)
        assert last_training_known_at(assigned) + fold.embargo_bars * MINUTE < fold.test_start
        assert set(assigned["fold"]) == {fold.name}


def test_seed_replica_rows_train_after_their_test_without_purge():
    rows = samples(range(1, 4), 0)
    assigned = assign_fold(rows, seed_replica(*THREE_DAYS, train_length=1).folds[0])

    counts = dict(assigned.group_by("split").len().iter_rows())
    assert counts == {TRAIN: 1152, VALIDATION: 288, TEST: 1439}  # no purge, no embargo
    assert assigned.filter(pl.col("split") == TEST)["decision_time"].max() < at(2)
    assert assigned.filter(pl.col("split") == TRAIN)["decision_time"].min() == at(2)


def test_a_fold_spec_keeps_the_simulated_lake_honest(tmp_path):
    lake = simulated_dataset_lake(tmp_path, "BTCUSDT", (dt.date(2024, 3, 1), dt.date(2024, 3, 2)))
    (fold,) = experiment_i("2024-03-01", "2024-03-02", train_lengths=(1,), blocks=1)
    store_spec(lake, fold.spec)

    assigned, specs = assign_splits(lake, connect(), [fold.spec.name])

    assert no_training_label_reaches_test(assigned, specs).passed
    assert {TRAIN, VALIDATION, TEST} <= set(assigned["split"])
    first_test = assigned.filter(pl.col("split") == TEST)["decision_time"].min()
    assert last_training_known_at(assigned) + fold.embargo_bars * MINUTE < first_test
