"""Leakage-free splits: counts, purging, embargo, fold ordering and input errors."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ml.splits import (
    SplitError,
    combinatorial_purged_cv,
    time_split,
    walk_forward,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def samples(n: int, horizon: int | np.ndarray = 5, step: timedelta = MINUTE) -> pl.DataFrame:
    """n samples, one per ``step``, each labelled ``horizon`` steps later (scalar or per row)."""
    horizons = np.broadcast_to(np.asarray(horizon), (n,))
    dec = [T0 + i * step for i in range(n)]
    known = [d + int(h) * step for d, h in zip(dec, horizons, strict=True)]
    return pl.DataFrame(
        {"decision_time": dec, "known_at": known, "x": np.arange(n, dtype=float)},
        schema_overrides={
            "decision_time": pl.Datetime("us", "UTC"),
            "known_at": pl.Datetime("us", "UTC"),
        },
    )


def times(df: pl.DataFrame, rows: np.ndarray, col: str = "decision_time") -> np.ndarray:
    return df[col].to_numpy()[rows]


def assert_no_leak(df: pl.DataFrame, train: np.ndarray, test_blocks: list[np.ndarray]) -> None:
    """No training interval [decision_time, known_at] touches a test block's span."""
    dec, known = df["decision_time"].to_numpy(), df["known_at"].to_numpy()
    for block in test_blocks:
        start, span_end = dec[block[0]], known[block].max()
        before = train[dec[train] < start]
        after = train[dec[train] > start]
        assert (known[before] < start).all(), "training label known inside a test block"
        assert (dec[after] > span_end).all(), "training row starts before test labels known"


def contiguous_blocks(rows: np.ndarray) -> list[np.ndarray]:
    return [b for b in np.split(rows, np.where(np.diff(rows) != 1)[0] + 1) if len(b)]


# --- CPCV ------------------------------------------------------------------------------------


def test_cpcv_six_groups_two_test_gives_15_splits_and_5_paths():
    cv = combinatorial_purged_cv(samples(600), n_groups=6, k_test=2)
    assert cv.n_splits == 15
    assert cv.n_paths == 5
    assert len({s.test_groups for s in cv.splits}) == 15


@pytest.mark.parametrize(("n", "k"), [(3, 1), (4, 2), (5, 3), (7, 2), (8, 3), (10, 4)])
def test_cpcv_counts_are_binomial(n, k):
    cv = combinatorial_purged_cv(samples(n * 20), n_groups=n, k_test=k)
    assert cv.n_splits == math.comb(n, k)
    assert cv.n_paths == math.comb(n - 1, k - 1)
    # Every path covers every group exactly once, each with a split that holds it out.
    for path in cv.paths:
        assert [g for g, _ in path] == list(range(n))
        for g, s in path:
            assert g in cv.splits[s].test_groups
    # Every (group, split) pair with the group held out is used exactly once across paths.
    used = [pair for path in cv.paths for pair in path]
    assert len(used) == len(set(used)) == cv.n_splits * k


def test_cpcv_groups_partition_rows_in_time_order():
    df = samples(103)
    cv = combinatorial_purged_cv(df, n_groups=6, k_test=2)
    assert np.array_equal(np.concatenate(cv.groups), np.arange(103))
    for split in cv.splits:
        everything = np.concatenate([split.train, split.test, split.purged, split.embargoed])
        assert np.array_equal(np.sort(everything), np.arange(103))


@pytest.mark.parametrize("seed", range(8))
def test_cpcv_no_training_label_reaches_a_test_block_random_horizons(seed):
    rng = np.random.default_rng(seed)
    df = samples(300, horizon=rng.integers(0, 40, size=300))
    cv = combinatorial_purged_cv(df, n_groups=6, k_test=2, embargo=3 * MINUTE)
    for split in cv.splits:
        assert len(split.train) > 0
        assert_no_leak(df, split.train, contiguous_blocks(split.test))


