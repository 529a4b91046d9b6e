"""Leakage-free time splits: train/validation/test blocks, walk-forward folds and CPCV.

Every function takes a polars frame of samples, one row per sample, with two UTC timestamp
columns:

* ``decision_time`` — the moment the sample's features are complete (close of candle t);
* ``known_at`` — the moment its label becomes known (``known_at >= decision_time``).

A sample therefore occupies the interval ``[decision_time, known_at]``. Rows must be sorted by
``decision_time`` with no duplicates (one symbol / series per call). Blocks are contiguous runs of
rows in time order.

Two rules keep training rows away from held-out rows (DESIGN.md, "Time and leakage rules"):

* **Purging** — a training row whose interval overlaps a held-out block's span
  ``[first decision_time, last known_at]`` is dropped (``"purged"``). So no training label is
  known at or after the start of a later held-out block, and no training row starts before a
  held-out block's labels are all known.
* **Embargo** — a training row whose ``decision_time`` lies within ``embargo`` of a held-out block
  (after its last ``decision_time``, and, symmetrically, before its first) is dropped
  (``"embargoed"``). After the block this is López de Prado's embargo against serial correlation;
  before it, it is the same protection for forward splits (train → test), where nothing trains
  after the test block. Purging wins where both apply.

References: M. López de Prado, *Advances in Financial Machine Learning* (2018), ch. 7 and 12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import combinations
from typing import Literal

import numpy as np
import polars as pl

DECISION = "decision_time"
KNOWN = "known_at"

TRAIN, VALIDATION, TEST = "train", "validation", "test"
PURGED, EMBARGOED = "purged", "embargoed"
SPLIT_LABELS = (TRAIN, VALIDATION, TEST, PURGED, EMBARGOED)


class SplitError(ValueError):
    """Samples or split parameters that cannot give a leakage-free split."""


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: row positions into the samples frame and the time ranges."""

    index: int
    train: np.ndarray  # row positions used for training (after purge and embargo)
    test: np.ndarray  # row positions of the test block
    purged: np.ndarray  # candidate training rows dropped for label overlap
    embargoed: np.ndarray  # candidate training rows dropped by the embargo
    train_start: datetime | None  # first / last decision_time of the training rows
    train_end: datetime | None
    test_start: datetime  # first / last decision_time of the test block
    test_end: datetime


@dataclass(frozen=True)
class CPCVSplit:
    """One combinatorial split: ``test_groups`` held out, the rest trained on."""

    index: int
    test_groups: tuple[int, ...]
    train: np.ndarray
    test: np.ndarray
    purged: np.ndarray
    embargoed: np.ndarray


@dataclass(frozen=True)
class CPCV:
    """Combinatorial purged cross-validation (López de Prado, AFML ch. 12).

    ``splits`` holds C(N, k) splits. ``paths`` holds C(N−1, k−1) backtest paths; each path is a
    list of ``(group, split_index)`` pairs, one per group in time order, naming which split's
    predictions cover that group on that path. Every split appears k times across the paths and
    every (group, split) pair with the group held out is used exactly once.
    """

    n_groups: int
    k_test: int
    groups: list[np.ndarray]  # row positions of each group, in time order
    group_ranges: list[tuple[datetime, datetime]]  # first / last decision_time per group
    splits: list[CPCVSplit]
    paths: list[list[tuple[int, int]]]

    @property
    def n_splits(self) -> int:
        return len(self.splits)

    @property
    def n_paths(self) -> int:
        return len(self.paths)

    def path_test_rows(self, path: int) -> list[tuple[np.ndarray, int]]:
        """For one path: ``(row positions of the group, split index predicting them)``."""
        return [(self.groups[g], s) for g, s in self.paths[path]]


def time_split(
    samples: pl.DataFrame,
    train: float = 0.6,
    validation: float = 0.2,
    test: float = 0.2,
    embargo: timedelta = timedelta(0),
) -> pl.DataFrame:
    """Label each row train / validation / test / purged / embargoed in a column ``split``.

    Blocks follow time order: train, then validation, then test, sized by row fractions. Train
    rows are purged against the validation and test blocks; validation rows against the test
    block. The embargo drops train rows within ``embargo`` before the validation and test blocks,
    and validation rows within ``embargo`` before the test block.
    """
    dec, known = _checked_times(samples)
    _check_fractions(train, validation, test)
    n = len(dec)
    n_train = round(n * train)
    n_val = round(n * validation)
    n_test = n - n_train - n_val
    for name, count, frac in (("train", n_train, train), ("test", n_test, test)):
        if count < 1:
            raise SplitError(f"{name}={frac} of {n} rows gives an empty {name} block")
    if validation > 0 and n_val < 1:
        raise SplitError(f"validation={validation} of {n} rows gives an empty validation block")

    labels = np.array([TRAIN] * n_train + [VALIDATION] * n_val + [TEST] * n_test, dtype=object)
    blocks = [np.arange(n_train + n_val, n)]
    if n_val:
        blocks.insert(0, np.arange(n_train, n_train + n_val))
    # Each block is purged / embargoed against every later block.
    for later in blocks:
        earlier = np.arange(0, later[0])
        earlier = earlier[(labels[earlier] == TRAIN) | (labels[earlier] == VALIDATION)]
        purged, embargoed = _excluded(dec, known, earlier, [later], embargo)
        labels[embargoed] = EMBARGOED
        labels[purged] = PURGED
    return samples.with_columns(pl.Series("split", labels.tolist(), dtype=pl.String))


