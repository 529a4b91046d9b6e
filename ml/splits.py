"""Leakage-free time splits on a calendar: train/validation/test, walk-forward folds and CPCV.

Every function takes a polars frame of samples, one row per sample, with two UTC timestamp
columns:

* ``decision_time`` — the moment the sample's features are complete (close of candle t);
* ``known_at`` — the moment its label becomes known (``known_at >= decision_time``).

The frame may hold many series (symbols, intervals, datasets, window sizes: the ``SERIES``
columns it has), in any order and with any date coverage. Blocks are periods of the calendar,
half-open ``[start, end)`` ranges of ``decision_time`` given as datetimes, and the same for every
series: a model trained on several symbols never trains inside another symbol's test period.
``even_edges`` and ``edges_over`` make evenly spaced edges aligned to whole days (or any unit).

Two rules keep training rows away from held-out rows (docs/time_and_leakage.md):

* **Purging** — a candidate training row before a held-out block whose label is known at or
  after the block's start is dropped (``"purged"``); so is one after the block that starts
  before every held-out label of its own series is known (CPCV).
* **Embargo** — a candidate training row whose ``decision_time`` lies within the embargo before a
  held-out block's start, or within the embargo after its end, is dropped (``"embargoed"``).
  After the block this is López de Prado's embargo against serial correlation; before it, the
  same protection for forward splits. Purging wins where both apply.

The embargo is per row: a duration (``embargo=``), or bars of the row's ``interval``
(``embargo_bars=``, default ``DEFAULT_EMBARGO_BARS``: the longest label horizon and the longest
window, from ``transform.labels`` and ``transform.windows``). An embargo shorter than a row
needs is refused with a ``SplitError``: the horizon of the label trained on (the ``label``
column, or ``label=`` when the model trains on another label) and the window length
(``window_size``), in bars of the row's interval.

References: M. López de Prado, *Advances in Financial Machine Learning* (2018), ch. 7 and 12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import combinations
from typing import Literal

import numpy as np
import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import interval_length
from dagster_project.transform.labels import LABEL_SPECS
from dagster_project.transform.windows import WINDOW_SIZES

DECISION = "decision_time"
KNOWN = "known_at"

TRAIN, VALIDATION, TEST = "train", "validation", "test"
PURGED, EMBARGOED = "purged", "embargoed"
SPLIT_LABELS = (TRAIN, VALIDATION, TEST, PURGED, EMBARGOED)

# Columns that tell series apart, where the frame has them.
SERIES = ("symbol", "interval", "dataset", "window_size")

# Bars each label looks ahead of its decision time; leakage controls look at none.
LABEL_HORIZONS: dict[str, int] = {
    name: 0 if spec.is_leaky else horizon
    for spec in LABEL_SPECS
    for name, horizon in zip(spec.names, spec.horizons or (0,), strict=True)
}
# The default embargo: at least the longest label horizon and the longest window.
DEFAULT_EMBARGO_BARS = max(*LABEL_HORIZONS.values(), *WINDOW_SIZES)

DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
_NEVER = np.iinfo(np.int64).max  # an open end of the calendar


class SplitError(InvalidRequestError):
    """Samples or split parameters that cannot give a leakage-free split."""


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: row positions into the samples frame and its calendar.

    Training candidates are the rows with ``train_start <= decision_time < train_end``
    (``train_start`` None: from the first sample); the test block is
    ``test_start <= decision_time < test_end``.
    """

    index: int
    train: np.ndarray  # row positions used for training (after purge and embargo)
    test: np.ndarray  # row positions of the test block
    purged: np.ndarray  # candidate training rows dropped for label overlap
    embargoed: np.ndarray  # candidate training rows dropped by the embargo
    train_start: datetime | None
    train_end: datetime  # == test_start
    test_start: datetime
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
    groups: list[np.ndarray]  # row positions of each group, in time order of the groups
    group_ranges: list[tuple[datetime, datetime]]  # [start, end) of each group
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
    validation_start: datetime | None,
    test_start: datetime,
    *,
    train_start: datetime | None = None,
    test_end: datetime | None = None,
    embargo: timedelta | None = None,
    embargo_bars: int | None = None,
    label: str | None = None,
) -> pl.DataFrame:
    """The samples in ``[train_start, test_end)``, each labelled train / validation / test /
    purged / embargoed in a column ``split``.

    Train is ``[train_start, validation_start)``, validation ``[validation_start, test_start)``
    (none when ``validation_start`` is None), test ``[test_start, test_end)``; ``None`` ends are
    open. Rows outside ``[train_start, test_end)`` are left out: they are no samples of this
    split. Train rows are purged and embargoed against the validation and test blocks, validation
    rows against the test block. A block may be empty (its days not landed yet).
    """
    _checked_times(samples)
    lo, val, test, hi = _checked_cuts(
        ("train_start", train_start),
        ("validation_start", validation_start),
        ("test_start", test_start),
        ("test_end", test_end),
    )
    lo = -_NEVER if lo is None else lo
    hi = _NEVER if hi is None else hi
    inside = pl.col(DECISION).dt.epoch("us").is_between(lo, hi, closed="left")
    kept = samples.filter(inside)
    rows = _prepared(kept, embargo, embargo_bars, label)

    split = np.where(rows.dec < test, TRAIN, TEST).astype(object)
    if val is not None:
        split[(rows.dec >= val) & (rows.dec < test)] = VALIDATION
    cuts = [(val, test), (test, hi)] if val is not None else [(test, hi)]
    for start, end in cuts:
        candidates = np.flatnonzero(((split == TRAIN) | (split == VALIDATION)) & (rows.dec < start))
        purged, embargoed = _excluded(rows, candidates, [(start, end)])
        split[embargoed] = EMBARGOED
        split[purged] = PURGED
    return kept.with_columns(pl.Series("split", split.tolist(), dtype=pl.String))