def test_cpcv_embargo_after_each_test_block():
    df = samples(600, horizon=1)
    embargo = 10 * MINUTE
    cv = combinatorial_purged_cv(df, n_groups=6, k_test=2, embargo=embargo)
    dec = df["decision_time"].to_numpy()
    for split in cv.splits:
        for block in contiguous_blocks(split.test):
            end = dec[block[-1]]
            train_after = dec[split.train][dec[split.train] > end]
            if len(train_after):
                assert train_after.min() - end > np.timedelta64(10, "m")
                # Tight: the first training row after the block is right after the embargo.
                assert train_after.min() - end == np.timedelta64(11, "m")
        # Embargoed rows are exactly those within the embargo and not purged.
        assert len(split.embargoed) > 0


def test_cpcv_without_embargo_purges_only_overlaps():
    df = samples(120, horizon=0)  # labels known at decision time: nothing overlaps
    cv = combinatorial_purged_cv(df, n_groups=6, k_test=2)
    for split in cv.splits:
        assert len(split.purged) == 0 and len(split.embargoed) == 0
        assert len(split.train) + len(split.test) == 120


# --- time_split ------------------------------------------------------------------------------


def test_time_split_blocks_are_time_ordered_with_expected_sizes():
    out = time_split(samples(1000, horizon=5), 0.6, 0.2, 0.2, embargo=timedelta(0))
    assert out.columns[-1] == "split"
    labels = out["split"].to_list()
    assert set(labels) <= {"train", "validation", "test", "purged", "embargoed"}
    assert labels.count("test") == 200
    assert labels.count("validation") + labels.count("purged") - 5 == 200
    assert labels.count("train") == 600 - 5
    # Order: every train row before every validation row before every test row.
    idx = {k: [i for i, v in enumerate(labels) if v == k] for k in ("train", "validation", "test")}
    assert max(idx["train"]) < min(idx["validation"]) and max(idx["validation"]) < min(idx["test"])


@pytest.mark.parametrize("seed", range(8))
def test_time_split_no_label_reaches_later_block_random_horizons(seed):
    rng = np.random.default_rng(seed)
    df = samples(500, horizon=rng.integers(0, 30, size=500))
    out = time_split(df, 0.5, 0.25, 0.25, embargo=2 * MINUTE)
    split = out["split"].to_numpy()
    train = np.where(split == "train")[0]
    val = np.where(split == "validation")[0]
    test = np.where(split == "test")[0]
    assert_no_leak(out, train, [test])
    assert_no_leak(out, train, [val])
    assert_no_leak(out, val, [test])


def test_time_split_embargo_length_respected():
    df = samples(1000, horizon=1)
    out = time_split(df, 0.6, 0.2, 0.2, embargo=15 * MINUTE)
    dec = out["decision_time"].to_numpy()
    split = out["split"].to_numpy()
    val_start = dec[split == "validation"].min()
    test_start = dec[split == "test"].min()
    gap = np.timedelta64(15, "m")
    assert (dec[split == "train"] < val_start - gap).all()
    assert (dec[split == "validation"] < test_start - gap).all()
    # Exactly the 15 rows in the gap (minus the purged one touching the block) are embargoed.
    assert (split == "embargoed").sum() == 2 * 14
    assert (split == "purged").sum() == 2


def test_time_split_without_validation():
    out = time_split(samples(100, horizon=0), train=0.7, validation=0.0, test=0.3)
    assert out["split"].value_counts().sort("split").rows() == [("test", 30), ("train", 70)]


def test_time_split_keeps_rows_and_columns():
    df = samples(50)
    out = time_split(df)
    assert out.drop("split").equals(df)


