"""ml.inference: an experiment cell's ONNX export scores the latest complete window of its series.

A small ``custom`` CNN (32 px, not trained: its batch-norm statistics are those of the lake's
images, so its probabilities spread like a trained model's) is checkpointed as a cell with its
ONNX export; copies of that checkpoint with edited cards stand for other cells."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.lake import Lake, connect
from ml.experiment import Cell
from ml.export import export_onnx
from ml.image_cache import renderer_version
from ml.inference import Prediction, find_checkpoint, predict_latest
from ml.rendering import CandleStyle, render
from ml.results import METRICS_SCHEMA
from ml.train import (
    CARD,
    CheckpointError,
    TrainConfig,
    TrainResult,
    as_inputs,
    checkpoint_dir,
    save_checkpoint,
)
from ml.window_data import WindowPartition, load_windows
from tests.helpers import simulated_dataset_lake, with_batch_norm_of
from tests.ml.test_train import small_custom

SYMBOL, INTERVAL, DATASET, WINDOW, MODEL = "BTCUSDT", "5m", "regular", 5, "custom"
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
STYLE = CandleStyle(height=32, width=32)
TRAINING = "exp1_t1d"
FINGERPRINT = "f" * 64
CPU = torch.device("cpu")


def cell(
    symbol: str = SYMBOL, training: str = TRAINING, label: str | None = None, shuffled: bool = False
) -> dict[str, object]:
    """A card's ``cell`` entry, as ml.experiment writes it."""
    return Cell(symbol, INTERVAL, DATASET, WINDOW, MODEL, training, label, shuffled).card()


def folds(honest: bool = True) -> list[dict[str, object]]:
    reasons = [] if honest else ["test_before_train"]
    return [{"fold": f"{TRAINING}_b{k}", "is_honest": honest, "reasons": reasons} for k in (1, 2)]


def day_windows(lake: Lake, day: dt.date):
    with contextlib.closing(connect()) as con:
        return load_windows(lake, con, WindowPartition(SYMBOL, INTERVAL, day, DATASET, WINDOW))


def calibrated_custom(images: np.ndarray) -> torch.nn.Module:
    """``small_custom`` whose batch-norm statistics are those of ``images``, in eval mode."""
    return with_batch_norm_of(small_custom(), images)


def save_cell(lake: Lake, model: torch.nn.Module, entry: dict[str, object]) -> Path:
    """Checkpoint ``model`` as cell ``entry``, its ONNX export beside the weights."""
    run_dir = checkpoint_dir(lake, MODEL, entry["key"])
    onnx_path = export_onnx(
        model, (1, STYLE.channels, STYLE.height, STYLE.width), run_dir / "model.onnx"
    )
    result = TrainResult(model, [], 1, 0.69, "max_epochs", (1, 1), (1.0, 1.0), "cpu")
    extra = {
        "cell": entry,
        "fingerprint": FINGERPRINT,
        "folds": folds(),
        "image": {
            "style": "candle-32x32",
            "style_fields": dataclasses.asdict(STYLE),
            "in_chans": 3,
            "height": 32,
            "width": 32,
        },
        "onnx": {
            "file": onnx_path.name,
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        },
    }
    provenance = {"renderer_version": renderer_version()}
    return save_checkpoint(
        lake, MODEL, entry["key"], model, TrainConfig(), result, provenance, extra=extra
    )


def clone_cell(lake: Lake, source: Path, entry: dict[str, object], **card_changes) -> Path:
    """A copy of checkpoint ``source`` in ``lake`` as cell ``entry``, its card edited."""
    target = checkpoint_dir(lake, MODEL, entry["key"])
    shutil.copytree(source, target)
    card = json.loads((target / CARD).read_text())
    card.update(cell=entry, run=entry["key"], **card_changes)
    (target / CARD).write_text(json.dumps(card))
    return target


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), SYMBOL, DAYS)


@pytest.fixture(scope="module")
def model(lake) -> torch.nn.Module:
    batch, _ = day_windows(lake, DAYS[0])
    return calibrated_custom(render(batch, STYLE))


@pytest.fixture(scope="module")
def served(lake, model) -> Path:
    return save_cell(lake, model, cell())


# --- predict_latest ----------------------------------------------------------------------------


