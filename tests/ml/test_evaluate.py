"""ml.evaluate: metrics against hand-computed values, the block bootstrap, the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml import evaluate
from ml.evaluate import (
    BASELINES,
    METRIC_NAMES,
    EvaluationError,
    LogisticReturns,
    MajorityClass,
    Persistence,
    block_bootstrap_ci,
    bootstrap_replicates,
    classification_metrics,
    default_block_len,
    metric_function,
    shuffled_labels,
    window_returns,
)
from ml.rendering import WindowBatch

# --- helpers -------------------------------------------------------------------------------


def batch(open_: np.ndarray, close: np.ndarray, present: np.ndarray | None = None) -> WindowBatch:
    """A WindowBatch of the given opens and closes; highs/lows bracket them, volume 1."""
    open_, close = np.atleast_2d(open_).astype(float), np.atleast_2d(close).astype(float)
    return WindowBatch(
        open=open_,
        high=np.maximum(open_, close) + 1,
        low=np.minimum(open_, close) - 1,
        close=close,
        volume=np.ones_like(close),
        present=np.ones(close.shape, bool) if present is None else np.atleast_2d(present),
    )


def batch_from_returns(returns: np.ndarray) -> WindowBatch:
    """Windows whose candles open at the previous close and whose log returns are ``returns``."""
    closes = 100 * np.exp(np.cumsum(returns, axis=1))
    opens = np.hstack([np.full((returns.shape[0], 1), 100.0), closes[:, :-1]])
    return batch(opens, closes)


def planted(rng: np.random.Generator, rows: int, candles: int = 5, scale: float = 1e-3):
    """Windows of iid returns and labels 'up' driven by the second-to-last return plus noise."""
    returns = rng.normal(0, scale, (rows, candles))
    labels = (returns[:, -2] + rng.normal(0, scale / 2, rows) > 0).astype(float)
    return batch_from_returns(returns), labels


def scores_with_auroc(rng: np.random.Generator, rows: int, separation: float):
    """Labels and scores whose population AUROC is Φ(separation / √2)."""
    y = rng.integers(0, 2, rows)
    score = 1 / (1 + np.exp(-(separation * y + rng.normal(size=rows))))
    return y, score


def true_auroc(separation: float) -> float:
    return 0.5 * (1 + math.erf(separation / 2))


# --- metrics -------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])  # at 0.5: tp 1, fp 0, tn 2, fn 1
    m = classification_metrics(y, p)
    assert m["accuracy"] == 0.75
    assert m["precision"] == 1.0
    assert m["recall"] == 0.5
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["mcc"] == pytest.approx(2 / math.sqrt(1 * 2 * 2 * 3))
    assert m["auroc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs in order
    assert m["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # hits at ranks 1 and 3
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    )
    assert m["n_rows"] == 4 and m["positive_rate"] == 0.5
    assert set(METRIC_NAMES) | {"n_rows", "positive_rate"} == set(m)


def test_threshold_moves_the_confusion_counts_not_the_ranking():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(y, p, threshold=0.3)  # every row but the first is positive
    assert (m["accuracy"], m["precision"], m["recall"]) == (0.75, pytest.approx(2 / 3), 1.0)
    assert m["auroc"] == pytest.approx(0.75)


def test_auroc_and_auprc_with_tied_scores():
    y = np.array([1, 0, 1, 0, 1])  # a positive first within each tie: row order must not count
    p = np.array([0.2, 0.2, 0.5, 0.5, 0.9])
    m = classification_metrics(y, p)
    # pairs (positive vs negative): 0.2 vs {0.2 tie, 0.5} = 0.5; 0.5 vs {0.2, 0.5 tie} = 1.5;
    # 0.9 vs both = 2 → 4 of 6
    assert m["auroc"] == pytest.approx(4 / 6)
    # thresholds 0.9 / 0.5 / 0.2: recall 1/3, 2/3, 1 at precision 1, 2/3, 3/5
    assert m["auprc"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5)


def test_ties_give_the_same_scores_in_any_row_order():
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.7, 0.7, 0.7, 0.2, 0.2, 0.9])
    flipped = classification_metrics(y[::-1], p[::-1])
    assert classification_metrics(y, p) == pytest.approx(flipped)


def test_a_probability_at_the_threshold_is_predicted_down():
    m = classification_metrics(np.array([0, 1]), np.array([0.5, 0.5]))
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["accuracy"] == 0.5
    at = classification_metrics(np.array([0, 1]), np.array([0.4, 0.4]), threshold=0.4)
    assert math.isnan(at["precision"]) and at["recall"] == 0.0 and at["accuracy"] == 0.5


def test_constant_scores_rank_at_chance():
    y = np.array([1, 0, 1, 1, 0])
    m = classification_metrics(y, np.full(5, 0.3))
    assert m["auroc"] == 0.5
    assert m["auprc"] == pytest.approx(0.6)  # one threshold: precision = positive rate
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["mcc"] == 0.0


def test_perfect_and_inverted_predictors():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    perfect = classification_metrics(y, y * 0.8 + 0.1)
    assert perfect["accuracy"] == perfect["f1"] == perfect["mcc"] == 1.0
    assert perfect["auroc"] == perfect["auprc"] == 1.0
    assert perfect["brier"] == pytest.approx(0.01)
    inverted = classification_metrics(y, 0.9 - y * 0.8)
    assert inverted["accuracy"] == inverted["auroc"] == 0.0
    assert inverted["mcc"] == -1.0


def test_random_predictor_is_at_chance():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 20_000)
    m = classification_metrics(y, rng.uniform(size=y.size))
    assert m["auroc"] == pytest.approx(0.5, abs=0.02)
    assert m["auprc"] == pytest.approx(m["positive_rate"], abs=0.02)
    assert m["accuracy"] == pytest.approx(0.5, abs=0.02)
    assert m["mcc"] == pytest.approx(0.0, abs=0.03)
    assert m["brier"] == pytest.approx(1 / 3, abs=0.01)  # E(u - y)² for u ~ U(0, 1)


def test_log_loss_is_clipped_not_infinite():
    m = classification_metrics(np.array([1, 0]), np.array([0.0, 1.0]))
    # both rows sure and wrong: each costs -log(eps), up to the rounding of 1 - eps
    assert m["log_loss"] == pytest.approx(-(math.log(1e-15) + math.log1p(-(1 - 1e-15))) / 2)
    assert m["log_loss"] == pytest.approx(-math.log(1e-15), rel=1e-4)


def test_one_class_only_gives_documented_values():
    ones = classification_metrics(np.ones(4), np.array([0.2, 0.6, 0.7, 0.9]))
    assert math.isnan(ones["auroc"]) and math.isnan(ones["mcc"])
    assert ones["auprc"] == 1.0 and ones["recall"] == 0.75 and ones["precision"] == 1.0
    zeros = classification_metrics(np.zeros(4), np.array([0.2, 0.6, 0.7, 0.9]))
    assert math.isnan(zeros["auroc"]) and math.isnan(zeros["auprc"])
    assert math.isnan(zeros["recall"]) and zeros["precision"] == 0.0 and zeros["f1"] == 0.0
    nothing = classification_metrics(np.zeros(3), np.full(3, 0.1))
    assert math.isnan(nothing["f1"]) and nothing["accuracy"] == 1.0


def test_no_rows_give_nan_metrics():
    m = classification_metrics(np.array([]), np.array([]))
    assert m["n_rows"] == 0
    assert all(math.isnan(m[name]) for name in (*METRIC_NAMES, "positive_rate"))


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 2], [0.1, 0.2], r"labels must be 0 or 1, got \[2.0\]"),
        ([0, float("nan")], [0.1, 0.2], "labels must be 0 or 1, got \\[nan\\]"),
        ([0, 1], [0.1, 1.5], r"probabilities must lie in \[0, 1\], got \[1.5\]"),
        ([0, 1], [0.1, float("nan")], "probabilities must lie in"),
        ([0, 1], [0.1], r"shapes \(2,\) and \(1,\)"),
    ],
)
def test_bad_scores_are_refused(y, p, message):
    with pytest.raises(EvaluationError, match=message):
        classification_metrics(np.array(y), np.array(p))


# --- block bootstrap -----------------------------------------------------------------------


def test_bootstrap_ci_covers_the_true_auroc_most_of_the_time():
    rng = np.random.default_rng(7)
    truth = true_auroc(1.0)
    covered = 0
    for trial in range(40):
        y, p = scores_with_auroc(rng, 200, 1.0)
        low, high, se = block_bootstrap_ci(y, p, "auroc", n_boot=200, seed=trial)
        covered += low <= truth <= high
        assert 0 < se < high - low
    assert covered >= 32  # nominal 95 %: 38 of 40 expected


def test_bootstrap_ci_narrows_with_more_rows():
    rng = np.random.default_rng(3)
    small = block_bootstrap_ci(*scores_with_auroc(rng, 200, 0.5), "auroc", n_boot=300)
    large = block_bootstrap_ci(*scores_with_auroc(rng, 3200, 0.5), "auroc", n_boot=300)
    assert large[1] - large[0] < (small[1] - small[0]) / 2  # ~ 1/√16 = 1/4 expected
    assert large[2] < small[2] / 2


def test_block_bootstrap_is_wider_than_iid_on_autocorrelated_rows():
    """Right and wrong predictions come in runs of 25 rows (a regime): the iid bootstrap sees
    1000 independent rows, the block bootstrap about 40 independent runs."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1000)
    right = np.repeat(rng.integers(0, 2, 40), 25).astype(bool)
    p = np.where(right, y, 1 - y) * 0.6 + 0.2
    iid = block_bootstrap_ci(y, p, "accuracy", block_len=1, n_boot=400)
    blocks = block_bootstrap_ci(y, p, "accuracy", block_len=50, n_boot=400)
    assert blocks[2] > 2.5 * iid[2]  # √25 = 5 expected
    assert blocks[1] - blocks[0] > 2.5 * (iid[1] - iid[0])