# --- walk_forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["expanding", "rolling"])
def test_walk_forward_folds_ordered_test_after_train(mode):
    rng = np.random.default_rng(1)
    df = samples(600, horizon=rng.integers(0, 20, size=600))
    folds = walk_forward(df, n_folds=5, mode=mode, embargo=4 * MINUTE)
    assert len(folds) == 5
    for previous, fold in zip(folds, folds[1:], strict=False):
        assert fold.test_start > previous.test_end
    for fold in folds:
        assert fold.train_end < fold.test_start
        assert fold.train.max() < fold.test.min()
        assert_no_leak(df, fold.train, [fold.test])
        # Embargo before the test block.
        gap = times(df, fold.test[:1]) - times(df, fold.train[-1:])
        assert gap[0] > np.timedelta64(4, "m")


def test_walk_forward_expanding_grows_rolling_stays_fixed():
    df = samples(600, horizon=3)
    expanding = walk_forward(df, n_folds=5, mode="expanding")
    rolling = walk_forward(df, n_folds=5, mode="rolling", train_size=150)
    exp_sizes = [len(f.train) + len(f.purged) + len(f.embargoed) for f in expanding]
    roll_sizes = [len(f.train) + len(f.purged) + len(f.embargoed) for f in rolling]
    assert exp_sizes == [100, 200, 300, 400, 500]
    assert roll_sizes == [100, 150, 150, 150, 150]  # first fold has only 100 rows before it
    assert [len(f.train) for f in expanding] == [97, 197, 297, 397, 497]
    assert all(f.train[0] == 0 for f in expanding)
    assert [f.train[0] for f in rolling][1:] == [50, 150, 250, 350]
    assert [len(f.test) for f in rolling] == [100] * 5


def test_walk_forward_rolling_default_train_size_is_first_chunk():
    folds = walk_forward(samples(60, horizon=0), n_folds=2, mode="rolling")
    assert [len(f.train) for f in folds] == [20, 20]


# --- errors ----------------------------------------------------------------------------------


def test_unsorted_input_is_refused():
    df = samples(20)
    shuffled = pl.concat([df[10:], df[:10]])
    with pytest.raises(SplitError, match="not sorted by decision_time"):
        time_split(shuffled)
    with pytest.raises(SplitError, match="not sorted"):
        combinatorial_purged_cv(shuffled)


def test_overlapping_input_is_refused():
    df = samples(20)
    doubled = pl.concat([df, df]).sort("decision_time")
    with pytest.raises(SplitError, match="overlapping samples"):
        walk_forward(doubled, n_folds=2)


def test_label_before_decision_is_refused():
    df = samples(20).with_columns(known_at=pl.col("decision_time") - MINUTE)
    with pytest.raises(SplitError, match="before its decision_time"):
        time_split(df)


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ((0.6, 0.2, 0.3), "must sum to 1"),
        ((0.5, 0.2, 0.2), "must sum to 1"),
        ((1.2, -0.1, -0.1), r"must be in \[0, 1\]"),
        ((1.0, 0.0, 0.0), "must be > 0"),
    ],
)
def test_fractions_must_sum_to_one(fractions, message):
    with pytest.raises(SplitError, match=message):
        time_split(samples(100), *fractions)


def test_too_few_rows_per_group():
    with pytest.raises(SplitError, match="too few rows per group"):
        combinatorial_purged_cv(samples(5), n_groups=6, k_test=2)
    with pytest.raises(SplitError, match="too few rows per group"):
        walk_forward(samples(3), n_folds=3)


@pytest.mark.parametrize("k", [0, 6, 7])
def test_cpcv_k_out_of_range(k):
    with pytest.raises(SplitError, match="k_test must be"):
        combinatorial_purged_cv(samples(60), n_groups=6, k_test=k)


def test_missing_columns_and_bad_params():
    with pytest.raises(SplitError, match="lack column"):
        time_split(samples(10).drop("known_at"))
    with pytest.raises(SplitError, match="mode must be"):
        walk_forward(samples(10), n_folds=2, mode="sideways")
    with pytest.raises(SplitError, match="train_size applies"):
        walk_forward(samples(10), n_folds=2, train_size=3)
    with pytest.raises(SplitError, match="embargo must be"):
        time_split(samples(10), embargo=-MINUTE)
