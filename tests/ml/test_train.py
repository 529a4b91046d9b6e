"""ml.train: the training loop on a simulated lake, its guards, and checkpoints in the lake."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn
from torch.utils.data import IterableDataset

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.lake import Lake
from ml.image_cache import renderer_version
from ml.image_dataset import ImageSample, LakeImageDataset
from ml.rendering import CandleStyle
from ml.train import (
    CheckpointError,
    EarlyStopping,
    ShuffleBuffer,
    TrainConfig,
    TrainingError,
    data_loader,
    data_provenance,
    evaluate_loss,
    label_counts,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    train,
)
from ml.zoo import create_model
from tests.helpers import simulated_dataset_lake

SYMBOL = "BTCUSDT"
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))  # the default spec: train 03-01, validation 03-02
INTERVAL, DATASET, WINDOW = "5m", "regular", 5
LEAKY = "leaky_last_candle_up"  # drawn in the image: the last candle's colour
STYLE = CandleStyle(height=32, width=32)
CONFIG = TrainConfig(lr=3e-3, batch_size=32, max_epochs=4, patience=2, t_0=4)
TIMING = {"seconds", "samples_per_s"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), SYMBOL, DAYS)


def split_data(lake: Lake, split: str, label: str = LEAKY) -> LakeImageDataset:
    return LakeImageDataset(
        lake, SYMBOL, INTERVAL, DAYS[0], DAYS[-1], DATASET, WINDOW, STYLE, split, label
    )


def small_custom(dropout: float = 0.0) -> nn.Module:
    """The zoo's ``custom`` CNN, three narrow blocks for 32 × 32 images, seeded."""
    torch.manual_seed(0)
    return create_model(
        "custom", in_chans=3, num_classes=2, image_size=32, channels=(8, 16, 32), dropout=dropout
    )


@pytest.fixture(scope="module")
def leaky_run(lake):
    records = []
    model = small_custom()
    result = train(
        model, split_data(lake, "train"), split_data(lake, "validation"), CONFIG, records.append
    )
    return result, records


def split_label_counts(lake: Lake, split: str) -> tuple[int, int]:
    """Rows per class of ``split``, counted from windows/splits and labels/labels directly."""
    keys = {"spec": "default", "symbol": SYMBOL, "interval": INTERVAL}
    rows = pl.read_parquet(lake.partition_files("windows", "splits", keys)).filter(
        (pl.col("dataset") == DATASET)
        & (pl.col("window_size") == WINDOW)
        & (pl.col("split") == split)
    )
    labels = pl.concat(
        lake.read_partition("labels", "labels", {"symbol": SYMBOL, "interval": INTERVAL, "date": d})
        for d in DAYS
    ).filter(pl.col("label") == LEAKY)
    values = rows.select("decision_time").join(labels, on="decision_time")["value"]
    return int((values == 0.0).sum()), int((values == 1.0).sum())


def test_a_label_drawn_in_the_image_is_learned(leaky_run):
    """The leakage control is learnable: a real signal reaches the model through the loop."""
    result, records = leaky_run
    best = result.history[result.best_epoch - 1]
    assert best.validation_accuracy >= 0.95
    assert best.validation_loss == result.best_validation_loss < result.history[0].validation_loss
    assert records == result.history and result.epochs_run == len(records)
    assert all(r.train_samples > 200 and r.validation_samples > 200 for r in records)
    assert records[0].lr == CONFIG.lr > records[-1].lr  # cosine annealing within the first cycle


def test_the_best_validation_weights_are_restored(lake, leaky_run):
    result, _ = leaky_run
    criterion = nn.CrossEntropyLoss(torch.tensor(result.class_weights), reduction="none")
    loss, accuracy, _ = evaluate_loss(
        result.model,
        data_loader(split_data(lake, "validation"), CONFIG),
        criterion,
        torch.device("cpu"),
    )
    best = result.history[result.best_epoch - 1]
    assert loss == pytest.approx(best.validation_loss, rel=1e-6)
    assert accuracy == best.validation_accuracy


def test_class_weights_count_the_training_rows_only(lake, leaky_run):
    result, _ = leaky_run
    train_counts = split_label_counts(lake, "train")
    assert train_counts != split_label_counts(lake, "validation")  # the two can be told apart
    assert result.label_counts == train_counts
    total = sum(train_counts)
    assert result.class_weights == pytest.approx([total / (2 * c) for c in train_counts])
    assert label_counts(split_data(lake, "train")) == train_counts