def test_the_latest_window_is_scored_through_onnx_as_torch_scores_it(lake, model, served):
    prediction = predict_latest(lake, served)

    windows = lake.read_partition(
        "windows", "windows", {"symbol": SYMBOL, "interval": INTERVAL, "date": DAYS[-1]}
    ).filter((pl.col("dataset") == DATASET) & (pl.col("window_size") == WINDOW))
    latest = windows.sort("decision_time").row(-1, named=True)
    assert prediction.decision_time == latest["decision_time"]

    batch, frame = day_windows(lake, DAYS[-1])
    assert frame["decision_time"][-1] == latest["decision_time"]
    with torch.no_grad():
        logits = model(as_inputs(torch.from_numpy(render(batch, STYLE)), CPU))
    probabilities = torch.softmax(logits, dim=1)[:, 1].numpy()
    assert probabilities.std() > 0.01  # the check below could tell one window from another
    assert prediction.probability == pytest.approx(float(probabilities[-1]), abs=1e-4)
    assert prediction == Prediction(
        SYMBOL,
        INTERVAL,
        MODEL,
        cell()["key"],
        latest["decision_time"],
        prediction.probability,
        None,
        served,
    )


def metrics_rows(key: str, fingerprint: str) -> pl.DataFrame:
    """results/metrics rows of cell ``key``: the model's train, block 1 and pooled test rows, and
    a baseline's pooled test row; auroc tells them apart (other columns are left null)."""
    rows = [
        {"scorer": MODEL, "role": "model", "split": "train", "block": None, "auroc": 0.9},
        {"scorer": MODEL, "role": "model", "split": "test", "block": 1, "auroc": 0.6},
        {"scorer": MODEL, "role": "model", "split": "test", "block": None, "auroc": 0.53},
        {"scorer": "majority", "role": "baseline", "split": "test", "block": None, "auroc": 0.5},
    ]
    rows = [{**row, "cell": key, "fingerprint": fingerprint} for row in rows]
    return pl.DataFrame(rows, schema=METRICS_SCHEMA)


def test_the_cells_pooled_test_metrics_of_its_model_are_attached(lake, served, caplog):
    entry = cell(training="exp1_t2d")
    run_dir = clone_cell(lake, served, entry)
    lake.write_partition(
        "results", "metrics", {"cell": entry["key"]}, metrics_rows(entry["key"], FINGERPRINT)
    )

    metrics = predict_latest(lake, run_dir).test_metrics
    assert metrics is not None
    assert (metrics["cell"], metrics["auroc"], metrics["block"]) == (entry["key"], 0.53, None)

    lake.write_partition(
        "results", "metrics", {"cell": entry["key"]}, metrics_rows(entry["key"], "e" * 64)
    )
    with caplog.at_level(logging.WARNING, logger="ml.inference"):
        assert predict_latest(lake, run_dir).test_metrics is None  # another training's metrics
    assert f"not the checkpoint's {FINGERPRINT}" in caplog.text


def test_a_tampered_or_missing_onnx_file_is_refused_naming_it(lake, served):
    run_dir = clone_cell(lake, served, cell(training="exp1_t3d"))
    onnx_path = run_dir / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights: onnxruntime would still run it
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"ONNX file {onnx_path} is damaged"):
        predict_latest(lake, run_dir)

    onnx_path.unlink()
    with pytest.raises(CheckpointError, match=f"ONNX file {onnx_path} .* is missing"):
        predict_latest(lake, run_dir)


@pytest.fixture
def lake_copy(tmp_path, lake) -> Lake:
    """A copy of the module's lake that a test may damage."""
    copy = Lake(tmp_path / "lake")
    shutil.copytree(lake.root, copy.root)
    return copy


def last_day() -> dict[str, object]:
    return {"symbol": SYMBOL, "interval": INTERVAL, "date": DAYS[-1]}


def test_the_latest_window_needs_no_label(lake_copy, served):
    shutil.rmtree(lake_copy.partition_dir("labels", "labels", last_day()))
    prediction = predict_latest(lake_copy, checkpoint_dir(lake_copy, MODEL, served.name))
    _, frame = day_windows(lake_copy, DAYS[-1])
    assert prediction.decision_time == frame["decision_time"][-1]


