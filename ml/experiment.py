"""Experiment cells: one zoo model trained on one protocol's training calendar, scored on that
training's test blocks beside the naive baselines, with results and checkpoint in the lake.

A ``Cell`` is symbol × interval × dataset × window size × model × training (a protocol's training
name, ``exp1_t7d``, ``exp2_t7d_test14d``, ``seed_t7d``), optionally with another label (a leaky
control) or its labels shuffled (the shuffled-label control). Its ``key`` names its result
partitions (``results/*/cell=<key>``) and its checkpoint (``models/<model>/<key>/``).

``run_cell`` does, in order:

1. validates the cell against the lake (the series' days with windows, the partitions the folds
   read) and plans the folds (``ml.protocols.plan``); nothing is written before this passes;
2. computes the cell's fingerprint (``cell_fingerprint``: the cell, the settings, the folds, the
   model's defaults, the renderer and package versions and the recorded sha256 of every lake file
   the cell reads); when the stored results carry the same fingerprint it returns them untrained;
3. stores the honest folds' split specs and assigns ``windows/splits`` for the cell's series,
   then refuses any honest test block that starts before the last train or validation
   ``known_at`` plus the embargo (``FoldLeakError``; no model, result or checkpoint is written);
4. trains the model once on the training's train / validation rows (the shuffled control on its
   training labels permuted among the training rows, ``ShuffledLabelDataset``);
5. scores the model and the baselines (fit on the same training rows' candles and true labels)
   on the train rows and on each test block, refusing rows that differ between them;
6. saves the checkpoint (with the cell, folds, image and ONNX file on its card), exports ONNX,
   and writes the results: predictions, then metrics (``ml.results``).

``run_grid`` runs cells in order and trains only those whose stored fingerprint differs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import itertools
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import torch
from torch import nn

from dagster_project.core.days import day_range
from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.integrity import digest_of, recorded_digests
from dagster_project.core.klines import CURATED_INTERVALS, interval_length
from dagster_project.core.lake import PARTITION_FILE, Lake, connect
from dagster_project.ingest.landing import SYMBOL_PATTERN
from dagster_project.transform.curate import curated_file
from dagster_project.transform.dataset_days import candle_history_days
from dagster_project.transform.labels import LABEL_SPECS
from dagster_project.transform.windows import WINDOW_SIZES
from ml.evaluate import BASELINES, shuffled_labels
from ml.export import export_onnx
from ml.image_cache import (
    check_choice,
    check_style,
    dataset_names,
    image_shape,
    labelled_windows,
    renderer_version,
    style_key,
)
from ml.image_dataset import LakeImageDataset, check_partitions_exist
from ml.protocols import (
    DEFAULT_VALIDATION_FRACTION,
    EXPERIMENT_I,
    EXPERIMENT_II,
    SEED_REPLICA,
    Fold,
    FoldLeakError,
    Length,
    ProtocolError,
    plan,
)
from ml.rendering import CandleStyle, OhlcBarStyle, Style, WindowBatch
from ml.results import (
    BASELINE,
    MODEL,
    SHUFFLED_CONTROL,
    CellInfo,
    Scored,
    cell_results,
    read_metrics,
    stored_fingerprint,
    write_cell_results,
)
from ml.split_specs import DEFAULT_SPEC, assign_splits, store_spec
from ml.splits import DEFAULT_EMBARGO_BARS, TEST, TRAIN, VALIDATION, label_horizon_bars
from ml.train import (
    CARD,
    Progress,
    TrainConfig,
    TrainResult,
    checkpoint_dir,
    data_provenance,
    paired_label,
    predict_proba,
    save_checkpoint,
    train,
)
from ml.window_data import WindowPartition
from ml.zoo import create_model, model_defaults

log = logging.getLogger(__name__)

# Protocol ↔ the prefix of its training names (ml.protocols names its folds so).
TRAINING_PREFIXES = {EXPERIMENT_I: "exp1", EXPERIMENT_II: "exp2", SEED_REPLICA: "seed"}
_LENGTH_TAG = r"[1-9][0-9]*(?:d|bar)"  # Length.tag: 7d or 120bar
_TRAINING = re.compile(
    rf"^(?P<prefix>exp1|exp2|seed)_t(?P<train>{_LENGTH_TAG})(?:_test(?P<test>{_LENGTH_TAG}))?$"
)
# The models are binary classifiers: only the up/down label families can be trained on.
CLASS_LABEL_FAMILIES = ("next_up", "window_up", "leaky_last_candle_up", "leaky_window_up")
CLASS_LABELS = tuple(
    name for spec in LABEL_SPECS if spec.family in CLASS_LABEL_FAMILIES for name in spec.names
)
LEAKY = {name for spec in LABEL_SPECS if spec.is_leaky for name in spec.names}
SHUFFLED = "shuffled"  # the last part of a shuffled control's key
ONNX_FILE = "model.onnx"
_MICROSECOND = dt.timedelta(microseconds=1)


class CellError(InvalidRequestError):
    """A cell, or a cell key, naming something that does not exist."""


class ExperimentError(CandlelakeError):
    """A cell's rows disagree between the model and the baselines (a bug, not bad input)."""