def walk_forward(
    samples: pl.DataFrame,
    test_edges: Sequence[datetime],
    mode: Literal["expanding", "rolling"] = "expanding",
    *,
    train_window: timedelta | None = None,
    train_start: datetime | None = None,
    embargo: timedelta | None = None,
    embargo_bars: int | None = None,
    label: str | None = None,
) -> list[Fold]:
    """Walk-forward folds on a calendar: fold i tests ``[test_edges[i], test_edges[i + 1])`` and
    trains on the rows before ``test_edges[i]``.

    ``expanding`` trains on every earlier row (from ``train_start`` if given); ``rolling`` on the
    rows within ``train_window`` before the test block (default: the first test block's length).
    The window is chosen first, then purged and embargoed against the test block. Every test
    block must hold samples.
    """
    edges = _checked_edges(test_edges, "test_edges")
    if mode not in ("expanding", "rolling"):
        raise SplitError(f"mode must be 'expanding' or 'rolling', got {mode!r}")
    if mode == "expanding" and train_window is not None:
        raise SplitError("train_window applies to mode='rolling' only; expanding uses all rows")
    window = edges[1] - edges[0] if train_window is None else _us(train_window)
    if window <= 0:
        raise SplitError(f"train_window must be positive, got {train_window}")
    first = -_NEVER if train_start is None else _checked_cuts(("train_start", train_start))[0]
    rows = _prepared(samples, embargo, embargo_bars, label)

    folds = []
    for i, (start, end) in enumerate(zip(edges, edges[1:], strict=False)):
        test_rows = _rows_in(rows, start, end, f"fold {i}'s test block")
        lo = max(first, start - window) if mode == "rolling" else first
        candidates = np.flatnonzero((rows.dec >= lo) & (rows.dec < start))
        purged, embargoed = _excluded(rows, candidates, [(start, end)])
        folds.append(
            Fold(
                index=i,
                train=np.setdiff1d(candidates, np.concatenate([purged, embargoed])),
                test=test_rows,
                purged=purged,
                embargoed=embargoed,
                train_start=None if lo == -_NEVER else _at(lo),
                train_end=_at(start),
                test_start=_at(start),
                test_end=_at(end),
            )
        )
    return folds


