"""The latest complete window of a series, scored by an experiment cell's ONNX export.

``find_checkpoint(lake, symbol, model)`` picks a cell's checkpoint under ``models/<model>/``:
the one of a named cell, or else the newest (``created_at``) that may answer for ``symbol``: an
honest cell (every fold of its card honest) that is no control (its label is not leaky, its
training labels were not shuffled) and has an ONNX export.

``predict_latest(lake, checkpoint_dir)`` reads the card, refuses an ONNX file whose sha256 is
not the card's, finds the cell's latest complete window in the lake, draws it in the card's image
style and returns ``Prediction``: onnxruntime's probability of up, the window's decision time,
and the cell's pooled test metrics of the model from ``results/metrics`` (None while the cell has
none of this checkpoint's fingerprint).

The latest complete window is the newest ``windows/windows`` row of the cell's dataset and
window size for its symbol and interval whose candles are all in the lake. Its label is not
needed (it is usually not known yet). Days are tried newest first: a day without a windows
partition, or whose windows of the cell are all incomplete (a re-landed day), is passed over for
the day before, with a warning naming the newer days of curated klines left out, so that a stale
answer is never silent; no such window on any day is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.lake import Lake, connect
from dagster_project.transform.curate import curated_file
from ml.cards import CARD, MODELS_LAYER, CheckpointError, checkpoint_dir, read_card
from ml.export import UP, OnnxModel
from ml.image_cache import has_windows, renderer_version
from ml.protocols import LEAKY_LABELS
from ml.rendering import STYLES, Style, WindowBatch, render
from ml.results import CELL_KEY, METRICS_TABLE, RESULTS_LAYER, read_metrics
from ml.window_data import WindowPartition, load_windows

log = logging.getLogger(__name__)

CELL_FIELDS = ("key", "symbol", "interval", "dataset", "window_size", "model")
TRAIN_HINT = "run `candlelake train` (or `candlelake experiment`) first"


@dataclass(frozen=True)
class Prediction:
    symbol: str
    interval: str
    model: str
    cell: str  # the cell key
    decision_time: dt.datetime  # the decision time of the latest complete window in the lake
    probability: float  # P(up) from onnxruntime
    test_metrics: dict[str, object] | None  # the cell's pooled test row of the model
    checkpoint: Path


def find_checkpoint(lake: Lake, symbol: str, model: str, cell_key: str | None = None) -> Path:
    """The run directory of ``cell_key``'s checkpoint of ``model`` (its card must be of
    ``symbol``), or of the newest honest, non-control cell of ``symbol`` with an ONNX export.
    Raises ``InvalidRequestError`` naming symbol and model and listing the checkpoints there are."""
    if cell_key is not None:
        return named_checkpoint(lake, symbol, model, cell_key)
    cards = cell_cards(lake, model)
    usable = [
        (path, card)
        for path, card in cards
        if card["cell"]["symbol"] == symbol and why_not_servable(card) is None
    ]
    if not usable:
        raise InvalidRequestError(no_checkpoint_message(lake, symbol, model, cards))
    return max(usable, key=lambda found: (created_at(found[1]), found[1]["cell"]["key"]))[0]


def predict_latest(
    lake: Lake, checkpoint_dir: str | Path, con: duckdb.DuckDBPyConnection | None = None
) -> Prediction:
    """Score the latest complete window of the checkpoint's cell through its ONNX export."""
    run_dir = Path(checkpoint_dir)
    card = read_card(run_dir / CARD)
    cell = card_cell(card, run_dir)
    onnx_path = verified_onnx(run_dir, card)
    style = card_style(card, run_dir)
    warn_if_renderer_changed(card, run_dir)
    with connection(con) as open_con:
        window, decision_time = latest_window(lake, open_con, cell)
    probability = OnnxModel(onnx_path).predict_proba(render(window, style))[0, UP]
    return Prediction(
        symbol=cell["symbol"],
        interval=cell["interval"],
        model=cell["model"],
        cell=cell["key"],
        decision_time=decision_time,
        probability=float(probability),
        test_metrics=pooled_test_metrics(lake, cell, card.get("fingerprint")),
        checkpoint=run_dir,
    )


# ---------------------------------------------------------------------------------------------
# Choosing a checkpoint


