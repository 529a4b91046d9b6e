"""How good a binary up/down predictor is: metrics, block-bootstrap confidence intervals and the
naive baselines every model is reported beside.

``classification_metrics`` scores probabilities of the positive class (``up``) against 0/1
labels: accuracy, precision, recall, F1, AUROC, AUPRC, MCC, Brier score and log loss, with the
number of rows and the positive rate. A row is predicted positive when its probability is above
the threshold (``prob > threshold``, as scikit-learn's and torchmetrics' binary classifiers do).
Degenerate inputs never raise; they give these values:

- no rows: every metric NaN, ``n_rows`` 0;
- one class only in ``y_true``: AUROC and MCC NaN (no pair to rank, no correlation); recall
  NaN when there is no positive; AUPRC NaN when there is no positive and 1.0 when every row is;
- no positive prediction: precision NaN; F1 is ``2·tp / (2·tp + fp + fn)``, so 0.0 when
  there are positives to miss and NaN only when there are neither positives nor positive
  predictions;
- every prediction one class while ``y_true`` has both: MCC 0.0 (a constant predictor carries no
  information; scikit-learn's value too).

``block_bootstrap_ci`` resamples rows in time order by circular blocks, so the serial dependence
of overlapping windows and labels stays inside each block.

The baselines (``MajorityClass``, ``Persistence``, ``LogisticReturns``) share the interface
``fit(windows, labels) -> self`` and ``predict_proba(windows) -> np.ndarray``. Their input is
the ``WindowBatch`` that ``ml.window_data.load_windows`` returns, i.e. the candles the image
models are drawn from, with labels as a 0/1 array in the same row order. ``shuffled_labels``
builds the shuffled-label control's training labels.

``ml.train.predict_proba`` scores an image model over a lake image dataset: the rows in time
order with their up probabilities and labels, ready for these metrics and the block bootstrap.
This module needs no torch, so the catalog and the CLI can import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import numpy as np

from dagster_project.core.errors import InvalidRequestError
from ml.rendering import WindowBatch

LOG_LOSS_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps] before the log loss
METRIC_NAMES = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "auroc",
    "auprc",
    "mcc",
    "brier",
    "log_loss",
)

Metric = Callable[[np.ndarray, np.ndarray], float]


class EvaluationError(InvalidRequestError):
    """Labels or probabilities that cannot be scored, or bad evaluation parameters."""


# --- metrics -------------------------------------------------------------------------------


def classification_metrics(
    y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Every metric of ``METRIC_NAMES`` plus ``n_rows`` and ``positive_rate`` (module docstring
    for the degenerate cases)."""
    y, p = check_scores(y_true, prob)
    if y.size == 0:
        return {name: math.nan for name in METRIC_NAMES} | {"n_rows": 0, "positive_rate": math.nan}
    counts = confusion(y, p, threshold)
    return {
        "accuracy": accuracy(counts),
        "precision": precision(counts),
        "recall": recall(counts),
        "f1": f1(counts),
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
        "mcc": mcc(counts),
        "brier": brier(y, p),
        "log_loss": log_loss(y, p),
        "n_rows": int(y.size),
        "positive_rate": float(y.mean()),
    }