def test_bootstrap_is_seeded_and_takes_a_metric_function():
    y, p = scores_with_auroc(np.random.default_rng(0), 300, 1.0)
    assert block_bootstrap_ci(y, p, "auroc", seed=4, n_boot=100) == block_bootstrap_ci(
        y, p, lambda a, b: classification_metrics(a, b)["auroc"], seed=4, n_boot=100
    )
    assert block_bootstrap_ci(y, p, "auroc", seed=4, n_boot=100) != block_bootstrap_ci(
        y, p, "auroc", seed=5, n_boot=100
    )


def test_bootstrap_of_an_undefined_metric_is_nan():
    assert all(math.isnan(v) for v in block_bootstrap_ci(np.ones(20), np.full(20, 0.7), "auroc"))
    assert all(math.isnan(v) for v in block_bootstrap_ci(np.array([]), np.array([]), "auroc"))


def replicate_inputs(case: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels, probabilities and a block length that stress the vectorised replicates."""
    rng = np.random.default_rng(len(case))
    if case == "tied_probabilities":  # 503 rows: not a multiple of the block length
        y, p = scores_with_auroc(rng, 503, 0.8)
        return y, np.round(p, 1), 23
    if case == "probabilities_0_or_1":
        y = rng.integers(0, 2, 300)
        return y, np.where(rng.random(300) < 0.7, y, 1 - y).astype(float), 17
    if case == "rare_positive_run":  # many replicates hold no positive, some no negative
        y = np.zeros(60, int)
        y[:5] = 1
        return y, rng.random(60), 20
    if case == "all_one_class":
        return np.ones(40, int), np.round(rng.random(40), 1), 7
    if case == "tiny":
        return np.array([1, 0, 1]), np.array([0.5, 0.5, 0.9]), 2
    if case == "iid":
        y, p = scores_with_auroc(rng, 200, 1.0)
        return y, p, 1
    if case == "one_block":
        y, p = scores_with_auroc(rng, 150, 1.0)
        return y, np.round(p, 2), 150
    raise AssertionError(case)


REPLICATE_CASES = (
    "tied_probabilities",
    "probabilities_0_or_1",
    "rare_positive_run",
    "all_one_class",
    "tiny",
    "iid",
    "one_block",
)


@pytest.mark.parametrize("chunk_cells", [evaluate._CHUNK_CELLS, 1000])
@pytest.mark.parametrize("case", REPLICATE_CASES)
@pytest.mark.parametrize("name", METRIC_NAMES)
def test_named_replicates_equal_the_per_replicate_metric(name, case, chunk_cells, monkeypatch):
    """The vectorised path (a named metric) against the metric function called on each
    replicate's rows; NaN where, and only where, the replicate's metric is undefined. 1000
    cells a chunk puts a handful of replicates in each chunk, the last one short."""
    monkeypatch.setattr(evaluate, "_CHUNK_CELLS", chunk_cells)
    y, p, block_len = replicate_inputs(case)
    named = bootstrap_replicates(y, p, name, block_len, n_boot=60, seed=11)
    reference = bootstrap_replicates(y, p, metric_function(name), block_len, n_boot=60, seed=11)
    assert named.shape == (60,)
    np.testing.assert_allclose(named, reference, rtol=1e-12, atol=1e-12)


def test_some_replicates_are_undefined_in_the_rare_positive_case():
    """The NaN comparison above is not vacuous: that input gives both defined and undefined
    replicates of the metrics that need both classes."""
    y, p, block_len = replicate_inputs("rare_positive_run")
    for name in ("auroc", "recall", "mcc"):
        undefined = np.isnan(bootstrap_replicates(y, p, name, block_len, n_boot=60, seed=11))
        assert 0 < undefined.sum() < 60, name


@pytest.mark.parametrize(("n_rows", "block_len"), [(1, 1), (7, 3), (10, 5), (10, 10), (97, 12)])
def test_row_counts_count_the_circular_blocks_indices(n_rows, block_len):
    starts = list(evaluate._block_starts(np.random.default_rng(2), n_rows, block_len, 30))
    rows = evaluate._circular_blocks(np.random.default_rng(2), n_rows, block_len, 30)
    expected = np.stack([np.bincount(r, minlength=n_rows) for r in rows])
    counts = evaluate._row_counts(np.stack(starts), n_rows, block_len)
    assert counts.dtype == np.int32
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize(("n_rows", "length"), [(1, 1), (10, 3), (10, 10), (2000, 45)])
def test_window_sums_keep_their_digits_beside_large_values(n_rows, length):
    """Each circular window's sum as np.sum gives it, also for small windows after a run of
    huge values: differences of running sums (over the series, or over a tile) would carry
    the rounding of the large running total into those windows (1e-9..1e-6 here)."""
    rng = np.random.default_rng(n_rows)
    values = rng.random(n_rows) + np.where(np.arange(n_rows) < n_rows // 2, 1e7, 0.0)
    laps = np.r_[values, values]
    expected = [np.sum(laps[s : s + length]) for s in range(n_rows)]
    sums = evaluate._window_sums(values[:, None], length)[:, 0]
    np.testing.assert_allclose(sums, expected, rtol=1e-13, atol=0)


def test_named_and_function_metrics_give_the_same_intervals_on_a_long_series():
    """50,000 rows (the research's longest test sets): the block sums of the additive metrics
    keep their digits, and the ranking metrics' counts are chunked."""
    y, p = scores_with_auroc(np.random.default_rng(8), 50_000, 0.6)
    p = np.where(np.arange(p.size) % 97 == 0, 1.0, p)  # some rows at the log-loss clip
    for name in ("log_loss", "brier", "auroc", "auprc", "f1"):
        named = block_bootstrap_ci(y, p, name, block_len=224, n_boot=20, seed=3)
        reference = block_bootstrap_ci(y, p, metric_function(name), 224, n_boot=20, seed=3)
        np.testing.assert_allclose(named, reference, rtol=1e-12, atol=1e-12, err_msg=name)


def test_default_block_len_is_root_n_but_at_least_the_dependence():
    assert default_block_len(10_000) == 100
    assert default_block_len(101) == 11
    assert default_block_len(100, dependence=30) == 30


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_len": 0}, r"block_len must be in 1..10 \(the rows\), got 0"),
        ({"block_len": 11}, "got 11"),
        ({"n_boot": 1}, "n_boot must be at least 2, got 1"),
        ({"alpha": 1.0}, r"alpha must lie in \(0, 1\), got 1.0"),
        ({"metric": "auc"}, "unknown metric 'auc'; expected one of accuracy"),
    ],
)
def test_bad_bootstrap_parameters_are_refused(kwargs, message):
    args = {"metric": "auroc"} | kwargs
    with pytest.raises(EvaluationError, match=message):
        block_bootstrap_ci(np.arange(10) % 2, np.linspace(0, 1, 10), **args)