# --- trainings ---------------------------------------------------------------------------------


def training_name(
    protocol: str, train_length: Length | int | str, test_length: Length | int | str | None = None
) -> str:
    """The training name of ``protocol`` for a training length (and Experiment II's test
    length): ``exp1_t7d``, ``exp2_t7d_test14d``, ``seed_t7d``; the name its folds carry."""
    if protocol not in TRAINING_PREFIXES:
        raise CellError(
            f"unknown protocol {protocol!r}; expected one of {', '.join(TRAINING_PREFIXES)}"
        )
    train_tag = Length.of(train_length).tag
    test = None if test_length is None else Length.of(test_length)
    if protocol == EXPERIMENT_II:
        if test is None:
            raise CellError("experiment_ii's training name needs a test length")
        return f"exp2_t{train_tag}_test{test.tag}"
    if test is not None and test.tag != train_tag:
        raise CellError(
            f"{protocol} tests on blocks as long as its training ({train_tag}); got test length "
            f"{test.tag}"
        )
    return f"{TRAINING_PREFIXES[protocol]}_t{train_tag}"


def parse_training(name: str) -> tuple[str, dict[str, object]]:
    """``(protocol, the protocol's keyword arguments)`` of a training name, the inverse of
    ``training_name``: ``exp1_t7d`` → ``(experiment_i, {"train_lengths": (Length(days=7),)})``."""
    match = _TRAINING.match(name) if isinstance(name, str) else None
    if match is None or (match["prefix"] == "exp2") != (match["test"] is not None):
        raise CellError(
            f"bad training {name!r}; expected exp1_t<L>, exp2_t<L>_test<T> or seed_t<L> with "
            "lengths like 7d or 120bar"
        )
    train_length = Length.of(match["train"])
    if match["prefix"] == "exp1":
        return EXPERIMENT_I, {"train_lengths": (train_length,)}
    if match["prefix"] == "exp2":
        return EXPERIMENT_II, {
            "train_length": train_length,
            "test_lengths": (Length.of(match["test"]),),
        }
    return SEED_REPLICA, {"train_length": train_length}