def walk_forward(
    samples: pl.DataFrame,
    n_folds: int,
    mode: Literal["expanding", "rolling"] = "expanding",
    train_size: int | None = None,
    embargo: timedelta = timedelta(0),
) -> list[Fold]:
    """Walk-forward folds: rows cut into ``n_folds + 1`` time-ordered chunks; fold i tests chunk
    i + 1 and trains on what came before it.

    ``expanding`` trains on all earlier rows; ``rolling`` on the last ``train_size`` rows before
    the test block (default: the size of the first chunk). The window is chosen first, then
    purged and embargoed against the test block, so rolling folds have equal-sized candidate
    windows but may lose a few rows each.
    """
    dec, known = _checked_times(samples)
    if not isinstance(n_folds, int) or n_folds < 1:
        raise SplitError(f"n_folds must be a positive integer, got {n_folds!r}")
    if mode not in ("expanding", "rolling"):
        raise SplitError(f"mode must be 'expanding' or 'rolling', got {mode!r}")
    if mode == "expanding" and train_size is not None:
        raise SplitError("train_size applies to mode='rolling' only; expanding uses all rows")
    chunks = _contiguous_groups(len(dec), n_folds + 1, what="n_folds + 1 chunks")
    if train_size is None:
        train_size = len(chunks[0])
    if train_size < 1:
        raise SplitError(f"train_size must be at least 1 row, got {train_size}")

    folds = []
    for i in range(n_folds):
        test_rows = chunks[i + 1]
        start = 0 if mode == "expanding" else max(0, test_rows[0] - train_size)
        candidates = np.arange(start, test_rows[0])
        purged, embargoed = _excluded(dec, known, candidates, [test_rows], embargo)
        train_rows = np.setdiff1d(candidates, np.concatenate([purged, embargoed]))
        folds.append(
            Fold(
                index=i,
                train=train_rows,
                test=test_rows,
                purged=purged,
                embargoed=embargoed,
                train_start=_at(dec, train_rows[0]) if len(train_rows) else None,
                train_end=_at(dec, train_rows[-1]) if len(train_rows) else None,
                test_start=_at(dec, test_rows[0]),
                test_end=_at(dec, test_rows[-1]),
            )
        )
    return folds


def combinatorial_purged_cv(
    samples: pl.DataFrame,
    n_groups: int = 6,
    k_test: int = 2,
    embargo: timedelta = timedelta(0),
) -> CPCV:
    """Combinatorial purged CV: N contiguous groups, every choice of k as the test set.

    Gives C(N, k) splits and C(N−1, k−1) backtest paths; N=6, k=2 → 15 splits, 5 paths. Training
    rows are purged against, and embargoed after (and before), every held-out group.
    """
    dec, known = _checked_times(samples)
    if not isinstance(n_groups, int) or n_groups < 2:
        raise SplitError(f"n_groups must be an integer ≥ 2, got {n_groups!r}")
    if not isinstance(k_test, int) or not 1 <= k_test < n_groups:
        raise SplitError(f"k_test must be an integer in [1, n_groups={n_groups}), got {k_test!r}")
    groups = _contiguous_groups(len(dec), n_groups, what=f"n_groups={n_groups} groups")

    splits = []
    for index, held_out in enumerate(combinations(range(n_groups), k_test)):
        test_rows = np.concatenate([groups[g] for g in held_out])
        candidates = np.concatenate([groups[g] for g in range(n_groups) if g not in held_out])
        blocks = _runs([groups[g] for g in held_out], held_out)
        purged, embargoed = _excluded(dec, known, candidates, blocks, embargo)
        train_rows = np.setdiff1d(candidates, np.concatenate([purged, embargoed]))
        splits.append(CPCVSplit(index, held_out, train_rows, test_rows, purged, embargoed))

    return CPCV(
        n_groups=n_groups,
        k_test=k_test,
        groups=groups,
        group_ranges=[(_at(dec, g[0]), _at(dec, g[-1])) for g in groups],
        splits=splits,
        paths=_backtest_paths(splits, n_groups, k_test),
    )