def combinatorial_purged_cv(
    samples: pl.DataFrame,
    group_edges: Sequence[datetime],
    k_test: int = 2,
    *,
    embargo: timedelta | None = None,
    embargo_bars: int | None = None,
    label: str | None = None,
) -> CPCV:
    """Combinatorial purged CV: N calendar groups ``[group_edges[g], group_edges[g + 1])``, every
    choice of k as the test set; rows outside ``[group_edges[0], group_edges[-1])`` take no part.

    Gives C(N, k) splits and C(N−1, k−1) backtest paths; N=6, k=2 → 15 splits, 5 paths. Training
    rows are purged against, and embargoed before and after, every held-out run of adjacent
    groups. Every group must hold samples.
    """
    edges = _checked_edges(group_edges, "group_edges")
    n_groups = len(edges) - 1
    if n_groups < 2:
        raise SplitError(f"group_edges must give at least 2 groups, got {n_groups}")
    if not isinstance(k_test, int) or not 1 <= k_test < n_groups:
        raise SplitError(f"k_test must be an integer in [1, n_groups={n_groups}), got {k_test!r}")
    rows = _prepared(samples, embargo, embargo_bars, label)
    groups = [
        _rows_in(rows, start, end, f"group {g}")
        for g, (start, end) in enumerate(zip(edges, edges[1:], strict=False))
    ]

    splits = []
    for index, held_out in enumerate(combinations(range(n_groups), k_test)):
        test_rows = np.sort(np.concatenate([groups[g] for g in held_out]))
        candidates = np.sort(
            np.concatenate([groups[g] for g in range(n_groups) if g not in held_out])
        )
        blocks = [(edges[first], edges[last + 1]) for first, last in _runs(held_out)]
        purged, embargoed = _excluded(rows, candidates, blocks)
        train_rows = np.setdiff1d(candidates, np.concatenate([purged, embargoed]))
        splits.append(CPCVSplit(index, held_out, train_rows, test_rows, purged, embargoed))

    return CPCV(
        n_groups=n_groups,
        k_test=k_test,
        groups=groups,
        group_ranges=[(_at(a), _at(b)) for a, b in zip(edges, edges[1:], strict=False)],
        splits=splits,
        paths=_backtest_paths(splits, n_groups, k_test),
    )