# --- cells -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One experiment cell. ``label`` None: the dataset's paired label (seed_replica: the leaky
    label it reproduces); a label equal to that default is stored as None, so a cell has one key."""

    symbol: str  # BTCUSDT
    interval: str  # 1m, 5m, 15m, 1h
    dataset: str  # regular, fullimage, irregular_60, irregular_80, irregular_95
    window_size: int  # 5, 15, 30
    model: str  # a zoo name (ml.zoo.list_models())
    training: str  # a protocol's training name: exp1_t7d, exp2_t7d_test14d, seed_t7d
    label: str | None = None  # None: the default label; else another one (a leaky control)
    shuffled: bool = False  # the shuffled-label control of `model`

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not SYMBOL_PATTERN.match(self.symbol):
            raise CellError(f"bad symbol {self.symbol!r}; expected 2-30 of A-Z and 0-9")
        check_choice("interval", self.interval, CURATED_INTERVALS)
        check_choice("dataset", self.dataset, dataset_names())
        check_choice("window size", self.window_size, WINDOW_SIZES)
        model_defaults(self.model)  # UnknownModelError for a name the zoo lacks
        parse_training(self.training)
        if self.label is not None:
            check_choice("label (an up/down label)", self.label, CLASS_LABELS)
        if not isinstance(self.shuffled, bool):
            raise CellError(f"shuffled must be True or False, got {self.shuffled!r}")
        if self.label == self.default_label:
            object.__setattr__(self, "label", None)

    @property
    def protocol(self) -> str:
        return parse_training(self.training)[0]

    @property
    def default_label(self) -> str:
        if self.protocol == SEED_REPLICA:
            return seed_label(self.dataset, self.window_size)
        return paired_label(self.dataset, self.window_size)

    @property
    def effective_label(self) -> str:
        return self.label or self.default_label

    @property
    def label_is_leaky(self) -> bool:
        return self.effective_label in LEAKY

    @property
    def is_control(self) -> bool:
        return self.shuffled or self.label_is_leaky

    @property
    def key(self) -> str:
        parts = [self.symbol, self.interval, self.dataset, f"w{self.window_size}", self.model]
        parts.append(self.training)
        parts += [self.label] if self.label is not None else []
        parts += [SHUFFLED] if self.shuffled else []
        return ".".join(parts)

    @classmethod
    def from_key(cls, key: str) -> Cell:
        """The cell whose ``key`` this is; ``CellError`` naming the bad part otherwise."""
        parts = key.split(".") if isinstance(key, str) else []
        shuffled = bool(parts) and parts[-1] == SHUFFLED
        parts = parts[:-1] if shuffled else parts
        if len(parts) not in (6, 7):
            raise CellError(
                f"bad cell key {key!r}; expected symbol.interval.dataset.w<size>.model.training"
                "[.label][.shuffled]"
            )
        symbol, interval, dataset, window, model, training, *label = parts
        if not re.fullmatch(r"w[1-9][0-9]*", window):
            raise CellError(f"bad cell key {key!r}: window part {window!r}, expected w5, w15, …")
        try:
            cell = cls(
                symbol,
                interval,
                dataset,
                int(window[1:]),
                model,
                training,
                label=label[0] if label else None,
                shuffled=shuffled,
            )
        except InvalidRequestError as exc:
            raise CellError(f"bad cell key {key!r}: {exc}") from None
        if cell.key != key:
            raise CellError(f"bad cell key {key!r}: the cell's own key is {cell.key!r}")
        return cell

    def info(self) -> CellInfo:
        """What every result row of the cell carries."""
        return CellInfo(
            key=self.key,
            symbol=self.symbol,
            interval=self.interval,
            dataset=self.dataset,
            window_size=self.window_size,
            model=self.model,
            protocol=self.protocol,
            training=self.training,
            label=self.effective_label,
            label_is_leaky=self.label_is_leaky,
            shuffled=self.shuffled,
        )

    def card(self) -> dict[str, object]:
        """The model card's ``cell``."""
        fields = ("symbol", "interval", "dataset", "window_size", "model", "protocol", "training")
        return {
            "key": self.key,
            **{name: getattr(self, name) for name in fields},
            "label": self.effective_label,
            "shuffled": self.shuffled,
        }


def seed_label(dataset: str, window_size: int) -> str:
    """The leaky label seed_replica trains on: the whole window's direction for fullimage, the
    last candle's otherwise (both drawn in the image)."""
    return f"leaky_window_up_{window_size}" if dataset == "fullimage" else "leaky_last_candle_up"


