"""The result tables of the experiment cells: predictions, metrics with confidence intervals and
integrity flags, and the Candlestick research's CSV export.

A cell's scorers (its zoo model, or the shuffled-label control of it, and the naive baselines)
each score a train set and the test blocks of the cell's training (``Scored``). ``cell_results``
turns them into two frames:

- ``results/predictions``: every scored row (decision time, ``known_at``, label, probability);
- ``results/metrics``: per scorer one train row (no CI: the bootstrap is spent where it counts),
  one row per test block and one pooled test row over the blocks back to back in time order, each
  with ``ml.evaluate``'s metrics, 95 % block-bootstrap CIs, the fold's calendar and the flags.

Flags. ``known_at_ok``: the test range starts strictly after ``embargo_end``, the last
training ``known_at`` plus the fold's embargo (always computed; false for a dishonest fold such
as seed_replica's).
``suspicious``, on the test rows of the model or the shuffled control of an honest cell whose
label is not leaky: its ``auroc_low`` is above the best baseline's AUROC on the same rows, or
above its own train AUROC, or it scores a perfect 1.0. A leaky control or a seed_replica row is
expected to score high and is never suspicious; the catalog's ``controls`` view keeps them apart.

Both tables are partitioned by ``cell=<cell key>``; ``write_cell_results`` writes the
predictions first and the metrics last, so a cell is finished when its metrics exist.
``export_seed_csv`` writes the seed's ``{COIN}_exp{N}_results.csv`` from the metrics table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import interval_length
from dagster_project.core.lake import CatalogView, DerivedView, Lake, write_bytes_atomically
from ml.evaluate import (
    BASELINES,
    METRIC_NAMES,
    block_bootstrap_ci,
    classification_metrics,
    default_block_len,
)
from ml.protocols import EXPERIMENT_I, EXPERIMENT_II, SEED_REPLICA, Fold
from ml.splits import TEST, TRAIN

RESULTS_LAYER = "results"
PREDICTIONS_TABLE, METRICS_TABLE = "predictions", "metrics"
CELL_KEY = "cell"  # the partition key of both tables
ROLES = ("model", "baseline", "shuffled_control")
MODEL, BASELINE, SHUFFLED_CONTROL = ROLES
SPLITS = (TRAIN, TEST)
BASELINE_NAMES = tuple(BASELINES)
SCORE_NAMES = METRIC_NAMES
CI_METRICS = ("accuracy", "f1", "auroc", "auprc", "mcc")  # with _low, _high and _se columns
PERFECT_METRICS = ("accuracy", "auroc")  # a 1.0 in either is suspicious on an honest cell
TRAINING_FIELDS = (
    "epochs_run",
    "best_epoch",
    "stop_reason",
    "train_seconds",
    "train_samples_per_s",
)

_UTC_US = pl.Datetime("us", "UTC")
PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "cell": pl.String,
    "scorer": pl.String,
    "role": pl.String,
    "split": pl.String,
    "fold": pl.String,
    "block": pl.Int32,
    "decision_time": _UTC_US,
    "known_at": _UTC_US,
    "label": pl.Float64,
    "probability": pl.Float64,
}
METRICS_SCHEMA: dict[str, pl.DataType] = {
    "cell": pl.String,
    "symbol": pl.String,
    "interval": pl.String,
    "dataset": pl.String,
    "window_size": pl.Int32,
    "model": pl.String,
    "scorer": pl.String,
    "role": pl.String,
    "protocol": pl.String,
    "training": pl.String,
    "label": pl.String,
    "label_is_leaky": pl.Boolean,
    "shuffled": pl.Boolean,
    "is_control": pl.Boolean,
    "is_honest": pl.Boolean,
    "split": pl.String,
    "block": pl.Int32,
    "fold": pl.String,
    "n_rows": pl.Int64,
    "positive_rate": pl.Float64,
    **dict.fromkeys(SCORE_NAMES, pl.Float64),
    **{f"{m}_{part}": pl.Float64 for m in CI_METRICS for part in ("low", "high", "se")},
    "train_start": _UTC_US,
    "validation_start": _UTC_US,
    "train_end": _UTC_US,
    "test_start": _UTC_US,
    "test_end": _UTC_US,
    "purge_embargo_bars": pl.Int32,
    "embargo_bars": pl.Int32,
    "horizon_bars": pl.Int32,
    "last_training_known_at": _UTC_US,
    "embargo_end": _UTC_US,
    "known_at_ok": pl.Boolean,
    "suspicious": pl.Boolean,
    "suspicious_reason": pl.String,
    "fingerprint": pl.String,
    "seed": pl.Int64,
    "created_at": _UTC_US,
    "epochs_run": pl.Int32,
    "best_epoch": pl.Int32,
    "stop_reason": pl.String,
    "train_seconds": pl.Float64,
    "train_samples_per_s": pl.Float64,
}

# The catalog's views of the results, in build order (a derived view after the views it reads).
RESULT_VIEWS = (
    CatalogView("predictions", RESULTS_LAYER, PREDICTIONS_TABLE),
    CatalogView("metrics", RESULTS_LAYER, METRICS_TABLE),
    DerivedView("scoreboard", "results/scoreboard", reads=("metrics",)),
    DerivedView("leaderboard", "results/leaderboard", reads=("scoreboard",)),
    DerivedView("controls", "results/controls", reads=("scoreboard",)),
)

# The seed's CSV: its columns, and how our cells map onto its Experiment and file number.
SEED_CSV_COLUMNS = (
    "Coin",
    "Experiment",
    "Model",
    "Window_Size",
    "Period",
    "Month",
    "Dataset",
    "Accuracy",
    "F1",
    "Recall",
    "AUROC",
    "AUPRC",
)
SEED_CSV_METRICS = {
    "Accuracy": "accuracy",
    "F1": "f1",
    "Recall": "recall",
    "AUROC": "auroc",
    "AUPRC": "auprc",
}
SEED_EXPERIMENTS = {
    "regular": "I",
    "fullimage": "II",
    "irregular_60": "III-60",
    "irregular_80": "III-80",
    "irregular_95": "III-95",
}
SEED_FILE_TAGS = {EXPERIMENT_I: "exp1", EXPERIMENT_II: "exp2", SEED_REPLICA: "seed_replica"}
SEED_INTERVAL = "1m"  # the seed's interval: its files carry no interval in their names
QUOTE_ASSETS = ("USDT", "USDC", "BUSD", "FDUSD", "BTC", "ETH")  # stripped from symbols, first match


class ResultsError(InvalidRequestError):
    """Scored rows or result frames that cannot make (or are not) a cell's result tables."""