def even_edges(
    start: datetime | date, end: datetime | date, n_blocks: int, unit: timedelta = DAY
) -> list[datetime]:
    """``n_blocks + 1`` edges from ``start`` (floored to a whole ``unit`` since 1970-01-01 UTC)
    to ``end`` (ceiled likewise, exclusive): blocks of whole units, as equal as the units allow.

    A date means its 00:00 UTC. ``even_edges(date(2024, 3, 1), date(2024, 3, 7), 3)`` gives
    2024-03-01, 03-03, 03-05 and 03-07 00:00 UTC.
    """
    if not isinstance(n_blocks, int) or n_blocks < 1:
        raise SplitError(f"n_blocks must be a positive integer, got {n_blocks!r}")
    step = _us(unit)
    if step <= 0:
        raise SplitError(f"unit must be positive, got {unit}")
    first = _cut_us("start", _as_datetime(start)) // step
    last = -(-_cut_us("end", _as_datetime(end)) // step)
    if last - first < n_blocks:
        raise SplitError(
            f"{last - first} unit(s) of {unit} from {_at(first * step)} to {_at(last * step)} "
            f"cannot make {n_blocks} blocks of at least one unit"
        )
    sizes = [len(chunk) for chunk in np.array_split(np.arange(last - first), n_blocks)]
    bounds = first + np.concatenate([[0], np.cumsum(sizes)])
    return [_at(int(b) * step) for b in bounds]


def edges_over(samples: pl.DataFrame, n_blocks: int, unit: timedelta = DAY) -> list[datetime]:
    """``even_edges`` over the samples' decision times: the first one's ``unit`` to the last
    one's, inclusive."""
    dec, _ = _checked_times(samples)
    if not len(dec):
        raise SplitError("samples is empty: no decision times to make edges over")
    return even_edges(_at(dec.min()), _at(dec.max() + 1), n_blocks, unit)


def label_horizon_bars(label: str) -> int:
    """Bars ``label`` looks ahead of its decision time (0 for a leakage control)."""
    try:
        return LABEL_HORIZONS[label]
    except KeyError:
        raise SplitError(
            f"unknown label {label!r}; expected one of {', '.join(LABEL_HORIZONS)}"
        ) from None


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """The samples as int64 microseconds, with each row's embargo and series number."""

    dec: np.ndarray
    known: np.ndarray
    embargo: np.ndarray
    series: np.ndarray


def _prepared(
    samples: pl.DataFrame,
    embargo: timedelta | None,
    embargo_bars: int | None,
    label: str | None,
) -> _Rows:
    dec, known = _checked_times(samples)
    given = _embargo_us(samples, embargo, embargo_bars)
    _check_embargo_covers(samples, given, label)
    return _Rows(dec, known, given, _series_numbers(samples))


def _checked_times(samples: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """decision_time and known_at as int64 microseconds, after checking the input is usable."""
    missing = [c for c in (DECISION, KNOWN) if c not in samples.columns]
    if missing:
        raise SplitError(f"samples lack column(s) {missing}; have {samples.columns}")
    for col in (DECISION, KNOWN):
        dtype = samples.schema[col]
        if not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC":
            raise SplitError(f"column {col!r} must be a UTC Datetime, got {dtype}")
        nulls = samples[col].null_count()
        if nulls:
            raise SplitError(f"column {col!r} has {nulls} null value(s)")
    dec = samples[DECISION].dt.epoch("us").to_numpy()
    known = samples[KNOWN].dt.epoch("us").to_numpy()
    if (known < dec).any():
        i = int(np.argmax(known < dec))
        raise SplitError(
            f"row {i} has {KNOWN} {_at(known[i])} before its {DECISION} {_at(dec[i])}; "
            f"expected {KNOWN} >= {DECISION}"
        )
    grain = [c for c in (*SERIES, "label") if c in samples.columns] + [DECISION]
    twice = samples.select(grain).is_duplicated().to_numpy()
    if twice.any():
        i = int(np.argmax(twice))
        raise SplitError(
            f"overlapping samples: row {i} and another share {grain} "
            f"{samples.row(i, named=True)}; one row per series and decision time expected"
        )
    return dec, known


def _embargo_us(
    samples: pl.DataFrame, embargo: timedelta | None, embargo_bars: int | None
) -> np.ndarray:
    """Each row's embargo in microseconds: ``embargo``, or ``embargo_bars`` (default
    ``DEFAULT_EMBARGO_BARS``) bars of the row's interval."""
    if embargo is not None and embargo_bars is not None:
        raise SplitError(f"give embargo or embargo_bars, not both ({embargo}, {embargo_bars})")
    if embargo is not None:
        if embargo < timedelta(0):
            raise SplitError(f"embargo must be ≥ 0, got {embargo}")
        return np.full(samples.height, _us(embargo), dtype=np.int64)
    bars = DEFAULT_EMBARGO_BARS if embargo_bars is None else embargo_bars
    if not isinstance(bars, int) or isinstance(bars, bool) or bars < 0:
        raise SplitError(f"embargo_bars must be an integer ≥ 0, got {bars!r}")
    return bars * _bar_us(samples, f"an embargo of {bars} bars")


def _check_embargo_covers(samples: pl.DataFrame, given: np.ndarray, label: str | None) -> None:
    """Refuse an embargo shorter than a row's label horizon or window, in its interval's bars."""
    if "interval" not in samples.columns:
        if label is not None:
            raise SplitError(
                f"samples have no 'interval' column, so the horizon of label={label!r} cannot "
                "be turned into time; add the column or leave label= out"
            )
        return
    labels = (
        pl.Series([label] * samples.height, dtype=pl.String)
        if label is not None
        else samples["label"]
        if "label" in samples.columns
        else None
    )
    horizon = np.zeros(samples.height, dtype=np.int64)
    if labels is not None:
        for name in labels.unique().to_list():
            label_horizon_bars(name)  # raises for an unknown label
        horizon = labels.replace_strict(LABEL_HORIZONS, return_dtype=pl.Int64).to_numpy()
    window = (
        samples["window_size"].cast(pl.Int64).to_numpy()
        if "window_size" in samples.columns
        else np.zeros(samples.height, dtype=np.int64)
    )
    bar = _bar_us(samples, "a label horizon")
    needed = np.maximum(horizon, window)
    short = given < needed * bar
    if short.any():
        i = int(np.argmax(short))
        row = samples.row(i, named=True)
        name = label if label is not None else row.get("label")
        series = " ".join(str(row[c]) for c in SERIES if c in row)
        reach = f"label {name!r} looks {horizon[i]} bars ahead and " if name is not None else ""
        raise SplitError(
            f"embargo {timedelta(microseconds=int(given[i]))} is too short for row {i} "
            f"({series}): {reach}its window holds {window[i]} bars, so the embargo must be at "
            f"least {needed[i]} bars of {row['interval']} "
            f"({timedelta(microseconds=int(needed[i] * bar[i]))})"
        )


def _bar_us(samples: pl.DataFrame, purpose: str) -> np.ndarray:
    """Each row's bar length in microseconds, from its ``interval``."""
    if "interval" not in samples.columns:
        raise SplitError(
            f"samples have no 'interval' column, so {purpose} cannot be turned into time; "
            "pass embargo= as a timedelta"
        )
    lengths = {iv: _us(interval_length(iv)) for iv in samples["interval"].unique().to_list()}
    return samples["interval"].replace_strict(lengths, return_dtype=pl.Int64).to_numpy()


def _series_numbers(samples: pl.DataFrame) -> np.ndarray:
    """A number per row, the same for the rows of one series."""
    cols = [c for c in SERIES if c in samples.columns]
    if not cols:
        return np.zeros(samples.height, dtype=np.int64)
    keys = samples.select(cols)
    numbered = keys.unique(maintain_order=True).with_row_index("series")
    joined = keys.join(numbered, on=cols, how="left", maintain_order="left", nulls_equal=True)
    return joined["series"].to_numpy().astype(np.int64)


def _checked_cuts(*cuts: tuple[str, datetime | None]) -> list[int | None]:
    """The given cut times in microseconds, refusing naive ones and any out of order."""
    values = [None if t is None else _cut_us(name, t) for name, t in cuts]
    given = [(name, v) for (name, _), v in zip(cuts, values, strict=True) if v is not None]
    for (a, ta), (b, tb) in zip(given, given[1:], strict=False):
        if ta >= tb:
            raise SplitError(f"cut times out of order: {a} {_at(ta)} must be before {b} {_at(tb)}")
    return values


def _checked_edges(edges: Sequence[datetime], what: str) -> list[int]:
    values = [_cut_us(f"{what}[{i}]", t) for i, t in enumerate(edges)]
    if len(values) < 2:
        raise SplitError(f"{what} needs at least 2 edges (one block), got {len(values)}")
    for i, (a, b) in enumerate(zip(values, values[1:], strict=False)):
        if a >= b:
            raise SplitError(
                f"{what} must increase: edge {i + 1} {_at(b)} is not after edge {i} {_at(a)}"
            )
    return values


def _cut_us(name: str, t: datetime) -> int:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise SplitError(f"{name} must be a timezone-aware datetime (UTC), got {t!r}")
    return _us(t - datetime(1970, 1, 1, tzinfo=UTC))


def _as_datetime(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _rows_in(rows: _Rows, start: int, end: int, what: str) -> np.ndarray:
    found = np.flatnonzero((rows.dec >= start) & (rows.dec < end))
    if not len(found):
        raise SplitError(f"{what} [{_at(start)}, {_at(end)}) holds no samples")
    return found


def _runs(held_out: tuple[int, ...]) -> list[tuple[int, int]]:
    """Adjacent held-out groups merged: (first, last) group of each run (no embargo between
    two test groups)."""
    runs: list[tuple[int, int]] = []
    for g in held_out:
        if runs and g == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], g)
        else:
            runs.append((g, g))
    return runs


def _excluded(
    rows: _Rows, candidates: np.ndarray, blocks: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate training rows to purge and to embargo against the held-out ``blocks``
    (``[start, end)`` in microseconds)."""
    d, k, gap = rows.dec[candidates], rows.known[candidates], rows.embargo[candidates]
    purge = np.zeros(len(candidates), dtype=bool)
    ban = np.zeros(len(candidates), dtype=bool)
    for start, end in blocks:
        before = d < start
        purge |= before & (k >= start)
        ban |= before & (d >= start - gap)
        after = d >= end
        if after.any():
            last_known = _last_known_per_series(rows, start, end)
            purge |= after & (d <= last_known[rows.series[candidates]])
            ban |= after & (d - end < gap)
    return candidates[purge], candidates[ban & ~purge]


def _last_known_per_series(rows: _Rows, start: int, end: int) -> np.ndarray:
    """The latest known_at of each series' rows in ``[start, end)`` (−∞ for a series with none)."""
    inside = (rows.dec >= start) & (rows.dec < end)
    latest = np.full(int(rows.series.max()) + 1, -_NEVER, dtype=np.int64)
    np.maximum.at(latest, rows.series[inside], rows.known[inside])
    return latest


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


def _us(delta: timedelta) -> int:
    return delta // _MICROSECOND


def _at(micros: int | np.integer) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
