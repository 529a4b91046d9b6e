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
of overlapping windows and labels stays inside each block. The named metrics are computed for
many replicates at once (``bootstrap_replicates``); a metric function is called per replicate.

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

import itertools
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
    return Confusion(*(float(np.sum(cell)) for cell in _confusion_cells(y, p, threshold)))


def _confusion_cells(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """Boolean masks of the true positive, false positive, true negative and false negative
    rows, in ``Confusion``'s order."""
    predicted = p > threshold
    actual = y == 1
    return (predicted & actual, predicted & ~actual, ~predicted & ~actual, ~predicted & actual)


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
    return float(np.mean(_squared_errors(y, p))) if y.size else math.nan


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]."""
    return float(np.mean(_cross_entropies(y, p))) if y.size else math.nan


def _squared_errors(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (p - y) ** 2


def _cross_entropies(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return -(y * np.log(q) + (1 - y) * np.log1p(-q))


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
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must lie in (0, 1), got {alpha}")
    replicates = bootstrap_replicates(y_true, prob, metric, block_len, n_boot, seed)
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size < 2:
        return math.nan, math.nan, math.nan
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), float(np.std(replicates, ddof=1))


def bootstrap_replicates(
    y_true: np.ndarray,
    prob: np.ndarray,
    metric: str | Metric,
    block_len: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """``metric`` on each of the ``n_boot`` replicates ``block_bootstrap_ci`` draws, in draw
    order: NaN where the metric is undefined, empty without rows.

    A function is called on each replicate's rows. A name of ``METRIC_NAMES`` is computed for
    a chunk of replicates at once, from the same draws: the confusion counts, Brier score and
    log loss as sums over each replicate's blocks, AUROC and AUPRC from how often each row was
    drawn. The values equal the function's to rounding (about 1e-15; AUROC and the counts
    exactly), NaN in the same replicates, at several times the speed
    (``bench/bench_bootstrap.py``).
    """
    y, p = check_scores(y_true, prob)
    if isinstance(metric, str):
        metric_function(metric)  # refuses an unknown name
    length = default_block_len(y.size) if block_len is None else block_len
    _check_bootstrap(y.size, length, n_boot)
    if y.size == 0:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    if isinstance(metric, str):
        starts = _block_starts(rng, y.size, length, n_boot)
        return _named_replicates(y, p, metric, starts, length)
    draws = _circular_blocks(rng, y.size, length, n_boot)
    return np.array([metric(y[rows], p[rows]) for rows in draws], dtype=np.float64)


def _check_bootstrap(n_rows: int, block_len: int, n_boot: int) -> None:
    if not 1 <= block_len <= max(n_rows, 1):
        raise EvaluationError(
            f"block_len must be in 1..{max(n_rows, 1)} (the rows), got {block_len}"
        )
    if n_boot < 2:
        raise EvaluationError(f"n_boot must be at least 2, got {n_boot}")


def _circular_blocks(
    rng: np.random.Generator, n_rows: int, block_len: int, n_boot: int
) -> Iterator[np.ndarray]:
    """``n_boot`` arrays of n row indices, one replicate each."""
    offsets = np.arange(block_len)
    for starts in _block_starts(rng, n_rows, block_len, n_boot):
        yield ((starts[:, None] + offsets) % n_rows).ravel()[:n_rows]


def _block_starts(
    rng: np.random.Generator, n_rows: int, block_len: int, n_boot: int
) -> Iterator[np.ndarray]:
    """Each replicate's ``ceil(n / block_len)`` block start rows, drawn one replicate at a time
    (the generator's stream, and so every replicate, depends on it)."""
    blocks = math.ceil(n_rows / block_len)
    for _ in range(n_boot):
        yield rng.integers(0, n_rows, size=blocks)


# A named metric on bootstrap replicates: ``prepare(y, p, block_len)`` does the per-row work
# once and returns a function from a chunk of replicates' block starts (``_block_starts``
# stacked, one replicate a row) to the metric's value on each replicate.
ReplicateScorer = Callable[[np.ndarray], np.ndarray]
PrepareScorer = Callable[[np.ndarray, np.ndarray, int], ReplicateScorer]

# Replicates are scored this many (replicate, row) cells at a time, so memory stays bounded
# however long the series (AUROC and AUPRC, the largest: a 65 MiB peak at 50,000 rows).
_CHUNK_CELLS = 2**21
_THRESHOLD = 0.5  # metric_function's default, which the per-replicate path scores at


def _named_replicates(
    y: np.ndarray, p: np.ndarray, name: str, starts: Iterator[np.ndarray], block_len: int
) -> np.ndarray:
    scorer = _REPLICATE_SCORERS[name](y, p, block_len)
    chunk = max(1, _CHUNK_CELLS // y.size)
    values = []
    while batch := list(itertools.islice(starts, chunk)):
        values.append(scorer(np.stack(batch)))
    return np.concatenate(values)


def _by_confusion(score: Callable[[Confusion], float]) -> PrepareScorer:
    """A confusion-count metric: each replicate's counts summed block by block (exact: they
    are integers), then ``score`` itself on them."""

    def prepare(y: np.ndarray, p: np.ndarray, block_len: int) -> ReplicateScorer:
        cells = np.column_stack(_confusion_cells(y, p, _THRESHOLD)).astype(np.float64)
        totals = _block_totals(cells, block_len)
        return lambda starts: np.array(
            [score(Confusion(*row)) for row in totals(starts).tolist()], dtype=np.float64
        )

    return prepare


def _by_mean(per_row: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> PrepareScorer:
    """The mean of a per-row loss over each replicate's rows, summed block by block."""

    def prepare(y: np.ndarray, p: np.ndarray, block_len: int) -> ReplicateScorer:
        totals = _block_totals(per_row(y, p)[:, None], block_len)
        return lambda starts: totals(starts)[:, 0] / y.size

    return prepare


def _block_totals(values: np.ndarray, block_len: int) -> ReplicateScorer:
    """A function from replicates' block starts to the sums of ``values``' rows (``(n, m)``)
    over each replicate: a replicate is its blocks, the last one cut so that n rows are drawn,
    so its sum is that of its blocks' window sums, looked up by start row."""
    n_rows = values.shape[0]
    cut = n_rows - block_len * (math.ceil(n_rows / block_len) - 1)
    whole, last = _window_sums(values, block_len), _window_sums(values, cut)
    return lambda starts: whole[starts[:, :-1]].sum(axis=1) + last[starts[:, -1]]


def _window_sums(values: np.ndarray, length: int) -> np.ndarray:
    """``values[s : s + length]`` summed (rows, wrapping around the end) for every start row
    s. The rows, twice around, are cut into tiles of ``length``; a window is the end of one
    tile plus the start of the next, each summed from its own side (running sums from the
    tile's end, and from its start), so nothing is subtracted and rounding stays that of
    adding the window's own values. (Differences of running sums over the whole series would
    lose a small window's digits to a large total before it.)"""
    n_rows, columns = values.shape
    tiles = math.ceil(n_rows / length) + 1
    tiled = np.resize(values, (tiles * length, columns)).reshape(tiles, length, columns)
    heads = np.zeros((tiles, length + 1, columns))  # [t, o]: the first o rows of tile t
    np.cumsum(tiled, axis=1, out=heads[:, 1:])
    tails = np.zeros((tiles, length + 1, columns))  # [t, o]: tile t from row o on
    tails[:, :length] = np.cumsum(tiled[:, ::-1], axis=1)[:, ::-1]
    tile, offset = np.divmod(np.arange(n_rows), length)
    return tails[tile, offset] + heads[tile + 1, offset]


class _Ranking(NamedTuple):
    """Each class's rows in ascending probability and, for each positive row, how many rows
    of each class score below it."""

    positives: np.ndarray  # positive rows, ascending probability
    negatives: np.ndarray  # negative rows, ascending probability
    positives_below: np.ndarray  # a positive row's count of positive rows scoring lower
    negatives_below: np.ndarray  # ... of negative rows scoring lower
    negatives_not_above: np.ndarray  # ... of negative rows scoring lower or the same


class _RankedDraws(NamedTuple):
    """A chunk of replicates seen from the positive rows (columns: ``_Ranking.positives``):
    how often each is drawn, and the draws of each class scoring below it, all
    ``(replicates, positive rows)``; and the replicates' positives and negatives drawn."""

    drawn: np.ndarray
    positives_below: np.ndarray
    negatives_below: np.ndarray
    negatives_tied: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


def _by_ranking(statistic: Callable[[_RankedDraws, int], np.ndarray]) -> PrepareScorer:
    """A ranking metric, ``statistic(draws, n_rows)`` of the replicates' ``_RankedDraws``,
    which come from the matrix of how often each row is drawn, taken in probability order."""

    def prepare(y: np.ndarray, p: np.ndarray, block_len: int) -> ReplicateScorer:
        ranking = _ranking(y, p)

        def score(starts: np.ndarray) -> np.ndarray:
            counts = _row_counts(starts, p.size, block_len)
            drawn = np.take(counts, ranking.positives, axis=1)
            positive_sums = _running_sums(drawn)
            negative_sums = _running_sums(np.take(counts, ranking.negatives, axis=1))
            negatives_below = np.take(negative_sums, ranking.negatives_below, axis=1)
            draws = _RankedDraws(
                drawn=drawn,
                positives_below=np.take(positive_sums, ranking.positives_below, axis=1),
                negatives_below=negatives_below,
                negatives_tied=np.take(negative_sums, ranking.negatives_not_above, axis=1)
                - negatives_below,
                positives=positive_sums[:, -1].astype(np.int64),
                negatives=negative_sums[:, -1].astype(np.int64),
            )
            return statistic(draws, p.size)

        return score

    return prepare


def _ranking(y: np.ndarray, p: np.ndarray) -> _Ranking:
    order = np.argsort(p, kind="stable")
    positives, negatives = order[y[order] == 1], order[y[order] == 0]
    scores, negative_scores = p[positives], p[negatives]
    return _Ranking(
        positives,
        negatives,
        np.searchsorted(scores, scores, side="left"),
        np.searchsorted(negative_scores, scores, side="left"),
        np.searchsorted(negative_scores, scores, side="right"),
    )


def _running_sums(counts: np.ndarray) -> np.ndarray:
    """``(replicates, columns + 1)``: column j sums the first j columns of ``counts``."""
    sums = np.zeros((counts.shape[0], counts.shape[1] + 1), dtype=np.int32)
    np.cumsum(counts, axis=1, out=sums[:, 1:])
    return sums


def _row_counts(starts: np.ndarray, n_rows: int, block_len: int) -> np.ndarray:
    """How often each row is drawn in the replicates whose block starts are ``starts``
    (``(replicates, blocks)``), as a ``(replicates, n_rows)`` int32 matrix: what counting
    ``_circular_blocks``' indices gives, without building them. Each replicate is a difference
    array summed up: a block adds 1 at its start and -1 past its end (mod n), and one that
    wraps past the last row adds 1 at row 0 too. The last block is cut so that n rows are
    drawn."""
    replicates, blocks = starts.shape
    lengths = np.full(blocks, block_len)
    lengths[-1] = n_rows - block_len * (blocks - 1)
    ends = starts + lengths
    row0 = np.broadcast_to(n_rows * np.arange(replicates)[:, None], starts.shape)
    size = replicates * n_rows
    rises = np.bincount(np.r_[(starts + row0).ravel(), row0[ends >= n_rows]], minlength=size)
    falls = np.bincount((ends % n_rows + row0).ravel(), minlength=size)
    return np.cumsum((rises - falls).reshape(replicates, n_rows), axis=1, dtype=np.int32)


def _auroc_statistic(draws: _RankedDraws, n_rows: int) -> np.ndarray:
    """``auroc`` with weights: Σ over positives of (negatives below + ½ negatives tied), over
    positives × negatives. The numerator is summed as twice itself, in integers held exactly
    by float64 (below 2^53), so the value is the per-replicate rank statistic's to the bit."""
    ahead = 2.0 * draws.negatives_below + draws.negatives_tied
    twice_u = np.einsum("ij,ij->i", draws.drawn.astype(np.float64), ahead)
    pairs = draws.positives * draws.negatives
    with np.errstate(invalid="ignore"):
        return np.where(pairs > 0, twice_u / 2 / pairs, np.nan)


def _auprc_statistic(draws: _RankedDraws, n_rows: int) -> np.ndarray:
    """``auprc`` with weights: each drawn positive adds (1 / all positives) × the precision
    at its probability, i.e. positives over rows drawn at or above it (every replicate draws
    n rows, so those are n less the rows below); tied positives share that precision, so
    this is the per-replicate sum over distinct probabilities, regrouped."""
    positives = draws.positives[:, None]
    true_positives = positives - draws.positives_below
    seen = n_rows - draws.positives_below - draws.negatives_below
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = draws.drawn / positives * true_positives / seen
        average = np.sum(np.where(draws.drawn > 0, steps, 0.0), axis=1)
    return np.where(draws.positives > 0, average, np.nan)


_REPLICATE_SCORERS: dict[str, PrepareScorer] = {
    "accuracy": _by_confusion(accuracy),
    "precision": _by_confusion(precision),
    "recall": _by_confusion(recall),
    "f1": _by_confusion(f1),
    "mcc": _by_confusion(mcc),
    "auroc": _by_ranking(_auroc_statistic),
    "auprc": _by_ranking(_auprc_statistic),
    "brier": _by_mean(_squared_errors),
    "log_loss": _by_mean(_cross_entropies),
}


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