def check_scores(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as a 0/1 int array and ``prob`` as floats in [0, 1], both 1-D and equally long."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise EvaluationError(
            f"y_true and prob must be 1-D arrays of one length, got shapes {y.shape} and {p.shape}"
        )
    outside = p[~((p >= 0.0) & (p <= 1.0))]
    if outside.size:
        raise EvaluationError(f"probabilities must lie in [0, 1], got {outside[:5].tolist()}")
    return binary_labels(y), p


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as a 0/1 int array; anything else (NaN, 2, -1) is an error."""
    y = np.asarray(labels, dtype=np.float64)
    bad = np.setdiff1d(np.unique(y), [0.0, 1.0])
    if bad.size:
        raise EvaluationError(f"labels must be 0 or 1, got {bad[:5].tolist()}")
    return y.astype(np.int64)


class Confusion(NamedTuple):
    tp: float  # true positives
    fp: float  # false positives
    tn: float  # true negatives
    fn: float  # false negatives


def confusion(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> Confusion:
    predicted = p > threshold
    actual = y == 1
    cells = (predicted & actual, predicted & ~actual, ~predicted & ~actual, ~predicted & actual)
    return Confusion(*(float(np.sum(cell)) for cell in cells))


def accuracy(c: Confusion) -> float:
    return _ratio(c.tp + c.tn, c.tp + c.fp + c.tn + c.fn)


def precision(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fn)


def f1(c: Confusion) -> float:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def mcc(c: Confusion) -> float:
    """Matthews correlation; NaN with one class in ``y_true``, 0.0 for a constant prediction."""
    if c.tp + c.fn == 0 or c.tn + c.fp == 0:
        return math.nan
    denominator = (c.tp + c.fp) * (c.tp + c.fn) * (c.tn + c.fp) * (c.tn + c.fn)
    if denominator == 0:
        return 0.0
    return (c.tp * c.tn - c.fp * c.fn) / math.sqrt(denominator)


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """The Mann-Whitney rank statistic: the chance that a random positive scores above a random
    negative, a tie counting one half (tied scores share their average rank)."""
    positives = int(np.sum(y == 1))
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = float(np.sum(average_ranks(p)[y == 1]))
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2)[inverse]


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision as scikit-learn defines it: the sum over distinct score thresholds,
    highest first, of (recall gained) × (precision at that threshold); tied scores are one
    threshold. NaN without positives."""
    positives = int(np.sum(y == 1))
    if positives == 0:
        return math.nan
    order = np.argsort(-p, kind="stable")
    scores, hits = p[order], y[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(hits)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    recall_steps = np.diff(tp, prepend=0) / positives
    return float(np.sum(recall_steps * tp / seen))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]."""
    if y.size == 0:
        return math.nan
    q = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def metric_function(name: str, threshold: float = 0.5) -> Metric:
    """The metric ``name`` of ``METRIC_NAMES`` as a function of ``(y_true, prob)``."""
    by_rank = {"auroc": auroc, "auprc": auprc, "brier": brier, "log_loss": log_loss}
    by_count = {
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mcc": mcc,
    }
    if name in by_rank:
        return by_rank[name]
    if name in by_count:
        score = by_count[name]
        return lambda y, p: score(confusion(y, p, threshold))
    raise EvaluationError(f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")


# --- block bootstrap -----------------------------------------------------------------------


def default_block_len(n_rows: int, dependence: int = 1) -> int:
    """ceil(√n), and at least ``dependence`` rows (pass the longer of the window size and the
    label horizon in bars: rows closer than that share candles or label bars). √n is on the long
    side of the usual n^(1/3) rule, so CIs err wide rather than narrow under dependence."""
    return max(dependence, math.ceil(math.sqrt(max(n_rows, 1))))


def block_bootstrap_ci(
    y_true: np.ndarray,
    prob: np.ndarray,
    metric: str | Metric,
    block_len: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(low, high, standard error)`` of ``metric`` by a circular block bootstrap.

    Rows must be in time (decision_time) order. Each replicate concatenates blocks of
    ``block_len`` consecutive rows (``default_block_len(n)`` when None) starting at uniformly
    drawn rows, wrapping around the end, cut to n rows (Politis & Romano's circular bootstrap:
    every row is drawn equally often). The interval is the percentile interval of the
    replicates; replicates where the metric is undefined (NaN, e.g. one class only) are left
    out, and all three values are NaN when no replicate is defined. ``block_len=1`` is the iid
    bootstrap. ``metric`` is a name of ``METRIC_NAMES`` or a function ``(y_true, prob) -> float``.
    """
    y, p = check_scores(y_true, prob)
    score = metric_function(metric) if isinstance(metric, str) else metric
    length = default_block_len(y.size) if block_len is None else block_len
    _check_bootstrap(y.size, length, n_boot, alpha)
    if y.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    replicates = np.array(
        [score(y[rows], p[rows]) for rows in _circular_blocks(rng, y.size, length, n_boot)]
    )
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size < 2:
        return math.nan, math.nan, math.nan
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), float(np.std(replicates, ddof=1))


def _check_bootstrap(n_rows: int, block_len: int, n_boot: int, alpha: float) -> None:
    if not 1 <= block_len <= max(n_rows, 1):
        raise EvaluationError(
            f"block_len must be in 1..{max(n_rows, 1)} (the rows), got {block_len}"
        )
    if n_boot < 2:
        raise EvaluationError(f"n_boot must be at least 2, got {n_boot}")
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must lie in (0, 1), got {alpha}")


def _circular_blocks(
    rng: np.random.Generator, n_rows: int, block_len: int, n_boot: int
) -> Iterator[np.ndarray]:
    """``n_boot`` arrays of n row indices, one replicate each."""
    blocks = math.ceil(n_rows / block_len)
    offsets = np.arange(block_len)
    for _ in range(n_boot):
        starts = rng.integers(0, n_rows, size=blocks)
        yield ((starts[:, None] + offsets) % n_rows).ravel()[:n_rows]


# --- baselines -----------------------------------------------------------------------------


class Baseline(Protocol):
    """A model of the windows' candles, reported beside the image models on the same rows."""

    def fit(self, windows: WindowBatch, labels: np.ndarray) -> Baseline: ...

    def predict_proba(self, windows: WindowBatch) -> np.ndarray: ...