def test_a_newest_day_without_windows_falls_back_to_the_day_before_with_a_warning(
    lake_copy, served, caplog
):
    run_dir = checkpoint_dir(lake_copy, MODEL, served.name)
    _, frame = day_windows(lake_copy, DAYS[0])
    others = lake_copy.read_partition("windows", "windows", last_day())
    others = others.filter(pl.col("dataset") != DATASET)
    for damage in ("no windows of the dataset", "no windows partition"):
        if damage == "no windows of the dataset":
            lake_copy.write_partition("windows", "windows", last_day(), others)
        else:
            shutil.rmtree(lake_copy.partition_dir("windows", "windows", last_day()))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ml.inference"):
            prediction = predict_latest(lake_copy, run_dir)
        assert prediction.decision_time == frame["decision_time"][-1], damage
        assert f"curated klines of {DAYS[-1]} have no complete regular window" in caplog.text

    shutil.rmtree(lake_copy.table_dir("windows", "windows"))
    with pytest.raises(
        InvalidRequestError, match=f"no complete regular window of 5 candles for {SYMBOL} 5m"
    ):
        predict_latest(lake_copy, run_dir)


# --- find_checkpoint ----------------------------------------------------------------------------


def at(hour: int) -> str:
    return dt.datetime(2025, 1, 1, hour, tzinfo=dt.UTC).isoformat()


@pytest.fixture
def models_lake(tmp_path, served) -> Lake:
    """A lake holding only checkpoints: two honest cells of SYMBOL and newer ones that may not
    answer (controls, seed_replica, a card with a dishonest fold, one without ONNX, another
    symbol's)."""
    lake = Lake(tmp_path)
    clone_cell(lake, served, cell(training="exp1_t1d"), created_at=at(1))
    clone_cell(lake, served, cell(training="exp1_t2d"), created_at=at(2))
    clone_cell(lake, served, cell(label="leaky_last_candle_up"), created_at=at(3))
    clone_cell(lake, served, cell(shuffled=True), created_at=at(4))
    clone_cell(lake, served, cell(training="seed_t1d"), created_at=at(5), folds=folds(False))
    clone_cell(lake, served, cell(training="exp1_t4d"), created_at=at(8), folds=folds(False))
    clone_cell(lake, served, cell(training="exp1_t3d"), created_at=at(6), onnx=None)
    clone_cell(lake, served, cell(symbol="ETHUSDT"), created_at=at(7))
    return lake


def test_the_newest_honest_non_control_cell_is_found(models_lake):
    newest_honest = checkpoint_dir(models_lake, MODEL, cell(training="exp1_t2d")["key"])
    assert find_checkpoint(models_lake, SYMBOL, MODEL) == newest_honest


def test_a_named_cell_is_found_even_a_control(models_lake):
    leaky = cell(label="leaky_last_candle_up")["key"]
    assert find_checkpoint(models_lake, SYMBOL, MODEL, leaky) == checkpoint_dir(
        models_lake, MODEL, leaky
    )
    with pytest.raises(InvalidRequestError, match=f"is a {SYMBOL} cell, not ETHUSDT"):
        find_checkpoint(models_lake, "ETHUSDT", MODEL, leaky)
    with pytest.raises(InvalidRequestError, match="no checkpoint of cell 'nope' for"):
        find_checkpoint(models_lake, SYMBOL, MODEL, "nope")


def test_no_usable_checkpoint_is_a_clear_error(models_lake, tmp_path):
    with pytest.raises(InvalidRequestError) as raised:
        find_checkpoint(models_lake, "DOGEUSDT", MODEL)
    message = str(raised.value)
    assert "no usable checkpoint of model 'custom' for DOGEUSDT" in message
    assert f"{cell(shuffled=True)['key']} (a control: trained on shuffled labels)" in message
    assert (
        f"{cell(training='seed_t1d')['key']} (not honest: seed_replica, test_before_train)"
        in message
    )
    assert (
        f"{cell(training='exp1_t4d')['key']} (not honest: experiment_i, test_before_train)"
        in message
    )
    assert f"{cell(training='exp1_t3d')['key']} (no ONNX export)" in message

    with pytest.raises(
        InvalidRequestError, match="jkx has no experiment-cell checkpoints; run `candlelake train`"
    ):
        find_checkpoint(models_lake, SYMBOL, "jkx")