def test_the_same_seed_gives_the_same_weights_and_history(lake):
    """With dropout, so the seed reaches the model as well as the shuffling."""
    config = dataclasses.replace(CONFIG, max_epochs=2, seed=7)
    runs = [
        train(
            small_custom(dropout=0.2),
            split_data(lake, "train"),
            split_data(lake, "validation"),
            config,
        )
        for _ in range(2)
    ]

    def history(result):
        return [
            {k: v for k, v in dataclasses.asdict(r).items() if k not in TIMING}
            for r in result.history
        ]

    first, second = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert history(runs[0]) == history(runs[1])


def test_early_stopping_stops_when_the_validation_loss_stops_improving(lake):
    """The second epoch does not beat the first by min_delta: with patience 1 training stops
    there and hands back the first epoch's weights."""
    config = dataclasses.replace(CONFIG, max_epochs=10, patience=1, min_delta=10.0)
    model = small_custom()
    snapshots = []
    result = train(
        model,
        split_data(lake, "train"),
        split_data(lake, "validation"),
        config,
        lambda _: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}),
    )
    assert (result.epochs_run, result.best_epoch, result.stop_reason) == (2, 1, "early_stopping")
    assert [r.improved for r in result.history] == [True, False]
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[0][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[-1][k]) for k in final)


def test_early_stopping_counts_epochs_since_the_best():
    stopper, model = EarlyStopping(patience=2), nn.Linear(1, 1)
    improved = []
    for epoch, loss in enumerate([1.0, 0.8, 0.85, 0.7, 0.75, 0.9], start=1):
        improved.append(stopper.update(epoch, loss, model))
        if stopper.should_stop:
            break
    assert improved == [True, True, False, True, False, False]
    assert (stopper.best_epoch, stopper.best_loss) == (4, 0.7)


@pytest.mark.parametrize(
    ("train_split", "validation_split", "message"),
    [
        ("validation", "validation", "the train data is the 'validation' split"),
        ("train", "test", "the validation data is the 'test' split"),
    ],
)
def test_only_the_train_and_validation_splits_are_accepted(
    lake, train_split, validation_split, message
):
    with pytest.raises(InvalidRequestError, match=message):
        train(
            small_custom(),
            split_data(lake, train_split),
            split_data(lake, validation_split),
            CONFIG,
        )


def test_train_and_validation_must_share_a_split_spec(lake):
    validation = split_data(lake, "validation")
    validation.split_spec = dataclasses.replace(validation.split_spec, name="other")
    with pytest.raises(InvalidRequestError, match=r"different split specs \['default', 'other'\]"):
        train(small_custom(), split_data(lake, "train"), validation, CONFIG)


def test_a_label_that_is_not_binary_is_refused(lake):
    with pytest.raises(TrainingError, match=r"label value .* is not a class"):
        label_counts(split_data(lake, "train", label="fwd_logret_1"))