@dataclass(frozen=True)
class CellInfo:
    """What every result row of a cell carries."""

    key: str
    symbol: str
    interval: str
    dataset: str
    window_size: int
    model: str  # the cell's zoo model
    protocol: str
    training: str  # the protocol's training name, e.g. exp1_t7d
    label: str  # the effective label
    label_is_leaky: bool
    shuffled: bool

    @property
    def is_control(self) -> bool:
        return self.label_is_leaky or self.shuffled


@dataclass(frozen=True)
class Scored:
    """One scorer's probabilities of up on one set of rows, in decision-time order."""

    scorer: str  # the zoo model name, or a baseline name
    role: str  # one of ROLES
    split: str  # "train" or "test"
    fold: Fold  # test: the block's fold; train: the training's first fold (train cuts are shared)
    decision_time: np.ndarray  # int64 µs since epoch UTC, strictly ascending
    known_at: np.ndarray  # int64 µs
    label: np.ndarray  # 0.0 / 1.0
    probability: np.ndarray  # P(up)


@dataclass(frozen=True)
class _ScorerSets:
    """One scorer's train set and test blocks (in block order)."""

    role: str
    train: Scored
    tests: tuple[Scored, ...]


@dataclass(frozen=True)
class _Context:
    """Everything a metrics row takes besides its scores."""

    info: CellInfo
    is_honest: bool
    fingerprint: str
    last_training_known_at: dt.datetime
    dependence: int
    n_boot: int
    seed: int
    created_at: dt.datetime
    training: Mapping[str, object]


# --- building a cell's results -------------------------------------------------------------