def named_checkpoint(lake: Lake, symbol: str, model: str, cell_key: str) -> Path:
    run_dir = checkpoint_dir(lake, model, cell_key)  # refuses a name that is not a folder's
    if not (run_dir / CARD).is_file():
        raise InvalidRequestError(
            f"no checkpoint of cell {cell_key!r} for {symbol} {model} at {run_dir}; {TRAIN_HINT}"
        )
    cell = card_cell(read_card(run_dir / CARD), run_dir)
    if cell["symbol"] != symbol:
        raise InvalidRequestError(
            f"cell {cell_key!r} of {model} is a {cell['symbol']} cell, not {symbol}"
        )
    return run_dir


def cell_cards(lake: Lake, model: str) -> list[tuple[Path, dict[str, object]]]:
    """Every readable experiment-cell card of ``model``, with its run directory. A card that
    cannot be read, or one of a training outside any cell, is passed over with a warning."""
    found = []
    model_dir = checkpoint_dir(lake, model, "any").parent  # refuses a model name like "../x"
    for card_path in sorted(model_dir.glob(f"*/{CARD}")):
        try:
            card = read_card(card_path)
            card_cell(card, card_path.parent)
        except CheckpointError as exc:
            log.warning("passing over %s: %s", card_path.parent, exc)
            continue
        found.append((card_path.parent, card))
    return found


def why_not_servable(card: dict[str, object]) -> str | None:
    """Why a cell may not answer a plain ``predict``; None when it may."""
    cell = card["cell"]
    label = cell.get("label")
    folds = card.get("folds") or []
    if not folds:
        return "not honest: its card records no folds"
    if not all(fold.get("is_honest") for fold in folds):
        reasons = sorted({reason for fold in folds for reason in fold.get("reasons") or ()})
        return f"not honest: {cell.get('protocol')}, {', '.join(reasons) or 'a dishonest fold'}"
    if label in LEAKY_LABELS:
        return f"a control: label {label} is leaky"
    if cell.get("shuffled"):
        return "a control: trained on shuffled labels"
    if not card.get("onnx"):
        return "no ONNX export"
    return None


def no_checkpoint_message(
    lake: Lake, symbol: str, model: str, cards: list[tuple[Path, dict[str, object]]]
) -> str:
    head = f"no usable checkpoint of model {model!r} for {symbol} in {lake.root / MODELS_LAYER}"
    if not cards:
        return f"{head}: {model} has no experiment-cell checkpoints; {TRAIN_HINT}"
    listed = "; ".join(
        f"{card['cell']['key']} ({why_not_servable(card) or 'usable'})"
        for _, card in sorted(cards, key=lambda found: found[1]["cell"]["key"])
    )
    return (
        f"{head} (an honest, non-control cell with an ONNX export); {model} has: {listed}; "
        f"{TRAIN_HINT}, or name a cell"
    )


def created_at(card: dict[str, object]) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(card.get("created_at")))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# Reading a card


def card_cell(card: dict[str, object], run_dir: Path) -> dict[str, object]:
    cell = card.get("cell")
    missing = [f for f in CELL_FIELDS if not isinstance(cell, dict) or f not in cell]
    if missing:
        raise CheckpointError(
            f"checkpoint {run_dir} is not an experiment cell's: its card lacks cell "
            f"{', '.join(missing)}"
        )
    return cell


def verified_onnx(run_dir: Path, card: dict[str, object]) -> Path:
    """The card's ONNX file, once its bytes match the card's sha256."""
    entry = card.get("onnx")
    if not isinstance(entry, dict) or not {"file", "sha256"} <= set(entry):
        raise CheckpointError(
            f"checkpoint {run_dir} has no ONNX export in its card; train the cell again with "
            "export_onnx on"
        )
    path = run_dir / entry["file"]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise CheckpointError(
            f"the ONNX file {path} that checkpoint {run_dir} names is missing; train the cell again"
        ) from None
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"the ONNX file {path} is damaged or was replaced: sha256 {digest}, but the card "
            f"recorded {entry['sha256']}; train the cell again"
        )
    return path


def card_style(card: dict[str, object], run_dir: Path) -> Style:
    """The image style the cell was trained on, rebuilt from the card's style fields."""
    fields = dict((card.get("image") or {}).get("style_fields") or {})
    kind = STYLES.get(fields.get("name"))
    known = {f.name for f in dataclasses.fields(kind)} if kind else set()
    if kind is None or not set(fields) <= known:
        raise CheckpointError(
            f"checkpoint {run_dir}: its card's image style_fields {fields} are not a style of "
            f"{', '.join(STYLES)}"
        )
    return kind(**fields)


