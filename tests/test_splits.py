"""Leakage-free calendar splits: counts, purging, embargo, fold ordering, many series, errors."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from dagster_project.core.klines import interval_length
from ml.splits import (
    DEFAULT_EMBARGO_BARS,
    LABEL_HORIZONS,
    SplitError,
    combinatorial_purged_cv,
    edges_over,
    even_edges,
    label_horizon_bars,
    time_split,
    walk_forward,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
NONE = timedelta(0)
DAY = timedelta(days=1)


def samples(n: int, horizon: int | np.ndarray = 5, step: timedelta = MINUTE) -> pl.DataFrame:
    """n samples of one series, one per ``step``, each labelled ``horizon`` steps later."""
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


def series(
    symbol: str,
    days: list[date],
    interval: str = "1m",
    label: str = "next_up_1",
    window_size: int = 5,
    horizon: int | np.ndarray | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """One lake-like series: a sample at every bar close of ``days``, labelled ``horizon`` bars
    later (default: the label's horizon, at least one bar)."""
    bar = interval_length(interval)
    starts = [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days]
    dec = [s + (i + 1) * bar for s in starts for i in range(DAY // bar)]
    if horizon is None:
        horizon = max(LABEL_HORIZONS[label], 1)
    horizons = np.broadcast_to(np.asarray(horizon), (len(dec),))
    return pl.DataFrame(
        {
            "symbol": symbol,
            "interval": interval,
            "dataset": "regular",
            "window_size": window_size,
            "decision_time": dec,
            "label": label,
            "known_at": [d + int(h) * bar for d, h in zip(dec, horizons, strict=True)],
            "value": np.random.default_rng(seed).random(len(dec)),
        },
        schema_overrides={
            "decision_time": pl.Datetime("us", "UTC"),
            "known_at": pl.Datetime("us", "UTC"),
        },
    )


def day(n: int) -> date:
    return date(2024, 3, n)


def at(n: int, hour: int = 0) -> datetime:
    return datetime(2024, 3, n, hour, tzinfo=UTC)


def minute_edges(*minutes: int) -> list[datetime]:
    return [T0 + m * MINUTE for m in minutes]


def us(t: datetime | timedelta) -> int:
    if isinstance(t, timedelta):
        return t // timedelta(microseconds=1)
    return us(t - datetime(1970, 1, 1, tzinfo=UTC))


def epoch(df: pl.DataFrame, col: str = "decision_time") -> np.ndarray:
    return df[col].dt.epoch("us").to_numpy()


def assert_no_leak(
    df: pl.DataFrame,
    train: np.ndarray,
    blocks: list[tuple[datetime, datetime]],
    embargo: timedelta = NONE,
) -> None:
    """Against each held-out block [start, end) of the calendar: no training label is known at
    or after its start, no training row lies within the embargo of it, and no training row after
    it starts before its series' held-out labels are all known."""
    dec, known = epoch(df), epoch(df, "known_at")
    keys = [c for c in ("symbol", "interval") if c in df.columns]
    name = df.select(pl.concat_str(keys)).to_series().to_numpy() if keys else np.zeros(len(dec))
    for start, end in blocks:
        s, e, gap = us(start), us(end), us(embargo)
        before = train[dec[train] < s]
        after = train[dec[train] >= e]
        assert len(before) + len(after) == len(train), "a training row inside a held-out block"
        assert (known[before] < s).all(), "training label known inside a held-out block"
        assert (dec[before] < s - gap).all(), "training row within the embargo before a block"
        assert (dec[after] >= e + gap).all(), "training row within the embargo after a block"
        held = (dec >= s) & (dec < e)
        for key in np.unique(name[after]):
            mine = held & (name == key)
            if mine.any():
                later = after[name[after] == key]
                assert (dec[later] > known[mine].max()).all(), "starts before test labels known"


def runs_of(cv, split) -> list[tuple[datetime, datetime]]:
    """The calendar ranges of a CPCV split's held-out groups, adjacent ones merged."""
    ranges: list[list[datetime]] = []
    for g in split.test_groups:
        start, end = cv.group_ranges[g]
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = end
        else:
            ranges.append([start, end])
    return [(a, b) for a, b in ranges]


# --- edges -----------------------------------------------------------------------------------


def test_even_edges_are_day_aligned_and_as_equal_as_whole_days_allow():
    assert even_edges(day(1), day(7), 3) == [at(1), at(3), at(5), at(7)]
    assert even_edges(day(1), day(8), 3) == [at(1), at(4), at(6), at(8)]  # 3 + 2 + 2 days
    # A range that starts or ends inside a day is widened to whole days.
    assert even_edges(at(1, 13), at(3, 1), 3) == [at(1), at(2), at(3), at(4)]
    assert even_edges(T0, T0 + 90 * MINUTE, 3, unit=MINUTE) == minute_edges(0, 30, 60, 90)


def test_edges_over_cover_every_sample():
    frame = pl.concat([series("BTCUSDT", [day(1), day(2)]), series("ETHUSDT", [day(4)])])
    edges = edges_over(frame, 2)
    # The last bar close of 03-04 is 03-05 00:00, so the range runs to 03-06.
    assert edges == [at(1), at(4), at(6)]
    assert edges_over(samples(600), 6, unit=MINUTE) == minute_edges(*range(0, 601, 100))


def test_even_edges_refuse_more_blocks_than_units():
    with pytest.raises(SplitError, match="2 unit.* cannot make 3 blocks"):
        even_edges(day(1), day(3), 3)
    with pytest.raises(SplitError, match="n_blocks must be a positive integer"):
        even_edges(day(1), day(3), 0)


# --- CPCV ------------------------------------------------------------------------------------


def test_cpcv_six_groups_two_test_gives_15_splits_and_5_paths():
    cv = combinatorial_purged_cv(samples(600), edges_over(samples(600), 6, MINUTE), embargo=NONE)
    assert cv.n_splits == 15
    assert cv.n_paths == 5
    assert len({s.test_groups for s in cv.splits}) == 15
    assert cv.group_ranges[0] == (T0, T0 + 100 * MINUTE)


@pytest.mark.parametrize(("n", "k"), [(3, 1), (4, 2), (5, 3), (7, 2), (8, 3), (10, 4)])
def test_cpcv_counts_are_binomial(n, k):
    df = samples(n * 20)
    cv = combinatorial_purged_cv(df, edges_over(df, n, MINUTE), k_test=k, embargo=NONE)
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
    cv = combinatorial_purged_cv(df, edges_over(df, 6, MINUTE), embargo=NONE)
    assert np.array_equal(np.concatenate(cv.groups), np.arange(103))
    assert [len(g) for g in cv.groups] == [18, 17, 17, 17, 17, 17]
    for split in cv.splits:
        everything = np.concatenate([split.train, split.test, split.purged, split.embargoed])
        assert np.array_equal(np.sort(everything), np.arange(103))


def test_cpcv_rows_outside_the_edges_take_no_part():
    df = samples(120)
    cv = combinatorial_purged_cv(df, minute_edges(10, 40, 70, 100), k_test=1, embargo=NONE)
    assert np.array_equal(np.concatenate(cv.groups), np.arange(10, 100))
    for split in cv.splits:
        used = np.concatenate([split.train, split.test, split.purged, split.embargoed])
        assert used.min() >= 10 and used.max() < 100


@pytest.mark.parametrize("seed", range(8))
def test_cpcv_no_training_label_reaches_a_test_block_random_horizons(seed):
    rng = np.random.default_rng(seed)
    df = samples(300, horizon=rng.integers(0, 40, size=300))
    cv = combinatorial_purged_cv(df, edges_over(df, 6, MINUTE), embargo=3 * MINUTE)
    for split in cv.splits:
        assert len(split.train) > 0
        assert_no_leak(df, split.train, runs_of(cv, split), embargo=3 * MINUTE)


def test_cpcv_embargo_after_each_test_block():
    df = samples(600, horizon=1)
    cv = combinatorial_purged_cv(df, edges_over(df, 6, MINUTE), embargo=10 * MINUTE)
    dec = epoch(df)
    for split in cv.splits:
        for _start, end in runs_of(cv, split):
            train_after = dec[split.train][dec[split.train] >= us(end)]
            if len(train_after):
                # Tight: the first training row after the block is the first past the embargo.
                assert train_after.min() == us(end + 10 * MINUTE)
        assert len(split.embargoed) > 0


def test_cpcv_without_embargo_purges_only_overlaps():
    df = samples(120, horizon=0)  # labels known at decision time: nothing overlaps
    cv = combinatorial_purged_cv(df, edges_over(df, 6, MINUTE), embargo=NONE)
    for split in cv.splits:
        assert len(split.purged) == 0 and len(split.embargoed) == 0
        assert len(split.train) + len(split.test) == 120


@pytest.mark.parametrize("seed", range(4))
def test_cpcv_over_series_with_different_coverage(seed):
    """Three symbols over different days: the groups are one calendar for all of them, and no
    training row of any symbol reaches any held-out block."""
    rng = np.random.default_rng(seed)
    frame = pl.concat(
        [
            series("BTCUSDT", [day(n) for n in range(1, 7)], horizon=rng.integers(1, 40, 8640)),
            series("ETHUSDT", [day(5), day(6)], horizon=rng.integers(1, 40, 2880)),
            series("SOLUSDT", [day(2), day(3)], interval="1h", label="tb_30", window_size=30),
        ]
    ).sample(fraction=1.0, shuffle=True, seed=seed)  # any row order
    cv = combinatorial_purged_cv(frame, even_edges(day(1), day(7), 6))
    assert [r[0] for r in cv.group_ranges] == [at(n) for n in range(1, 7)]
    sol = (frame["symbol"] == "SOLUSDT").to_numpy()
    embargo = np.where(sol, 30 * 3600, 30 * 60) * 1_000_000  # 30 bars of each row's interval
    for split in cv.splits:
        assert len(split.train) > 0
        blocks = runs_of(cv, split)
        for rows, gap in ((split.train[~sol[split.train]], 30 * MINUTE), (split.train, NONE)):
            assert_no_leak(frame, rows, blocks, embargo=gap)
        # 1h rows are embargoed 30 hours around a block.
        dec = epoch(frame)
        for start, end in blocks:
            near = (dec[split.train] >= us(start) - embargo[split.train]) & (
                dec[split.train] < us(end) + embargo[split.train]
            )
            assert not near.any()


# --- time_split ------------------------------------------------------------------------------


def test_time_split_blocks_follow_the_calendar_with_expected_sizes():
    out = time_split(samples(1000, horizon=5), T0 + 600 * MINUTE, T0 + 800 * MINUTE, embargo=NONE)
    assert out.columns[-1] == "split"
    labels = out["split"].to_list()
    assert set(labels) <= {"train", "validation", "test", "purged", "embargoed"}
    assert labels.count("test") == 200
    assert labels.count("validation") == 195 and labels.count("train") == 595
    assert labels.count("purged") == 10  # 5 train rows known in validation, 5 validation in test
    idx = {k: [i for i, v in enumerate(labels) if v == k] for k in ("train", "validation", "test")}
    assert max(idx["train"]) < min(idx["validation"]) and max(idx["validation"]) < min(idx["test"])


@pytest.mark.parametrize("seed", range(8))
def test_time_split_no_label_reaches_later_block_random_horizons(seed):
    rng = np.random.default_rng(seed)
    df = samples(500, horizon=rng.integers(0, 30, size=500))
    val, test = T0 + 250 * MINUTE, T0 + 375 * MINUTE
    out = time_split(df, val, test, embargo=2 * MINUTE)
    split = out["split"].to_numpy()
    train = np.where(split == "train")[0]
    validation = np.where(split == "validation")[0]
    end = T0 + 500 * MINUTE
    assert_no_leak(out, train, [(val, test), (test, end)], embargo=2 * MINUTE)
    assert_no_leak(out, validation, [(test, end)], embargo=2 * MINUTE)


def test_time_split_embargo_length_respected():
    df = samples(1000, horizon=1)
    out = time_split(df, T0 + 600 * MINUTE, T0 + 800 * MINUTE, embargo=15 * MINUTE)
    dec = epoch(out)
    split = out["split"].to_numpy()
    assert dec[split == "train"].max() == us(T0 + 584 * MINUTE)
    assert dec[split == "validation"].max() == us(T0 + 784 * MINUTE)
    # The 15 rows before each cut: the last one purged (known at the cut), 14 embargoed.
    assert (split == "embargoed").sum() == 2 * 14
    assert (split == "purged").sum() == 2


def test_time_split_without_validation():
    out = time_split(samples(100, horizon=0), None, T0 + 70 * MINUTE, embargo=NONE)
    assert out["split"].value_counts().sort("split").rows() == [("test", 30), ("train", 70)]


def test_time_split_keeps_rows_and_columns():
    df = samples(50)
    out = time_split(df, T0 + 20 * MINUTE, T0 + 35 * MINUTE, embargo=NONE)
    assert out.drop("split").equals(df)


def test_time_split_leaves_out_rows_outside_train_start_and_test_end():
    df = samples(100, horizon=0)
    out = time_split(
        df,
        T0 + 40 * MINUTE,
        T0 + 60 * MINUTE,
        train_start=T0 + 10 * MINUTE,
        test_end=T0 + 90 * MINUTE,
        embargo=NONE,
    )
    assert out.drop("split").equals(df[10:90])
    assert out["split"].value_counts().sort("split").rows() == [
        ("test", 30),
        ("train", 30),
        ("validation", 20),
    ]


def test_time_split_does_not_depend_on_row_order():
    rng = np.random.default_rng(3)
    df = samples(400, horizon=rng.integers(0, 20, size=400))
    cuts = (T0 + 200 * MINUTE, T0 + 300 * MINUTE)
    ordered = time_split(df, *cuts, embargo=5 * MINUTE)
    shuffled = time_split(df.sample(fraction=1.0, shuffle=True, seed=1), *cuts, embargo=5 * MINUTE)
    assert shuffled.sort("decision_time").equals(ordered)


def multi_series() -> pl.DataFrame:
    """BTC over four days, ETH on the last only, SOL on the middle two at 5m with tb_15."""
    return pl.concat(
        [
            series("BTCUSDT", [day(n) for n in range(1, 5)]),
            series("ETHUSDT", [day(4)], seed=1),
            series("SOLUSDT", [day(2), day(3)], interval="5m", label="tb_15", window_size=15),
        ]
    )


def test_time_split_cuts_every_series_on_one_calendar():
    frame = multi_series()
    val, test = at(3), at(4, 6)
    out = time_split(frame, val, test)
    for (symbol,), rows in out.group_by("symbol"):
        # Each series is split exactly as it would be alone: the calendar is shared, not cut
        # by each series' own rows.
        alone = time_split(frame.filter(pl.col("symbol") == symbol), val, test)
        assert rows.sort("decision_time").equals(alone), symbol
    train, validation, test_rows = (out.filter(pl.col("split") == s) for s in SPLITS[:3])
    first_test = test_rows["decision_time"].min()
    assert first_test == test  # BTC's and ETH's bar closing at the cut
    assert train["known_at"].max() < val and validation["known_at"].max() < test
    assert train["known_at"].max() < first_test
    # 30 bars of each series' interval before each cut are left out.
    gap = pl.col("interval").replace_strict({"1m": 30, "5m": 150}, return_dtype=pl.Int64)
    before_val = train.filter(pl.col("decision_time") >= pl.lit(val) - pl.duration(minutes=gap))
    assert before_val.height == 0
    assert validation.filter(
        pl.col("decision_time") >= pl.lit(test) - pl.duration(minutes=gap)
    ).is_empty()
    eth = dict(out.filter(pl.col("symbol") == "ETHUSDT").group_by("split").len().rows())
    # 00:01 .. 05:29 validation, 05:30 .. 05:58 embargoed, 05:59 purged, 06:00 .. 24:00 test
    assert eth == {"validation": 329, "embargoed": 29, "purged": 1, "test": 18 * 60 + 1}


SPLITS = ("train", "validation", "test", "purged", "embargoed")


def test_embargo_bars_are_counted_in_each_rows_interval():
    frame = pl.concat(
        [
            series("BTCUSDT", [day(1), day(2)]),
            series("BTCUSDT", [day(1), day(2)], interval="1h", label="next_up_1", window_size=5),
        ]
    )
    out = time_split(frame, None, at(2, 12), embargo_bars=6)
    train = out.filter(pl.col("split") == "train")
    last_train = dict(train.group_by("interval").agg(pl.col("decision_time").max()).rows())
    assert last_train == {"1m": at(2, 12) - 7 * MINUTE, "1h": at(2, 12) - timedelta(hours=7)}


# --- walk_forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["expanding", "rolling"])
def test_walk_forward_folds_ordered_test_after_train(mode):
    rng = np.random.default_rng(1)
    df = samples(600, horizon=rng.integers(0, 20, size=600))
    edges = minute_edges(*range(100, 601, 100))
    folds = walk_forward(df, edges, mode=mode, embargo=4 * MINUTE)
    assert len(folds) == 5
    for previous, fold in zip(folds, folds[1:], strict=False):
        assert fold.test_start == previous.test_end
    for fold, (start, end) in zip(folds, zip(edges, edges[1:], strict=False), strict=True):
        assert (fold.test_start, fold.test_end, fold.train_end) == (start, end, start)
        assert fold.train.max() < fold.test.min()
        assert_no_leak(df, fold.train, [(start, end)], embargo=4 * MINUTE)
        assert np.array_equal(fold.test, np.arange(us(start - T0) // 60_000_000, len(df))[:100])


def test_walk_forward_expanding_grows_rolling_stays_fixed():
    df = samples(600, horizon=3)
    edges = minute_edges(*range(100, 601, 100))
    expanding = walk_forward(df, edges, embargo=NONE)
    rolling = walk_forward(df, edges, "rolling", train_window=150 * MINUTE, embargo=NONE)
    exp_sizes = [len(f.train) + len(f.purged) + len(f.embargoed) for f in expanding]
    roll_sizes = [len(f.train) + len(f.purged) + len(f.embargoed) for f in rolling]
    assert exp_sizes == [100, 200, 300, 400, 500]
    assert roll_sizes == [100, 150, 150, 150, 150]  # first fold has only 100 rows before it
    assert [len(f.train) for f in expanding] == [97, 197, 297, 397, 497]
    assert all(f.train[0] == 0 and f.train_start is None for f in expanding)
    assert [f.train[0] for f in rolling][1:] == [50, 150, 250, 350]
    assert rolling[1].train_start == T0 + 50 * MINUTE
    assert [len(f.test) for f in rolling] == [100] * 5


def test_walk_forward_rolling_default_window_is_the_first_test_block():
    folds = walk_forward(samples(60, horizon=0), minute_edges(20, 40, 60), "rolling", embargo=NONE)
    assert [len(f.train) for f in folds] == [20, 20]


def test_walk_forward_over_series_with_different_coverage():
    frame = multi_series()
    folds = walk_forward(frame, even_edges(day(2), day(5), 3))
    dec, known = epoch(frame), epoch(frame, "known_at")
    for fold in folds:
        start, end = us(fold.test_start), us(fold.test_end)
        # The test block holds every series' rows of its days, whoever has them.
        assert np.array_equal(fold.test, np.flatnonzero((dec >= start) & (dec < end)))
        assert (known[fold.train] < start).all()
    assert "ETHUSDT" in set(frame[folds[2].test]["symbol"])
    assert set(frame[folds[2].train]["symbol"]) == {"BTCUSDT", "SOLUSDT"}  # ETH has no past


# --- the embargo must cover the label and the window -----------------------------------------


def test_default_embargo_covers_the_longest_horizon_and_window():
    assert DEFAULT_EMBARGO_BARS == 30
    assert label_horizon_bars("tb_30") == 30 and label_horizon_bars("next_up_5") == 5
    assert label_horizon_bars("leaky_window_up_30") == 0  # leakage controls look at no future
    assert label_horizon_bars("leaky_last_candle_up") == 0


@pytest.mark.parametrize(
    ("frame_kw", "split_kw", "message"),
    [
        ({"window_size": 30}, {"embargo": 10 * MINUTE}, "1 bars ahead and its window holds 30"),
        ({"window_size": 5}, {"embargo_bars": 10, "label": "tb_30"}, "label 'tb_30' looks 30"),
        ({"label": "fwd_logret_15"}, {"embargo_bars": 10}, "at least 15 bars of 1m"),
        ({"interval": "5m"}, {"embargo": 10 * MINUTE}, r"at least 5 bars of 5m \(0:25:00\)"),
    ],
)
def test_an_embargo_shorter_than_the_horizon_or_window_is_refused(frame_kw, split_kw, message):
    frame = series("BTCUSDT", [day(1)], **frame_kw)
    with pytest.raises(SplitError, match=message):
        time_split(frame, at(1, 8), at(1, 16), **split_kw)
    with pytest.raises(SplitError, match=message):
        walk_forward(frame, [at(1, 8), at(1, 16)], **split_kw)
    with pytest.raises(SplitError, match=message):
        combinatorial_purged_cv(frame, [at(1, 0), at(1, 8), at(1, 16)], 1, **split_kw)


def test_a_long_enough_embargo_and_a_leakage_control_pass():
    frame = series("BTCUSDT", [day(1)], window_size=15)
    time_split(frame, at(1, 8), at(1, 16), embargo_bars=15)
    time_split(frame, at(1, 8), at(1, 16), embargo_bars=15, label="leaky_window_up_30")
    with pytest.raises(SplitError, match="unknown label 'next_up_2'"):
        time_split(frame, at(1, 8), at(1, 16), label="next_up_2")


def test_an_embargo_in_bars_needs_the_interval():
    with pytest.raises(SplitError, match="no 'interval' column.*pass embargo= as a timedelta"):
        time_split(samples(20), T0 + 5 * MINUTE, T0 + 10 * MINUTE)
    with pytest.raises(SplitError, match="horizon of label='tb_5' cannot be turned into time"):
        time_split(samples(20), T0 + 5 * MINUTE, T0 + 10 * MINUTE, embargo=NONE, label="tb_5")


# --- errors ----------------------------------------------------------------------------------


def test_one_series_with_a_decision_time_twice_is_refused_two_series_are_not():
    df = samples(20)
    with pytest.raises(SplitError, match="overlapping samples"):
        walk_forward(pl.concat([df, df]), minute_edges(10, 20), embargo=NONE)
    two = pl.concat([df.with_columns(symbol=pl.lit(s)) for s in ("BTCUSDT", "ETHUSDT")])
    assert len(walk_forward(two, minute_edges(10, 20), embargo=NONE)[0].test) == 20


def test_label_before_decision_is_refused():
    df = samples(20).with_columns(known_at=pl.col("decision_time") - MINUTE)
    with pytest.raises(SplitError, match="before its decision_time"):
        time_split(df, T0 + 5 * MINUTE, T0 + 10 * MINUTE, embargo=NONE)


def test_times_must_be_utc_without_nulls():
    naive = samples(10).with_columns(pl.col("decision_time").dt.replace_time_zone(None))
    with pytest.raises(SplitError, match="'decision_time' must be a UTC Datetime"):
        time_split(naive, T0 + 5 * MINUTE, T0 + 8 * MINUTE, embargo=NONE)
    nulls = samples(10).with_columns(known_at=pl.lit(None, pl.Datetime("us", "UTC")))
    with pytest.raises(SplitError, match="'known_at' has 10 null"):
        time_split(nulls, T0 + 5 * MINUTE, T0 + 8 * MINUTE, embargo=NONE)


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ((T0 + 8 * MINUTE, T0 + 5 * MINUTE), "out of order: validation_start .* before test_start"),
        ((T0 + 5 * MINUTE, T0 + 5 * MINUTE), "out of order"),
        ((datetime(2024, 1, 1, 0, 5), T0 + 8 * MINUTE), "must be a timezone-aware datetime"),
    ],
)
def test_cut_times_must_be_aware_and_ordered(cuts, message):
    with pytest.raises(SplitError, match=message):
        time_split(samples(10), *cuts, embargo=NONE)
    with pytest.raises(SplitError, match="out of order: train_start"):
        time_split(samples(10), None, T0 + 5 * MINUTE, train_start=T0 + 6 * MINUTE, embargo=NONE)


def test_empty_groups_and_test_blocks_are_refused():
    with pytest.raises(SplitError, match=r"group 2 \[2024-01-01 00:20:00\+00:00, .*holds no"):
        combinatorial_purged_cv(samples(20), minute_edges(0, 10, 20, 30), embargo=NONE)
    with pytest.raises(SplitError, match="fold 1's test block .* holds no samples"):
        walk_forward(samples(20), minute_edges(10, 20, 30), embargo=NONE)
    with pytest.raises(SplitError, match="must increase: edge 2"):
        walk_forward(samples(20), minute_edges(5, 10, 10), embargo=NONE)
    with pytest.raises(SplitError, match="at least 2 groups"):
        combinatorial_purged_cv(samples(20), minute_edges(0, 10), 1, embargo=NONE)


@pytest.mark.parametrize("k", [0, 6, 7])
def test_cpcv_k_out_of_range(k):
    with pytest.raises(SplitError, match="k_test must be"):
        combinatorial_purged_cv(samples(60), edges_over(samples(60), 6, MINUTE), k, embargo=NONE)


def test_missing_columns_and_bad_params():
    cuts = (T0 + 3 * MINUTE, T0 + 6 * MINUTE)
    with pytest.raises(SplitError, match="lack column"):
        time_split(samples(10).drop("known_at"), *cuts, embargo=NONE)
    with pytest.raises(SplitError, match="mode must be"):
        walk_forward(samples(10), list(cuts), mode="sideways", embargo=NONE)
    with pytest.raises(SplitError, match="train_window applies"):
        walk_forward(samples(10), list(cuts), train_window=MINUTE, embargo=NONE)
    with pytest.raises(SplitError, match="embargo must be"):
        time_split(samples(10), *cuts, embargo=-MINUTE)
    with pytest.raises(SplitError, match="not both"):
        time_split(samples(10), *cuts, embargo=MINUTE, embargo_bars=1)