# --- baselines -----------------------------------------------------------------------------


def test_majority_class_predicts_the_training_majority_on_any_test_rows():
    train = batch(np.ones((4, 3)), np.ones((4, 3)))
    model = MajorityClass().fit(train, np.array([1, 1, 1, 0]))
    test = batch(np.ones((5, 3)), np.ones((5, 3)))
    test_labels = np.array([0, 0, 0, 0, 1])  # the test majority is down
    prob = model.predict_proba(test)
    assert np.array_equal(prob, np.full(5, 0.75))
    m = classification_metrics(test_labels, prob)
    assert m["recall"] == 1.0 and m["accuracy"] == 0.2  # every row called up


def test_persistence_follows_the_last_candle():
    opens = np.array([[10.0, 11.0, 12.0], [10.0, 11.0, 12.0], [10.0, 9.0, 12.0]])
    closes = np.array([[9.0, 8.0, 13.0], [11.0, 12.0, 11.5], [10.0, 9.0, 12.0]])
    windows = batch(opens, closes)
    model = Persistence().fit(windows, np.array([0, 1, 0]))
    assert model.predict_proba(windows).tolist() == [1.0, 0.0, 0.5]  # up, down, doji


def test_window_returns_use_the_visible_candles():
    opens = np.array([[10.0, 11.0, 12.0, 13.0]] * 2)
    closes = np.array([[11.0, 12.0, 13.0, 14.0]] * 2)
    present = np.array([[True, False, True, True], [False, True, True, True]])
    returns = window_returns(batch(opens, closes, present))
    assert returns[0] == pytest.approx(np.log([11 / 10, 1.0, 13 / 11, 14 / 13]))
    assert returns[1] == pytest.approx(np.log([1.0, 12 / 11, 13 / 12, 14 / 13]))