def cell_results(
    info: CellInfo,
    scored: Sequence[Scored],
    *,
    fingerprint: str,
    last_training_known_at: dt.datetime,
    dependence: int,
    n_boot: int = 1000,
    seed: int = 0,
    created_at: dt.datetime | None = None,
    training: Mapping[str, object] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(predictions, metrics)`` of one cell (module docstring). ``dependence`` is the longer of
    the window size and the label horizon in bars (``ml.evaluate.default_block_len``);
    ``training`` holds ``TRAINING_FIELDS``, stored on the model's rows only."""
    sets = check_scored(info, scored)
    context = _Context(
        info=info,
        is_honest=all(s.fold.is_honest for s in scored),
        fingerprint=fingerprint,
        last_training_known_at=_utc("last_training_known_at", last_training_known_at),
        dependence=dependence,
        n_boot=n_boot,
        seed=seed,
        created_at=_utc("created_at", created_at or dt.datetime.now(dt.UTC)),
        training=_check_training(training or {}),
    )
    rows = [row for scorer, found in sets.items() for row in scorer_rows(context, scorer, found)]
    flag_suspicious(context, rows)
    metrics = pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")
    return prediction_frame(info, scored), metrics


def check_scored(info: CellInfo, scored: Sequence[Scored]) -> dict[str, _ScorerSets]:
    """Each scorer's train set and test blocks, after checking every rule a cell's scored sets
    follow; a ``ResultsError`` names the first set that breaks one."""
    trains: dict[str, Scored] = {}
    tests: dict[str, dict[int, Scored]] = {}
    for s in scored:
        _check_one(info, s)
        if s.split == TRAIN:
            if s.scorer in trains:
                raise ResultsError(f"cell {info.key}: scorer {s.scorer!r} has two train sets")
            trains[s.scorer] = s
        else:
            blocks = tests.setdefault(s.scorer, {})
            if s.fold.block in blocks:
                raise ResultsError(
                    f"cell {info.key}: scorer {s.scorer!r} has two sets of test block "
                    f"{s.fold.block}"
                )
            blocks[s.fold.block] = s
    for scorer in trains.keys() ^ tests.keys():
        missing = TEST if scorer in trains else TRAIN
        raise ResultsError(f"cell {info.key}: scorer {scorer!r} has no {missing} set")
    sets = {
        scorer: _ScorerSets(trains[scorer].role, trains[scorer], _ordered_blocks(info, blocks))
        for scorer, blocks in tests.items()
    }
    if not any(found.role != BASELINE for found in sets.values()):
        raise ResultsError(
            f"cell {info.key}: no scored set of the cell's model {info.model!r}; got only "
            f"{sorted(sets) or 'nothing'}"
        )
    _check_same_test_rows(info, sets)
    return sets


def _check_one(info: CellInfo, s: Scored) -> None:
    where = f"cell {info.key}, scorer {s.scorer!r} ({s.split})"
    if s.role not in ROLES:
        raise ResultsError(f"{where}: unknown role {s.role!r}; expected one of {', '.join(ROLES)}")
    if s.split not in SPLITS:
        raise ResultsError(f"{where}: unknown split {s.split!r}; expected train or test")
    expected_role = SHUFFLED_CONTROL if info.shuffled else MODEL
    if s.role == BASELINE and s.scorer not in BASELINE_NAMES:
        raise ResultsError(
            f"{where}: unknown baseline; expected one of {', '.join(BASELINE_NAMES)}"
        )
    if s.role != BASELINE and (s.scorer != info.model or s.role != expected_role):
        raise ResultsError(
            f"{where}: role {s.role!r}, but the cell's model is {info.model!r} with role "
            f"{expected_role!r}"
        )
    fold = s.fold
    if (fold.protocol, fold.training_name, fold.interval) != (
        info.protocol,
        info.training,
        info.interval,
    ):
        raise ResultsError(
            f"{where}: fold {fold.name!r} is of {fold.protocol} {fold.interval}, not the cell's "
            f"{info.protocol} {info.training} at {info.interval}"
        )
    _check_arrays(where, s)


def _check_arrays(where: str, s: Scored) -> None:
    arrays = {
        "decision_time": s.decision_time,
        "known_at": s.known_at,
        "label": s.label,
        "probability": s.probability,
    }
    shapes = {name: np.shape(values) for name, values in arrays.items()}
    if len(set(shapes.values())) != 1 or len(shapes["label"]) != 1:
        raise ResultsError(f"{where}: arrays must be 1-D and equally long, got shapes {shapes}")
    if shapes["label"][0] == 0:
        raise ResultsError(f"{where}: no rows; leave a set without rows out")
    times = _microseconds(where, "decision_time", s.decision_time)
    unsorted = np.flatnonzero(np.diff(times) <= 0)
    if unsorted.size:
        raise ResultsError(
            f"{where}: decision_time must be strictly ascending; row {unsorted[0] + 1} is not "
            "after the row before it"
        )
    early = np.flatnonzero(_microseconds(where, "known_at", s.known_at) < times)
    if early.size:
        raise ResultsError(f"{where}: known_at before decision_time at row {early[0]}")


def _microseconds(where: str, name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind == "M":
        return array.astype("datetime64[us]").astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ResultsError(f"{where}: {name} must be int64 µs since epoch, got {array.dtype}")
    return array.astype(np.int64)


def _ordered_blocks(info: CellInfo, blocks: Mapping[int, Scored]) -> tuple[Scored, ...]:
    """The test blocks in block order, refused unless each lies wholly after the one before
    (the pooled row reads them back to back)."""
    ordered = tuple(blocks[k] for k in sorted(blocks))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if (
            _microseconds("", "", after.decision_time)[0]
            <= _microseconds("", "", before.decision_time)[-1]
        ):
            raise ResultsError(
                f"cell {info.key}, scorer {after.scorer!r}: test blocks {before.fold.block} and "
                f"{after.fold.block} overlap in decision time; a training's blocks are disjoint "
                "and back to back"
            )
    return ordered


def _check_same_test_rows(info: CellInfo, sets: Mapping[str, _ScorerSets]) -> None:
    """Every scorer scores the same test rows: the comparisons with baselines rely on it."""
    (reference, first), *others = sets.items()
    for scorer, found in others:
        same = [t.fold.block for t in found.tests] == [t.fold.block for t in first.tests] and all(
            np.array_equal(a.decision_time, b.decision_time)
            for a, b in zip(found.tests, first.tests, strict=True)
        )
        if not same:
            raise ResultsError(
                f"cell {info.key}: scorer {scorer!r} was tested on other rows or blocks than "
                f"{reference!r}; every scorer of a cell scores the same test rows"
            )


def _check_training(training: Mapping[str, object]) -> Mapping[str, object]:
    unknown = set(training) - set(TRAINING_FIELDS)
    if unknown:
        raise ResultsError(
            f"unknown training fields {sorted(unknown)}; expected {', '.join(TRAINING_FIELDS)}"
        )
    return training


def _utc(name: str, moment: dt.datetime) -> dt.datetime:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None:
        raise ResultsError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(dt.UTC)


# --- metrics rows ---------------------------------------------------------------------------


def scorer_rows(context: _Context, scorer: str, found: _ScorerSets) -> list[dict[str, object]]:
    """The train row, one row per test block, and the pooled test row of one scorer."""
    first, last = found.tests[0].fold, found.tests[-1].fold
    test_range = (first.test_start, last.test_end)
    pooled = _pooled(found.tests)
    return [
        _row(
            context,
            scorer,
            found.role,
            found.train,
            None,
            context.info.training,
            test_range,
            with_ci=False,
        ),
        *(
            _row(
                context,
                scorer,
                found.role,
                block,
                block.fold.block,
                block.fold.name,
                (block.fold.test_start, block.fold.test_end),
                with_ci=True,
            )
            for block in found.tests
        ),
        _row(
            context,
            scorer,
            found.role,
            pooled,
            None,
            context.info.training,
            test_range,
            with_ci=True,
        ),
    ]


def _pooled(blocks: Sequence[Scored]) -> Scored:
    """The test blocks back to back (they are in time order and disjoint)."""
    first = blocks[0]
    return Scored(
        scorer=first.scorer,
        role=first.role,
        split=TEST,
        fold=first.fold,
        decision_time=np.concatenate([b.decision_time for b in blocks]),
        known_at=np.concatenate([b.known_at for b in blocks]),
        label=np.concatenate([b.label for b in blocks]),
        probability=np.concatenate([b.probability for b in blocks]),
    )


def _row(
    context: _Context,
    scorer: str,
    role: str,
    s: Scored,
    block: int | None,
    fold_name: str,
    test_range: tuple[dt.datetime, dt.datetime],
    *,
    with_ci: bool,
) -> dict[str, object]:
    info, fold = context.info, s.fold
    earliest = context.last_training_known_at + fold.embargo_bars * interval_length(info.interval)
    is_model = role != BASELINE
    return {
        "cell": info.key,
        "symbol": info.symbol,
        "interval": info.interval,
        "dataset": info.dataset,
        "window_size": info.window_size,
        "model": info.model,
        "scorer": scorer,
        "role": role,
        "protocol": info.protocol,
        "training": info.training,
        "label": info.label,
        "label_is_leaky": info.label_is_leaky,
        "shuffled": info.shuffled,
        "is_control": info.is_control,
        "is_honest": context.is_honest,
        "split": s.split,
        "block": block,
        "fold": fold_name,
        **scores(s, context, with_ci),
        "train_start": fold.train_start,
        "validation_start": fold.validation_start,
        "train_end": fold.train_end,
        "test_start": test_range[0],
        "test_end": test_range[1],
        "purge_embargo_bars": None if fold.spec is None else fold.spec.embargo_bars,
        "embargo_bars": fold.embargo_bars,
        "horizon_bars": fold.horizon_bars,
        "last_training_known_at": context.last_training_known_at,
        "embargo_end": earliest,
        "known_at_ok": context.is_honest and test_range[0] > earliest,
        "suspicious": False,
        "suspicious_reason": None,
        "fingerprint": context.fingerprint,
        "seed": context.seed,
        "created_at": context.created_at,
        **{name: context.training.get(name) if is_model else None for name in TRAINING_FIELDS},
    }


def scores(s: Scored, context: _Context, with_ci: bool) -> dict[str, object]:
    """``ml.evaluate``'s metrics of one set, and the block-bootstrap CI columns (None without)."""
    values = classification_metrics(s.label, s.probability)
    row: dict[str, object] = {name: values[name] for name in ("n_rows", "positive_rate")}
    row |= {name: values[name] for name in SCORE_NAMES}
    n_rows = int(values["n_rows"])
    # √n or the dependence, but never longer than the rows (a short block of a long window)
    block_len = min(default_block_len(n_rows, context.dependence), n_rows)
    for metric in CI_METRICS:
        low, high, se = (
            block_bootstrap_ci(
                s.label, s.probability, metric, block_len, context.n_boot, seed=context.seed
            )
            if with_ci
            else (None, None, None)
        )
        row |= {f"{metric}_low": low, f"{metric}_high": high, f"{metric}_se": se}
    return row


def flag_suspicious(context: _Context, rows: list[dict[str, object]]) -> None:
    """Set ``suspicious`` and its reason on the model's test rows of an honest cell whose label
    is not leaky (module docstring); other rows stay unflagged."""
    if not context.is_honest or context.info.label_is_leaky:
        return
    train_auroc = {r["scorer"]: r["auroc"] for r in rows if r["split"] == TRAIN}
    for row in rows:
        if row["role"] == BASELINE or row["split"] != TEST:
            continue
        baselines = {
            r["scorer"]: r["auroc"]
            for r in rows
            if r["role"] == BASELINE
            and r["split"] == TEST
            and r["block"] == row["block"]
            and not math.isnan(r["auroc"])
        }
        reasons = suspicion_reasons(row, baselines, train_auroc[row["scorer"]])
        row["suspicious"] = bool(reasons)
        row["suspicious_reason"] = "; ".join(reasons) or None


def suspicion_reasons(
    row: Mapping[str, object], baseline_auroc: Mapping[str, float], train_auroc: float
) -> list[str]:
    """Why a model's test row is too good to be honest; empty when it is not (NaN compares
    false, so an undefined score is never suspicious)."""
    reasons = []
    low = row["auroc_low"]
    if baseline_auroc:
        best = max(baseline_auroc, key=baseline_auroc.__getitem__)
        if low > baseline_auroc[best]:
            reasons.append(
                f"beats every baseline by more than its CI: auroc_low {low:.4f} > "
                f"{best} auroc {baseline_auroc[best]:.4f}"
            )
    if low > train_auroc:
        reasons.append(
            f"test AUROC above train by more than its CI: auroc_low {low:.4f} > train auroc "
            f"{train_auroc:.4f}"
        )
    perfect = [name for name in PERFECT_METRICS if row[name] == 1.0]
    if perfect:
        reasons.append(f"a perfect score: {', '.join(perfect)} = 1.0")
    return reasons


def prediction_frame(info: CellInfo, scored: Sequence[Scored]) -> pl.DataFrame:
    """Every scored row; train rows carry the training name as their fold and no block."""
    frames = [
        pl.DataFrame(
            {
                "cell": info.key,
                "scorer": s.scorer,
                "role": s.role,
                "split": s.split,
                "fold": s.fold.name if s.split == TEST else info.training,
                "block": s.fold.block if s.split == TEST else None,
                "decision_time": _microseconds("", "", s.decision_time),
                "known_at": _microseconds("", "", s.known_at),
                "label": np.asarray(s.label, dtype=np.float64),
                "probability": np.asarray(s.probability, dtype=np.float64),
            }
        ).cast(PREDICTIONS_SCHEMA)
        for s in scored
    ]
    return pl.concat(frames).sort("scorer", "split", "decision_time")


# --- the lake ---------------------------------------------------------------------------------


def write_cell_results(
    lake: Lake, key: str, predictions: pl.DataFrame, metrics: pl.DataFrame
) -> None:
    """Store a cell's results: its predictions first, its metrics last (a cell is finished
    when its metrics partition exists)."""
    for table, frame, schema in (
        (PREDICTIONS_TABLE, predictions, PREDICTIONS_SCHEMA),
        (METRICS_TABLE, metrics, METRICS_SCHEMA),
    ):
        _check_frame(key, table, frame, schema)
    lake.write_partition(RESULTS_LAYER, PREDICTIONS_TABLE, {CELL_KEY: key}, predictions)
    lake.write_partition(RESULTS_LAYER, METRICS_TABLE, {CELL_KEY: key}, metrics)


def _check_frame(key: str, table: str, frame: pl.DataFrame, schema: Mapping) -> None:
    if dict(frame.schema) != dict(schema):
        raise ResultsError(
            f"results/{table} of cell {key}: columns {dict(frame.schema)} differ from the "
            f"table's {dict(schema)}; build the frames with cell_results"
        )
    others = frame.filter(pl.col(CELL_KEY) != key)[CELL_KEY].unique().to_list()
    if others or frame.is_empty():
        raise ResultsError(
            f"results/{table} of cell {key}: rows of other cells {others} or no rows at all"
        )


def stored_fingerprint(lake: Lake, key: str) -> str | None:
    """The fingerprint of a cell's stored metrics; None when the cell has none (unfinished)."""
    if not lake.partition_files(RESULTS_LAYER, METRICS_TABLE, {CELL_KEY: key}):
        return None
    fingerprints = _read_cell(lake, key)["fingerprint"].unique().to_list()
    if len(fingerprints) != 1:
        raise ResultsError(f"cell {key}: its metrics hold fingerprints {fingerprints}, not one")
    return fingerprints[0]


def read_metrics(lake: Lake, keys: Sequence[str] | None = None) -> pl.DataFrame:
    """The metrics of the cells ``keys`` (every stored cell when None), in ``METRICS_SCHEMA``
    order; a key without stored metrics is an error."""
    if keys is None:
        keys = [p[CELL_KEY] for p in lake.partitions(RESULTS_LAYER, METRICS_TABLE)]
    missing = [
        k for k in keys if not lake.partition_files(RESULTS_LAYER, METRICS_TABLE, {CELL_KEY: k})
    ]
    if missing:
        raise ResultsError(f"no stored metrics for cells {missing}")
    frames = [_read_cell(lake, key) for key in keys]
    if not frames:
        return pl.DataFrame(schema=METRICS_SCHEMA)
    return pl.concat(frames).sort("cell", "scorer", "split", "block", nulls_last=True)


def _read_cell(lake: Lake, key: str) -> pl.DataFrame:
    frame = lake.read_partition(RESULTS_LAYER, METRICS_TABLE, {CELL_KEY: key})
    return frame.with_columns(pl.lit(key).alias(CELL_KEY)).select(list(METRICS_SCHEMA))


# --- the seed's CSV -----------------------------------------------------------------------


def export_seed_csv(lake: Lake, out_dir: str | Path) -> list[Path]:
    """Write the seed's ``{COIN}_exp{N}_results.csv`` files (``N``: 1 for experiment_i, 2 for
    experiment_ii; seed_replica rows go to ``{COIN}_seed_replica_results.csv``) with exactly
    ``SEED_CSV_COLUMNS``, one Test row per test block and the scorer's Train row beside each;
    values are the metrics table's. Intervals other than 1m get ``{COIN}_{interval}_…`` names.
    Returns the files written, sorted."""
    rows = seed_rows(read_metrics(lake))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (name,), frame in rows.group_by("file", maintain_order=True):
        # a baseline scores the same rows in every cell of a series and training: written once
        frame = frame.unique(maintain_order=True)
        _check_distinct(name, frame)
        path = out / name
        write_bytes_atomically(path, frame.select(SEED_CSV_COLUMNS).write_csv().encode())
        written.append(path)
    return sorted(written)


def seed_rows(metrics: pl.DataFrame) -> pl.DataFrame:
    """The seed CSV's rows of ``metrics`` with their ``file``, in file and seed order."""
    blocks = metrics.filter((pl.col("split") == TEST) & pl.col("block").is_not_null())
    train = metrics.filter(pl.col("split") == TRAIN).select(
        "cell", "scorer", *SEED_CSV_METRICS.values()
    )
    test_rows = blocks.with_columns(pl.lit("Test").alias("Dataset"))
    # the seed wrote a scorer's train scores once per test month, beside its test scores
    train_rows = (
        blocks.drop(*SEED_CSV_METRICS.values())
        .join(train, on=("cell", "scorer"), how="left")
        .with_columns(pl.lit("Train").alias("Dataset"))
    )
    both = pl.concat([test_rows, train_rows.select(test_rows.columns)])
    records = [_seed_record(row) for row in both.iter_rows(named=True)]
    frame = pl.DataFrame(records, schema=_SEED_SCHEMA, orient="row")
    return frame.sort(
        "file", "Experiment", "Model", "Window_Size", "period_span", "Month", "dataset_order"
    ).drop("period_span", "dataset_order")


_SEED_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String,
    "Coin": pl.String,
    "Experiment": pl.String,
    "Model": pl.String,
    "Window_Size": pl.Int64,
    "Period": pl.String,
    "Month": pl.Int64,
    "Dataset": pl.String,
    **dict.fromkeys(SEED_CSV_METRICS, pl.Float64),
    "period_span": pl.Duration("us"),
    "dataset_order": pl.Int8,
}


def _seed_record(row: Mapping[str, object]) -> dict[str, object]:
    span = row["test_end"] - row["test_start"]
    return {
        "file": seed_file_name(row["symbol"], row["interval"], row["protocol"]),
        "Coin": coin(row["symbol"]),
        "Experiment": seed_experiment(row["dataset"]),
        "Model": seed_model_name(row),
        "Window_Size": row["window_size"],
        "Period": period(span, row["interval"]),
        "Month": row["block"] + 1,
        "Dataset": row["Dataset"],
        **{column: row[metric] for column, metric in SEED_CSV_METRICS.items()},
        "period_span": span,
        "dataset_order": 0 if row["Dataset"] == "Train" else 1,
    }


def coin(symbol: str) -> str:
    """The symbol without its quote asset: BTCUSDT → BTC, ETHBTC → ETH."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol.removesuffix(quote)
    return symbol


def seed_experiment(dataset: str) -> str:
    try:
        return SEED_EXPERIMENTS[dataset]
    except KeyError:
        raise ResultsError(
            f"dataset {dataset!r} has no seed Experiment; expected one of "
            f"{', '.join(SEED_EXPERIMENTS)}"
        ) from None


def seed_file_name(symbol: str, interval: str, protocol: str) -> str:
    try:
        tag = SEED_FILE_TAGS[protocol]
    except KeyError:
        raise ResultsError(
            f"protocol {protocol!r} has no seed file; expected one of {', '.join(SEED_FILE_TAGS)}"
        ) from None
    at = "" if interval == SEED_INTERVAL else f"_{interval}"
    return f"{coin(symbol)}{at}_{tag}_results.csv"


def seed_model_name(row: Mapping[str, object]) -> str:
    """The scorer; ``shuffled_<model>`` for the shuffled control; ``…@<label>`` on a leaky cell."""
    name = f"shuffled_{row['scorer']}" if row["role"] == SHUFFLED_CONTROL else row["scorer"]
    return f"{name}@{row['label']}" if row["label_is_leaky"] else name


def period(span: dt.timedelta, interval: str) -> str:
    """A test block's length as the seed's Period: whole days as their number (``7``), else
    bars of ``interval`` (``120bar``)."""
    if span % dt.timedelta(days=1) == dt.timedelta(0):
        return str(span.days)
    return f"{span // interval_length(interval)}bar"


def _check_distinct(name: str, frame: pl.DataFrame) -> None:
    key = ["Coin", "Experiment", "Model", "Window_Size", "Period", "Month", "Dataset"]
    clashes = frame.filter(frame.select(key).is_duplicated())
    if not clashes.is_empty():
        raise ResultsError(
            f"{name}: cells that differ only outside the seed's columns (e.g. two quote assets "
            f"of one coin) give the same rows: {clashes.select(key).head(3).to_dicts()}"
        )