def warn_if_renderer_changed(card: dict[str, object], run_dir: Path) -> None:
    trained_with = (card.get("data") or {}).get("renderer_version")
    if trained_with is not None and trained_with != renderer_version():
        log.warning(
            "%s was trained on images of renderer %s; ml/rendering.py is now %s, so its input "
            "may differ from what it learned on",
            run_dir,
            trained_with,
            renderer_version(),
        )


@contextlib.contextmanager
def connection(con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    if con is not None:
        yield con
        return
    con = connect()
    try:
        yield con
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# The latest window and the cell's metrics


def latest_window(
    lake: Lake, con: duckdb.DuckDBPyConnection, cell: dict[str, object]
) -> tuple[WindowBatch, dt.datetime]:
    """The newest complete window of the cell's series (one-window batch) and its decision time,
    from the newest day that has one."""
    symbol, interval = cell["symbol"], cell["interval"]
    for day in window_days(lake, symbol, interval):
        part = WindowPartition(symbol, interval, day, cell["dataset"], int(cell["window_size"]))
        batch, frame = load_windows(lake, con, part)
        if frame.height:
            warn_about_newer_days(lake, cell, day)
            return batch.take(slice(batch.size - 1, None)), frame["decision_time"][-1]
    raise InvalidRequestError(
        f"no complete {cell['dataset']} window of {cell['window_size']} candles for {symbol} "
        f"{interval} in {lake.root}; materialize windows/windows for its days first"
    )


def window_days(lake: Lake, symbol: str, interval: str) -> list[dt.date]:
    """The days with a windows partition of the series, newest first."""
    return [
        day
        for day in partition_days(lake, "windows", "windows", symbol, interval)
        if has_windows(lake, symbol, interval, day)
    ]


def partition_days(lake: Lake, layer: str, table: str, symbol: str, interval: str) -> list[dt.date]:
    """The ``date=`` folders of a symbol-interval's partitions, newest first."""
    series = lake.partition_dir(layer, table, {"symbol": symbol, "interval": interval})
    days = (folder.name.removeprefix("date=") for folder in series.glob("date=*"))
    return sorted((dt.date.fromisoformat(day) for day in days), reverse=True)


def warn_about_newer_days(lake: Lake, cell: dict[str, object], day: dt.date) -> None:
    symbol, interval = cell["symbol"], cell["interval"]
    newer = [
        d.isoformat()
        for d in partition_days(lake, "curated", "klines", symbol, interval)
        if d > day and curated_file(lake, symbol, interval, d).is_file()
    ]
    if newer:
        log.warning(
            "%s %s: curated klines of %s have no complete %s window of %s candles (no "
            "windows/windows partition, or its windows lack candles); predicting the latest "
            "window of %s instead; materialize windows/windows for those days",
            symbol,
            interval,
            ", ".join(sorted(newer)),
            cell["dataset"],
            cell["window_size"],
            day,
        )


def pooled_test_metrics(
    lake: Lake, cell: dict[str, object], fingerprint: str | None
) -> dict[str, object] | None:
    """The cell's pooled test row of its model in ``results/metrics``: None when the cell has no
    metrics, or only metrics of another fingerprint (another training than this checkpoint's)."""
    if not lake.partition_files(RESULTS_LAYER, METRICS_TABLE, {CELL_KEY: cell["key"]}):
        return None
    metrics = read_metrics(lake, [cell["key"]])
    rows = metrics.filter(
        (pl.col("split") == "test")
        & pl.col("block").is_null()
        & (pl.col("scorer") == cell["model"])
    )
    if fingerprint is not None:
        stored = rows["fingerprint"].unique().to_list()
        rows = rows.filter(pl.col("fingerprint") == fingerprint)
        if rows.is_empty() and stored:
            log.warning(
                "results/metrics of cell %s are of fingerprint %s, not the checkpoint's %s; "
                "no test metrics attached",
                cell["key"],
                ", ".join(map(str, stored)),
                fingerprint,
            )
    return rows.row(0, named=True) if rows.height else None