def grid(
    symbols: Iterable[str],
    intervals: Iterable[str],
    datasets: Iterable[str],
    window_sizes: Iterable[int],
    models: Iterable[str],
    trainings: Iterable[str],
    *,
    labels: Iterable[str | None] = (None,),
    shuffled: Iterable[bool] = (False,),
) -> list[Cell]:
    """Every combination as a cell, in the order given (the last argument varies fastest),
    each once."""
    axes = (symbols, intervals, datasets, window_sizes, models, trainings, labels, shuffled)
    return list(dict.fromkeys(Cell(*combo) for combo in itertools.product(*axes)))


@dataclass(frozen=True)
class CellSettings:
    """How a cell is run; every field enters its fingerprint."""

    first_day: dt.date | None = None  # None: the first day with windows for the cell's series
    last_day: dt.date | None = None  # None: the last such day
    blocks: int = 5  # test blocks per training
    image_size: int = 64  # candle images: height = width = image_size; ohlc_bar: its own height
    train: TrainConfig = TrainConfig()
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    embargo_bars: int = DEFAULT_EMBARGO_BARS
    n_boot: int = 1000  # bootstrap replicates for CIs
    export_onnx: bool = True
    model_overrides: Mapping[str, object] = field(default_factory=dict)  # to create_model


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    trained: bool  # False: skipped, results with this fingerprint were already stored
    fingerprint: str  # sha256 hex of everything the results depend on
    metrics: pl.DataFrame  # the cell's rows of results/metrics (stored or fresh)
    checkpoint: Path | None  # models/<model>/<cell key>/
    seconds: float


# --- running cells -----------------------------------------------------------------------------