# --- helpers -------------------------------------------------------------------------------


def _checked_times(samples: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """decision_time and known_at as int64 microseconds, after checking the input is usable."""
    missing = [c for c in (DECISION, KNOWN) if c not in samples.columns]
    if missing:
        raise SplitError(f"samples lack column(s) {missing}; have {samples.columns}")
    if samples.height == 0:
        raise SplitError("samples is empty")
    for col in (DECISION, KNOWN):
        dtype = samples.schema[col]
        if not isinstance(dtype, pl.Datetime):
            raise SplitError(f"column {col!r} must be a UTC Datetime, got {dtype}")
        nulls = samples[col].null_count()
        if nulls:
            raise SplitError(f"column {col!r} has {nulls} null value(s)")
    times = samples.select(
        pl.col(DECISION).dt.cast_time_unit("us").cast(pl.Int64),
        pl.col(KNOWN).dt.cast_time_unit("us").cast(pl.Int64),
    )
    dec = times[DECISION].to_numpy()
    known = times[KNOWN].to_numpy()
    step = np.diff(dec)
    if (step < 0).any():
        i = int(np.argmax(step < 0))
        raise SplitError(
            f"samples are not sorted by {DECISION}: row {i + 1} ({_at(dec, i + 1)}) comes after "
            f"row {i} ({_at(dec, i)}); sort by {DECISION} first"
        )
    if (step == 0).any():
        i = int(np.argmax(step == 0))
        raise SplitError(
            f"overlapping samples: rows {i} and {i + 1} share {DECISION} {_at(dec, i)}; "
            "split one symbol / series at a time with unique decision times"
        )
    if (known < dec).any():
        i = int(np.argmax(known < dec))
        raise SplitError(
            f"row {i} has {KNOWN} {_at(known, i)} before its {DECISION} {_at(dec, i)}; "
            f"expected {KNOWN} >= {DECISION}"
        )
    return dec, known


def _check_fractions(train: float, validation: float, test: float) -> None:
    fractions = {"train": train, "validation": validation, "test": test}
    for name, value in fractions.items():
        if not 0 <= value <= 1:
            raise SplitError(f"{name} fraction must be in [0, 1], got {value}")
    total = train + validation + test
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise SplitError(
            f"fractions must sum to 1, got train={train} + validation={validation} + "
            f"test={test} = {total}"
        )
    if train == 0 or test == 0:
        raise SplitError(f"train and test fractions must be > 0, got train={train}, test={test}")


def _contiguous_groups(n: int, n_groups: int, what: str) -> list[np.ndarray]:
    if n < n_groups:
        raise SplitError(f"too few rows per group: {n} rows cannot fill {what} (≥ 1 row each)")
    return np.array_split(np.arange(n), n_groups)


def _runs(blocks: list[np.ndarray], ids: tuple[int, ...]) -> list[np.ndarray]:
    """Merge adjacent held-out groups into one block (no embargo between two test groups)."""
    merged: list[np.ndarray] = []
    previous = None
    for block, g in zip(blocks, ids, strict=True):
        if previous is not None and g == previous + 1:
            merged[-1] = np.concatenate([merged[-1], block])
        else:
            merged.append(block)
        previous = g
    return merged


def _excluded(
    dec: np.ndarray,
    known: np.ndarray,
    candidates: np.ndarray,
    blocks: list[np.ndarray],
    embargo: timedelta,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate training rows to purge and to embargo against the held-out ``blocks``."""
    if embargo < timedelta(0):
        raise SplitError(f"embargo must be ≥ 0, got {embargo}")
    gap = embargo // timedelta(microseconds=1)
    d, k = dec[candidates], known[candidates]
    purge = np.zeros(len(candidates), dtype=bool)
    ban = np.zeros(len(candidates), dtype=bool)
    for block in blocks:
        start, end = dec[block[0]], dec[block[-1]]
        span_end = known[block].max()
        purge |= (d <= span_end) & (k >= start)
        if gap:
            ban |= ((d > end) & (d <= end + gap)) | ((d < start) & (d >= start - gap))
    return candidates[purge], candidates[ban & ~purge]


def _backtest_paths(
    splits: list[CPCVSplit], n_groups: int, k_test: int
) -> list[list[tuple[int, int]]]:
    """Path j takes, for every group, the j-th split (in order) that holds that group out."""
    per_group: list[list[int]] = [[] for _ in range(n_groups)]
    for split in splits:
        for g in split.test_groups:
            per_group[g].append(split.index)
    n_paths = math.comb(n_groups - 1, k_test - 1)
    assert all(len(s) == n_paths for s in per_group)
    return [[(g, per_group[g][j]) for g in range(n_groups)] for j in range(n_paths)]


def _at(micros: np.ndarray, i: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros[i]))
