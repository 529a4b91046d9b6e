"""End to end on a simulated lake: train the zoo's ``custom`` CNN, score it on the held-out test
day. The leakage control (the last candle's colour, drawn in the image) must be learned; the
honest next-bar direction of a simulated random walk must not beat chance on the test split."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
import torch

from ml.evaluate import (
    EvaluationError,
    auroc,
    block_bootstrap_ci,
    default_block_len,
)
from ml.image_dataset import LakeImageDataset
from ml.train import predict_proba, train
from tests.helpers import simulated_dataset_lake
from tests.ml.test_train import (
    CONFIG,
    DATASET,
    INTERVAL,
    LEAKY,
    STYLE,
    SYMBOL,
    WINDOW,
    small_custom,
)

# the default split spec: train 03-01, validation 03-02, test 03-03
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
TEST_START_US = int(dt.datetime(2024, 3, 3, tzinfo=dt.UTC).timestamp() * 1_000_000)
HONEST = "next_up_1"
END_TO_END = dataclasses.replace(CONFIG, max_epochs=3, t_0=3)  # enough for the leaky control
CHANCE_SES = 3.0  # an honest AUROC may sit this many bootstrap standard errors from 0.5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), SYMBOL, DAYS)


def image_data(lake, split: str, label: str) -> LakeImageDataset:
    return LakeImageDataset(
        lake, SYMBOL, INTERVAL, DAYS[0], DAYS[-1], DATASET, WINDOW, STYLE, split, label
    )


def trained_custom(lake, label: str) -> torch.nn.Module:
    data = (image_data(lake, split, label) for split in ("train", "validation"))
    return train(small_custom(), *data, END_TO_END).model


def scored(model: torch.nn.Module, data: LakeImageDataset) -> tuple[float, float]:
    """``(AUROC, block-bootstrap standard error)`` of ``model`` on ``data``'s rows in time order,
    blocks at least a window long (overlapping windows share candles)."""
    _, prob, label = predict_proba(model, data)
    block_len = default_block_len(label.size, dependence=WINDOW)
    _, _, standard_error = block_bootstrap_ci(label, prob, "auroc", block_len=block_len)
    return auroc(label.astype(np.int64), prob.astype(np.float64)), standard_error


@pytest.fixture(scope="module")
def leaky_model(lake):
    return trained_custom(lake, LEAKY)


def test_the_leaky_control_is_learned_out_of_sample(lake, leaky_model):
    test_auroc, _ = scored(leaky_model, image_data(lake, "test", LEAKY))
    assert test_auroc >= 0.95


def test_the_honest_label_scores_chance_on_the_test_split(lake):
    test_auroc, standard_error = scored(
        trained_custom(lake, HONEST), image_data(lake, "test", HONEST)
    )
    assert 0 < standard_error < 0.1  # enough test rows for the check to mean something
    assert abs(test_auroc - 0.5) <= CHANCE_SES * standard_error, (test_auroc, standard_error)


def test_predict_proba_scores_each_test_row_once_in_time_order(lake, leaky_model):
    data = image_data(lake, "test", LEAKY)
    samples = sorted(data, key=lambda s: s.decision_time)
    leaky_model.train()
    decision_time, prob, label = predict_proba(leaky_model, data, batch_size=7)

    assert leaky_model.training  # the caller's mode comes back
    assert decision_time.tolist() == [s.decision_time for s in samples]
    assert np.all(np.diff(decision_time) > 0) and decision_time[0] >= TEST_START_US
    assert label.tolist() == [float(s.label) for s in samples]
    leaky_model.eval()
    with torch.no_grad():
        images = torch.stack([s.image for s in samples]).float() / 255.0
        expected = torch.softmax(leaky_model(images), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(prob, expected, rtol=1e-5, atol=1e-6)


def test_predict_proba_refuses_a_dataset_without_samples(lake, leaky_model, monkeypatch):
    data = image_data(lake, "test", LEAKY)
    monkeypatch.setattr(LakeImageDataset, "__iter__", lambda self: iter(()))
    with pytest.raises(EvaluationError, match="the test dataset yielded no samples"):
        predict_proba(leaky_model, data)