def run_grid(
    lake: Lake | str | Path,
    cells: Sequence[Cell],
    settings: CellSettings = CellSettings(),
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> list[CellOutcome]:
    """Run ``cells`` in order; a cell whose stored results carry its fingerprint is skipped."""
    outcomes = []
    for number, cell in enumerate(cells, 1):
        outcome = run_cell(lake, cell, settings, force=force, progress=progress)
        what = "trained" if outcome.trained else "unchanged, skipped"
        log.info("cell %s/%s %s: %s (%.1f s)", number, len(cells), cell.key, what, outcome.seconds)
        outcomes.append(outcome)
    return outcomes


def run_cell(
    lake: Lake | str | Path,
    cell: Cell,
    settings: CellSettings = CellSettings(),
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> CellOutcome:
    """Train, score and store one cell (module docstring); skipped when its stored results
    carry the same fingerprint, unless ``force``."""
    started = time.perf_counter()
    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    run = plan_cell(lake, cell, settings)
    fingerprint = run.fingerprint()
    if not force and stored_fingerprint(lake, cell.key) == fingerprint:
        card = checkpoint_dir(lake, cell.model, cell.key) / CARD
        checkpoint = card.parent if card.is_file() else None
        metrics = read_metrics(lake, [cell.key])
        return CellOutcome(cell, False, fingerprint, metrics, checkpoint, _since(started))
    con = connect()
    try:
        metrics, checkpoint = run.execute(con, fingerprint, progress)
    finally:
        con.close()
    return CellOutcome(cell, True, fingerprint, metrics, checkpoint, _since(started))


def cell_fingerprint(lake: Lake | str | Path, cell: Cell, settings: CellSettings) -> str:
    """sha256 hex of everything a cell's results depend on: the cell, the settings, its folds,
    the model's defaults, the renderer and package versions, and the sha256 recorded for every
    lake file it reads (windows, labels and curated klines of its days)."""
    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    return plan_cell(lake, cell, settings).fingerprint()


def plan_cell(lake: Lake, cell: Cell, settings: CellSettings) -> CellRun:
    """The cell's folds over the lake's data, after every check that needs no writing."""
    if not isinstance(cell, Cell):
        raise CellError(f"expected a Cell, got {cell!r}")
    first, last = data_range(lake, cell, settings)
    folds = cell_folds(cell, settings, first, last)
    style = cell_style(cell, settings)
    run = CellRun(lake, cell, settings, folds, style)
    check_partitions_exist(
        lake,
        [
            WindowPartition(cell.symbol, cell.interval, day, cell.dataset, cell.window_size)
            for day in run.days
        ],
        None,
    )
    return run


def data_range(lake: Lake, cell: Cell, settings: CellSettings) -> tuple[dt.date, dt.date]:
    """The first and last day of the settings' range that have windows for the cell's series."""
    days = window_days(lake, cell.symbol, cell.interval)
    if not days:
        raise InvalidRequestError(
            f"the lake {lake.root} has no windows for {cell.symbol} {cell.interval}; land and "
            "materialize that symbol and interval first"
        )
    first, last = settings.first_day or days[0], settings.last_day or days[-1]
    inside = [day for day in days if first <= day <= last]
    if not inside:
        raise InvalidRequestError(
            f"no windows for {cell.symbol} {cell.interval} from {first} to {last}; the lake has "
            f"them from {days[0]} to {days[-1]} ({len(days)} days)"
        )
    return inside[0], inside[-1]


def window_days(lake: Lake, symbol: str, interval: str) -> list[dt.date]:
    """The days with a windows/windows partition for the series, ascending."""
    series = lake.partition_dir("windows", "windows", {"symbol": symbol, "interval": interval})
    return sorted(
        dt.date.fromisoformat(path.parent.name.removeprefix("date="))
        for path in series.glob(f"date=*/{PARTITION_FILE}")
    )


def cell_folds(
    cell: Cell, settings: CellSettings, first: dt.date, last: dt.date
) -> tuple[Fold, ...]:
    """The folds of the cell's training over ``first`` .. ``last``."""
    protocol, lengths = parse_training(cell.training)
    options: dict[str, object] = {
        "blocks": settings.blocks,
        "validation_fraction": settings.validation_fraction,
    }
    if protocol == SEED_REPLICA:
        options["label"] = cell.effective_label
    else:
        options["embargo_bars"] = settings.embargo_bars
    folds = tuple(
        fold
        for fold in plan(protocol, first, last, cell.interval, **lengths, **options)
        if fold.training_name == cell.training
    )
    if not folds:
        raise ProtocolError(f"{cell.key}: the data {first} .. {last} holds no fold of it")
    return folds


def cell_style(cell: Cell, settings: CellSettings) -> Style:
    """The image style of the cell's model: its ``input_style`` at the settings' size."""
    if model_defaults(cell.model).input_style == "candle":
        style: Style = CandleStyle(height=settings.image_size, width=settings.image_size)
    else:
        style = OhlcBarStyle()
    check_style(style, cell.window_size)
    return style


@dataclass(frozen=True)
class CellRun:
    """A planned cell: its folds and image style over one lake."""

    lake: Lake
    cell: Cell
    settings: CellSettings
    folds: tuple[Fold, ...]
    style: Style

    @property
    def training_fold(self) -> Fold:
        """The folds share one training calendar: the first one's."""
        return self.folds[0]

    @property
    def days(self) -> list[dt.date]:
        """Every day the folds read, training and test."""
        starts = [t for f in self.folds for t in (f.train_start, f.test_start)]
        ends = [t for f in self.folds for t in (f.train_end, f.test_end)]
        return days_of(min(starts), max(ends))

    @property
    def image(self) -> dict[str, object]:
        channels, height, width = image_shape(self.style, self.cell.window_size)
        return {
            "style": style_key(self.style, self.cell.window_size),
            "style_fields": dataclasses.asdict(self.style),
            "in_chans": channels,
            "height": height,
            "width": width,
        }

    # --- the fingerprint ---

    def fingerprint(self) -> str:
        payload = {
            "cell": self.cell.key,
            "settings": dataclasses.asdict(self.settings),
            "folds": [fold.as_metadata() for fold in self.folds],
            "model_defaults": dataclasses.asdict(model_defaults(self.cell.model)),
            "image": self.image,
            "renderer_version": renderer_version(),
            "package_version": importlib.metadata.version("candlelake"),
            "data": self.data_digests(),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
        return hashlib.sha256(text.encode()).hexdigest()

    def data_digests(self) -> dict[str, str]:
        """Lake path (relative to the root) → sha256 of every file the cell's rows come from."""
        cell, days = self.cell, self.days
        files = []
        for day in days:
            keys = {"symbol": cell.symbol, "interval": cell.interval, "date": day}
            files += [self.lake.partition_file(t, t, keys) for t in ("windows", "labels")]
        history = dt.timedelta(days=candle_history_days(cell.interval))
        files += [
            path
            for day in day_range(days[0] - history, days[-1])
            if (path := curated_file(self.lake, cell.symbol, cell.interval, day)).is_file()
        ]
        return {str(path.relative_to(self.lake.root)): recorded_digest(path) for path in files}

    # --- training and scoring ---

    def execute(
        self, con: duckdb.DuckDBPyConnection, fingerprint: str, progress: Progress | None
    ) -> tuple[pl.DataFrame, Path]:
        """Train, score and store the cell; returns its metrics and checkpoint directory."""
        cell, settings = self.cell, self.settings
        self.assign_honest_splits(con)
        train_data, validation_data = self.image_data(TRAIN), self.image_data(VALIDATION)
        known_at = self.last_training_known_at(train_data, validation_data)
        fit_data = self.image_data(TRAIN, shuffle=True) if cell.shuffled else train_data
        started = time.perf_counter()
        result = train(self.new_model(), fit_data, validation_data, settings.train, progress)
        seconds = time.perf_counter() - started
        scored = self.scored(con, result.model, train_data, known_at)
        predictions, metrics = cell_results(
            cell.info(),
            scored,
            fingerprint=fingerprint,
            last_training_known_at=known_at,
            dependence=max(cell.window_size, label_horizon_bars(cell.effective_label)),
            n_boot=settings.n_boot,
            seed=settings.train.seed,
            training=training_fields(result, seconds),
        )
        extra = {
            "cell": cell.card(),
            "fingerprint": fingerprint,
            "folds": [fold.as_metadata() for fold in self.folds],
            "image": self.image,
            "test_metrics": pooled_test_row(metrics, cell.model),
        }
        run_dir = checkpoint_dir(self.lake, cell.model, cell.key)
        if settings.export_onnx:
            extra["onnx"] = self.export(result.model, run_dir / ONNX_FILE)
        provenance = data_provenance(train_data, validation_data)
        save_checkpoint(
            self.lake, cell.model, cell.key, result.model, settings.train, result, provenance, extra
        )
        write_cell_results(self.lake, cell.key, predictions, metrics)
        return metrics, run_dir

    def assign_honest_splits(self, con: duckdb.DuckDBPyConnection) -> None:
        """Store the honest folds' specs and assign ``windows/splits`` for the cell's series.
        Re-assigned every run: one read of the series' samples, a fraction of the training."""
        specs = [store_spec(self.lake, fold.spec) for fold in self.folds if fold.is_honest]
        if specs:
            series = (self.cell.symbol, self.cell.interval)
            assign_splits(self.lake, con, [spec.name for spec in specs], series=series)

    def image_data(
        self, role: str, fold: Fold | None = None, shuffle: bool = False
    ) -> LakeImageDataset:
        """The cell's images of the training's train or validation rows, or of ``fold``'s test
        block: an honest fold's split of its spec, a dishonest one's rows by its dates alone.
        ``shuffle``: with the labels permuted among the rows (the shuffled-label control)."""
        fold = fold or self.training_fold
        start, end = {
            TRAIN: (fold.train_start, fold.validation_start),
            VALIDATION: (fold.validation_start, fold.train_end),
            TEST: (fold.test_start, fold.test_end),
        }[role]
        honest = fold.spec is not None
        cell, days = self.cell, days_of(start, end)
        options = {"seed": self.settings.train.seed} if shuffle else {}
        return (ShuffledLabelDataset if shuffle else LakeImageDataset)(
            self.lake,
            cell.symbol,
            cell.interval,
            days[0],
            days[-1],
            cell.dataset,
            cell.window_size,
            self.style,
            split=role if honest else None,
            label=cell.effective_label,
            split_spec=fold.spec.name if honest else DEFAULT_SPEC,
            between=(start, end),
            **options,
        )

    def new_model(self) -> nn.Module:
        """The cell's zoo model for its images, initialised from the settings' seed (the
        caller's random state is left as it was)."""
        image = self.image
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.train.seed)
            return create_model(
                self.cell.model,
                in_chans=image["in_chans"],
                image_size=(image["height"], image["width"]),
                **self.settings.model_overrides,
            )

    def last_training_known_at(
        self, train_data: LakeImageDataset, validation_data: LakeImageDataset
    ) -> dt.datetime:
        """The latest ``known_at`` of a train or validation row (early stopping learns from
        validation labels too); an honest test block must start an embargo after it."""
        latest = max(rows(data)["known_at"].max() for data in (train_data, validation_data))
        for fold in self.folds:
            earliest = latest + fold.embargo_bars * interval_length(fold.interval)
            if fold.is_honest and fold.test_start <= earliest:
                raise FoldLeakError(
                    f"cell {self.cell.key}, fold {fold.name}: the test block starts "
                    f"{fold.test_start.isoformat()}, but a training label is known at "
                    f"{latest.isoformat()}, so with an embargo of {fold.embargo_bars} bars it "
                    f"must start after {earliest.isoformat()}; nothing was written"
                )
        return latest

    def scored(
        self,
        con: duckdb.DuckDBPyConnection,
        model: nn.Module,
        train_data: LakeImageDataset,
        known_at: dt.datetime,
    ) -> list[Scored]:
        """The model's and every baseline's probabilities on the train rows and on each test
        block that has rows; the baselines are fit on the train rows' candles and truth."""
        role = SHUFFLED_CONTROL if self.cell.shuffled else MODEL
        sets = [(TRAIN, self.training_fold, train_data)]
        for fold in self.folds:
            data = self.image_data(TEST, fold)
            if rows(data).is_empty():
                log.warning("cell %s: test block %s has no rows", self.cell.key, fold.name)
                continue
            sets.append((TEST, fold, data))
        if len(sets) == 1:
            raise ProtocolError(f"cell {self.cell.key}: no test block of it has rows")
        scored, baselines = [], {}
        for split, fold, data in sets:
            times, prob, labels = predict_proba(model, data)
            windows, frame = self.window_rows(con, data, times, labels)
            known = _micros(frame["known_at"])
            scored.append(Scored(self.cell.model, role, split, fold, times, known, labels, prob))
            if split == TRAIN:
                baselines = {
                    name: baseline().fit(windows, labels) for name, baseline in BASELINES.items()
                }
            for name, baseline in baselines.items():
                predicted = baseline.predict_proba(windows)
                scored.append(Scored(name, BASELINE, split, fold, times, known, labels, predicted))
        return scored

    def window_rows(
        self,
        con: duckdb.DuckDBPyConnection,
        data: LakeImageDataset,
        times: np.ndarray,
        labels: np.ndarray,
    ) -> tuple[WindowBatch, pl.DataFrame]:
        """The candles and ``known_at`` of the rows the model scored (decision times ``times``,
        µs, ascending), for the baselines; refuses any difference in rows or labels."""
        first = data.partitions[0]
        part = dataclasses.replace(first, last_day=data.partitions[-1].day)
        batch, frame = labelled_windows(self.lake, con, part, data.label)
        keep = frame["decision_time"].dt.epoch("us").is_in(pl.Series(times).implode())
        batch, frame = batch.take(np.flatnonzero(keep.to_numpy())), frame.filter(keep)
        if not np.array_equal(_micros(frame["decision_time"]), times):
            raise ExperimentError(
                f"cell {self.cell.key}: the baselines' rows ({frame.height}) differ from the "
                f"model's ({len(times)}) on {data.split or 'unsplit'} days {first.day} .. "
                f"{data.partitions[-1].day}"
            )
        if not np.array_equal(frame["value"].to_numpy(), labels.astype(np.float64)):
            raise ExperimentError(f"cell {self.cell.key}: baselines and model see other labels")
        return batch, frame

    def export(self, model: nn.Module, path: Path) -> dict[str, str]:
        image = self.image
        shape = (1, image["in_chans"], image["height"], image["width"])
        written = export_onnx(model.cpu(), shape, path)
        return {"file": written.name, "sha256": digest_of(written)}


class ShuffledLabelDataset(LakeImageDataset):
    """A ``LakeImageDataset`` (same arguments) whose labels are permuted among its rows, seeded
    by ``seed`` (``ml.evaluate.shuffled_labels``): the shuffled-label control's training rows.
    The permutation is drawn from the rows' labels (``wanted_windows``), never from images, and
    ``wanted_windows`` gives the permuted labels too, so class weights count what is trained on
    (a permutation keeps the counts)."""

    def __init__(self, *args, seed: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        truth = [LakeImageDataset.wanted_windows(self, part) for part in self.partitions]
        values = np.concatenate([frame["value"].to_numpy() for frame in truth])
        permuted = shuffled_labels(values, seed)
        offsets = np.cumsum([0, *(frame.height for frame in truth)])
        self.labels = {
            part: frame.select("decision_time").with_columns(
                pl.Series("value", permuted[offsets[i] : offsets[i + 1]])
            )
            for i, (part, frame) in enumerate(zip(self.partitions, truth, strict=True))
        }

    def wanted_windows(self, part: WindowPartition) -> pl.DataFrame:
        return self.relabelled(part, super().wanted_windows(part))

    def rendered_partition(
        self, con: duckdb.DuckDBPyConnection, part: WindowPartition
    ) -> tuple[pl.DataFrame, Iterator[np.ndarray]]:
        frame, chunks = super().rendered_partition(con, part)
        return self.relabelled(part, frame), chunks

    def relabelled(self, part: WindowPartition, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.drop("value").join(
            self.labels[part], on="decision_time", how="left", maintain_order="left"
        )


# --- helpers -----------------------------------------------------------------------------------


def rows(data: LakeImageDataset) -> pl.DataFrame:
    """decision_time, label, value, known_at of every sample of ``data``, read without images."""
    frames = [data.wanted_windows(part) for part in data.partitions]
    return pl.concat(frames) if frames else pl.DataFrame()


def training_fields(result: TrainResult, seconds: float) -> dict[str, object]:
    """The training summary stored on the model's result rows."""
    samples = sum(record.train_samples for record in result.history)
    pass_seconds = sum(r.train_samples / r.samples_per_s for r in result.history)
    return {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "train_seconds": seconds,
        "train_samples_per_s": samples / pass_seconds if pass_seconds else None,
    }


def pooled_test_row(metrics: pl.DataFrame, model: str) -> dict[str, object]:
    """The model's pooled test row of ``metrics``, JSON-able, for the model card."""
    pooled = metrics.filter(
        (pl.col("scorer") == model) & (pl.col("split") == TEST) & pl.col("block").is_null()
    )
    return {name: _json_value(value) for name, value in pooled.row(0, named=True).items()}


def recorded_digest(path: Path) -> str:
    """The sha256 its sidecar records (cheap), or of its bytes when there is not exactly one."""
    digests = recorded_digests(path.parent).get(path.name, set())
    return next(iter(digests)) if len(digests) == 1 else digest_of(path)


def days_of(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The UTC days ``[start, end)`` touches."""
    return day_range(start.date(), (end - _MICROSECOND).date())


def _micros(column: pl.Series) -> np.ndarray:
    return column.dt.epoch("us").to_numpy()


def _json_value(value: object) -> object:
    """Dates as ISO text, NaN as None; other values as they are."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _json_default(value: object) -> object:
    """What ``json.dumps`` cannot write itself: dates and paths as text."""
    if isinstance(value, dt.date | Path):
        return _json_value(value)
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form for a fingerprint")


def _since(started: float) -> float:
    return time.perf_counter() - started