class MajorityClass:
    """Predicts the training rows' positive rate for every row: their majority class at the
    0.5 threshold (an exact tie predicts down) and the climatological probability for Brier
    score and log loss."""

    def fit(self, windows: WindowBatch, labels: np.ndarray) -> MajorityClass:
        self.positive_rate_ = float(_check_labels(windows, labels).mean())
        return self

    def predict_proba(self, windows: WindowBatch) -> np.ndarray:
        return np.full(windows.size, self.positive_rate_)


class Persistence:
    """The last candle's direction goes on: 1.0 when its close is above its open, 0.0 below,
    0.5 for a doji (close = open). Nothing is learned; the last candle is never dropped."""

    def fit(self, windows: WindowBatch, labels: np.ndarray) -> Persistence:
        _check_labels(windows, labels)
        return self

    def predict_proba(self, windows: WindowBatch) -> np.ndarray:
        return 0.5 + 0.5 * np.sign(windows.close[:, -1] - windows.open[:, -1])


class LogisticReturns:
    """L2-penalised logistic regression on the window's log returns (``window_returns``),
    standardised by means and deviations of the training rows only, fit by Newton's method.

    The objective is the summed log loss plus ``l2 / 2`` times the squared weights (the
    intercept is not penalised). Newton steps stop when the largest change of a coefficient is
    below ``tol`` or after ``max_iter`` steps.
    """

    def __init__(self, l2: float = 1.0, max_iter: int = 50, tol: float = 1e-8) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, windows: WindowBatch, labels: np.ndarray) -> LogisticReturns:
        y = _check_labels(windows, labels)
        features = window_returns(windows)
        self.mean_ = features.mean(axis=0)
        deviation = features.std(axis=0)
        self.scale_ = np.where(deviation > 0, deviation, 1.0)
        self.coef_ = _newton_logistic(self._design(features), y, self.l2, self.max_iter, self.tol)
        return self

    def predict_proba(self, windows: WindowBatch) -> np.ndarray:
        return _sigmoid(self._design(window_returns(windows)) @ self.coef_)

    def _design(self, features: np.ndarray) -> np.ndarray:
        """Standardised features with a leading column of ones for the intercept."""
        standard = (features - self.mean_) / self.scale_
        return np.hstack([np.ones((features.shape[0], 1)), standard])


def window_returns(windows: WindowBatch) -> np.ndarray:
    """``(windows, candles)`` log returns of the visible closes: candle i's close over the
    previous visible close, the first visible candle's over its own open. A dropped candle
    (irregular datasets) returns 0 and the next visible one carries the whole move, as the
    image shows it."""
    visible = windows.present.astype(bool)
    first = np.argmax(visible, axis=1)
    base = windows.open[np.arange(windows.size), first]
    closes = np.hstack([base[:, None], np.where(visible, windows.close, np.nan)])
    return np.diff(np.log(_forward_fill(closes)), axis=1)


def shuffled_labels(labels: np.ndarray, seed: int, train: np.ndarray | None = None) -> np.ndarray:
    """The shuffled-label control's labels: ``labels`` with the rows where ``train`` is True
    (every row when None) randomly permuted among themselves; other rows keep their labels, so
    validation and test rows are scored on the truth."""
    shuffled = np.array(labels, copy=True)
    if train is not None and np.shape(train) != shuffled.shape[:1]:
        raise EvaluationError(
            f"train mask has shape {np.shape(train)}, expected ({shuffled.shape[0]},)"
        )
    rows = np.arange(shuffled.shape[0]) if train is None else np.flatnonzero(train)
    shuffled[rows] = shuffled[np.random.default_rng(seed).permutation(rows)]
    return shuffled


BASELINES: dict[str, type[Baseline]] = {
    "majority": MajorityClass,
    "persistence": Persistence,
    "logistic_returns": LogisticReturns,
}


def _check_labels(windows: WindowBatch, labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (windows.size,):
        raise EvaluationError(f"{y.shape} labels for {windows.size} windows; expected one each")
    if y.size == 0:
        raise EvaluationError("no training rows to fit a baseline on")
    return binary_labels(y)


def _newton_logistic(
    x: np.ndarray, y: np.ndarray, l2: float, max_iter: int, tol: float
) -> np.ndarray:
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0  # the intercept
    coef = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = _sigmoid(x @ coef)
        gradient = x.T @ (p - y) + penalty * coef
        # a tiny ridge keeps the Hessian invertible when l2 is 0 and a feature is constant
        hessian = (x.T * (p * (1 - p))) @ x + np.diag(penalty + 1e-10)
        step = np.linalg.solve(hessian, gradient)
        coef -= step
        if np.max(np.abs(step)) < tol:
            break
    return coef


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(z / 2))  # exact and overflow-free for any z


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last non-NaN value to its left in its row (column 0 has none)."""
    index = np.where(np.isnan(values), 0, np.arange(values.shape[1]))
    np.maximum.accumulate(index, axis=1, out=index)
    return np.take_along_axis(values, index, axis=1)