def test_logistic_returns_learns_a_planted_signal():
    rng = np.random.default_rng(11)
    train, train_labels = planted(rng, 2000)
    test, test_labels = planted(rng, 1000)
    model = LogisticReturns().fit(train, train_labels)
    assert classification_metrics(test_labels, model.predict_proba(test))["auroc"] > 0.8
    assert np.argmax(np.abs(model.coef_[1:])) == 3  # the informative return


def test_logistic_returns_is_standardised_on_the_training_rows_only():
    """A test batch from another regime (10× the volatility) is scored with the training mean
    and scale, row by row: a row's probability does not depend on the rows beside it."""
    rng = np.random.default_rng(12)
    train, train_labels = planted(rng, 500)
    test, _ = planted(rng, 50, scale=1e-2)
    model = LogisticReturns().fit(train, train_labels)
    assert model.mean_ == pytest.approx(window_returns(train).mean(axis=0))
    assert model.scale_ == pytest.approx(window_returns(train).std(axis=0))
    together = model.predict_proba(test)
    alone = np.concatenate([model.predict_proba(test.take(slice(i, i + 1))) for i in range(50)])
    assert together == pytest.approx(alone, abs=1e-12)
    assert model.mean_ == pytest.approx(window_returns(train).mean(axis=0))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_gives_one_probability_per_window(name):
    rng = np.random.default_rng(2)
    windows, labels = planted(rng, 40)
    prob = BASELINES[name]().fit(windows, labels).predict_proba(windows)
    assert prob.shape == (40,) and np.all((prob >= 0) & (prob <= 1))
    with pytest.raises(EvaluationError, match=r"labels must be 0 or 1, got \[nan\]"):
        BASELINES[name]().fit(windows, np.where(np.arange(40) == 3, np.nan, labels))
    with pytest.raises(EvaluationError, match=r"\(39,\) labels for 40 windows"):
        BASELINES[name]().fit(windows, labels[:39])


def test_shuffled_labels_permute_the_training_rows_only():
    labels = np.arange(20.0)
    train = np.arange(20) < 12
    shuffled = shuffled_labels(labels, seed=3, train=train)
    assert np.array_equal(shuffled[~train], labels[~train])
    assert sorted(shuffled[train]) == sorted(labels[train])
    assert not np.array_equal(shuffled[train], labels[train])
    assert np.array_equal(shuffled, shuffled_labels(labels, seed=3, train=train))
    assert not np.array_equal(shuffled, shuffled_labels(labels, seed=4, train=train))
    assert sorted(shuffled_labels(labels, seed=3)) == sorted(labels)
    with pytest.raises(EvaluationError, match=r"train mask has shape \(19,\), expected \(20,\)"):
        shuffled_labels(labels, seed=3, train=train[:19])