class Synthetic(IterableDataset):
    """``count`` random 8 × 8 images with alternating labels (a dataset that is not the lake's)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(
            0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=generator
        )

    def __iter__(self):
        for index, image in enumerate(self.images):
            yield ImageSample(image, torch.tensor(float(index % 2)), index)


def test_accumulated_half_batches_step_like_whole_batches():
    def trained(batch_size: int, steps: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        config = TrainConfig(batch_size=batch_size, accumulation_steps=steps, max_epochs=1)
        return train(model, Synthetic(128), Synthetic(32), config).model.state_dict()

    whole, halves, unaccumulated = trained(64, 1), trained(32, 2), trained(32, 1)
    assert all(torch.allclose(whole[k], halves[k], atol=1e-6) for k in whole)
    assert not all(torch.allclose(whole[k], unaccumulated[k], atol=1e-6) for k in whole)


def test_the_shuffle_buffer_is_seeded_and_holds_at_most_its_size():
    class Numbers(IterableDataset):
        def __iter__(self):
            yield from range(100)

    def order(seed):
        return list(ShuffleBuffer(Numbers(), 10, seed=(seed, 1)))

    first = order(0)
    assert sorted(first) == list(range(100)) and first != list(range(100))
    assert first == order(0) and first != order(1)
    assert all(item <= position + 10 for position, item in enumerate(first))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "lr must be > 0"),
        ("batch_size", 0, "batch_size must be > 0"),
        ("t_mult", 0, "t_mult must be ≥ 1"),
        ("max_grad_norm", -1.0, "max_grad_norm must be > 0 or None"),
        ("min_lr", 1.0, "min_lr 1.0 must be below lr"),
    ],
)
def test_a_bad_config_is_refused(field, value, message):
    with pytest.raises(InvalidRequestError, match=message):
        TrainConfig(**{field: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_auto_uses_the_cpu_without_cuda_and_cuda_is_never_required():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InvalidRequestError, match="CUDA is not available"):
        resolve_device("cuda")


# --- checkpoints -----------------------------------------------------------------------------


@pytest.fixture
def checkpoint(lake, leaky_run, tmp_path):
    result, _ = leaky_run
    own = Lake(tmp_path / "lake")
    provenance = data_provenance(split_data(lake, "train"), split_data(lake, "validation"))
    return own, save_checkpoint(own, "custom", "cell-1", result.model, CONFIG, result, provenance)


def test_a_checkpoint_round_trips_with_its_model_card(leaky_run, checkpoint):
    result, _ = leaky_run
    own, path = checkpoint
    loaded = load_checkpoint(path)
    assert path == own.root / "models" / "custom" / "cell-1"
    assert loaded.model == "custom" and load_checkpoint(path / "card.json").card == loaded.card
    state = result.model.state_dict()
    assert state.keys() == loaded.state_dict.keys()
    assert all(torch.equal(state[k], loaded.state_dict[k]) for k in state)
    fresh = small_custom()
    fresh.load_state_dict(loaded.state_dict)
    images = torch.rand(4, 3, 32, 32)
    assert torch.equal(fresh.eval()(images), result.model.eval()(images))

    card = loaded.card
    assert card["config"] == dataclasses.asdict(CONFIG)
    trained_on = card["data"]["train"]
    assert trained_on["symbols"] == [SYMBOL] and trained_on["interval"] == INTERVAL
    assert trained_on["days"] == [d.isoformat() for d in DAYS]
    assert (trained_on["label"], trained_on["label_is_leaky"]) == (LEAKY, True)
    assert trained_on["style"] == "candle-32x32" and trained_on["split"] == "train"
    assert trained_on["split_spec"] == {
        "name": "default",
        "train_start": None,
        "validation_start": "2024-03-02T00:00:00+00:00",
        "test_start": "2024-03-03T00:00:00+00:00",
        "test_end": None,
        "embargo_bars": 30,
    }
    assert card["data"]["renderer_version"] == renderer_version()
    assert card["training"]["best_epoch"] == result.best_epoch
    assert len(card["training"]["history"]) == result.epochs_run


def test_saving_again_replaces_the_checkpoint_whole(leaky_run, checkpoint):
    result, _ = leaky_run
    own, path = checkpoint
    changed = small_custom()
    save_checkpoint(own, "custom", "cell-1", changed, CONFIG, result, {})
    assert len(list(path.glob("weights-*.pt"))) == 1
    loaded = load_checkpoint(path)
    assert all(torch.equal(changed.state_dict()[k], v) for k, v in loaded.state_dict.items())
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_save_leaves_the_previous_checkpoint_readable(leaky_run, checkpoint, monkeypatch):
    result, _ = leaky_run
    own, path = checkpoint
    before = load_checkpoint(path)
    real_replace = os.replace

    def fail_on_the_card(src, dst):
        if str(dst).endswith("card.json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_card)  # the lake's atomic writes rename with it
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(own, "custom", "cell-1", small_custom(), CONFIG, result, {})
    monkeypatch.undo()
    after = load_checkpoint(path)
    assert after.card == before.card
    assert all(torch.equal(before.state_dict[k], v) for k, v in after.state_dict.items())


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: flip_a_byte(next(run.glob("weights-*.pt"))), "is damaged: sha256"),
        (lambda run: next(run.glob("weights-*.pt")).unlink(), "weights-.* are missing"),
        (lambda run: (run / "card.json").write_text('{"format": 1, "mod'), "is not valid JSON"),
        (lambda run: (run / "card.json").write_text(json.dumps({"format": 99})), "format 99"),
        (lambda run: shutil.rmtree(run), "no checkpoint at .*cell-1: card.json is missing"),
    ],
)
def test_a_damaged_or_missing_checkpoint_is_refused(checkpoint, damage, message):
    _, path = checkpoint
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("run", ["../escape", ".hidden", "a/b", ""])
def test_a_checkpoint_name_cannot_leave_the_models_folder(leaky_run, tmp_path, run):
    result, _ = leaky_run
    with pytest.raises(InvalidRequestError, match="bad checkpoint run"):
        save_checkpoint(Lake(tmp_path), "custom", run, small_custom(), CONFIG, result, {})
    assert not (tmp_path / "models").exists()


def test_the_labels_are_counted_without_rendering(lake, monkeypatch):
    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered an image to count labels")

    monkeypatch.setattr("ml.image_dataset.render_chunks", no_rendering)
    counts = label_counts(split_data(lake, "train"))
    assert sum(counts) == sum(split_label_counts(lake, "train")) and np.all(np.array(counts) > 0)
