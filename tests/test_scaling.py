"""Fit-on-train scaler and per-window OHLC normalisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ml.scaling import FitOnTrainScaler, ScalerError, normalise_windows_ohlc
from ml.splits import time_split

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def labelled() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    n = 200
    dec = [T0 + timedelta(minutes=i) for i in range(n)]
    df = pl.DataFrame(
        {
            "decision_time": dec,
            "known_at": [d + timedelta(minutes=3) for d in dec],
            "a": rng.normal(10, 2, n),
            "b": rng.normal(-5, 0.5, n) + np.linspace(0, 50, n),  # drifts: train ≠ all rows
            "flat": np.full(n, 3.0),
        },
        schema_overrides={
            "decision_time": pl.Datetime("us", "UTC"),
            "known_at": pl.Datetime("us", "UTC"),
        },
    )
    cuts = (T0 + timedelta(minutes=120), T0 + timedelta(minutes=160))  # 60/20/20
    return time_split(df, *cuts, embargo=timedelta(minutes=6))


def train_rows(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("split") == "train")


def test_fit_records_train_stats_and_range(labelled):
    train = train_rows(labelled)
    scaler = FitOnTrainScaler().fit(train, ["a", "b"])
    assert scaler.mean["a"] == pytest.approx(train["a"].mean())
    assert scaler.std["b"] == pytest.approx(np.std(train["b"].to_numpy()))
    assert scaler.n_rows == train.height
    assert scaler.train_start == train["decision_time"].min()
    assert scaler.train_end == train["decision_time"].max()
    # Drifting column: the train mean differs from the all-rows mean, so only train was used.
    assert scaler.mean["b"] != pytest.approx(labelled["b"].mean())


@pytest.mark.parametrize("other", ["validation", "test", "purged", "embargoed"])
def test_fit_refuses_rows_not_labelled_train(labelled, other):
    frame = labelled.filter(pl.col("split").is_in(["train", other]))
    with pytest.raises(ScalerError, match=f"refusing to fit.*not labelled 'train'.*{other}"):
        FitOnTrainScaler().fit(frame, ["a"])


def test_fit_refuses_whole_frame_and_missing_split_column(labelled):
    with pytest.raises(ScalerError, match="refusing to fit"):
        FitOnTrainScaler().fit(labelled, ["a"])
    with pytest.raises(ScalerError, match="no 'split' column"):
        FitOnTrainScaler().fit(train_rows(labelled).drop("split"), ["a"])
    with pytest.raises(ScalerError, match="refusing to fit"):
        FitOnTrainScaler().fit(
            train_rows(labelled).with_columns(pl.lit(None, pl.String).alias("split")), ["a"]
        )


def test_transform_equals_manual(labelled):
    train = train_rows(labelled)
    scaler = FitOnTrainScaler().fit(train, ["a", "b", "flat"])
    out = scaler.transform(labelled)
    for c in ("a", "b"):
        x = train[c].to_numpy()
        expected = (labelled[c].to_numpy() - x.mean()) / x.std()
        np.testing.assert_allclose(out[c].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    assert (out["flat"] == 0).all()  # zero spread → std 1.0, maps to 0
    assert out["split"].equals(labelled["split"])
    back = scaler.inverse_transform(out)
    np.testing.assert_allclose(back["b"].to_numpy(), labelled["b"].to_numpy(), rtol=1e-12)


def test_transform_train_rows_are_standardised(labelled):
    train = train_rows(labelled)
    out = FitOnTrainScaler().fit(train, ["a"]).transform(train)
    assert out["a"].mean() == pytest.approx(0, abs=1e-12)
    assert out["a"].std(ddof=0) == pytest.approx(1)


def test_save_load_round_trip(labelled, tmp_path):
    train = train_rows(labelled)
    scaler = FitOnTrainScaler().fit(train, ["a", "b"])
    path = scaler.save(tmp_path / "model" / "scaler.json")
    data = json.loads(path.read_text())
    assert data["fit_on"]["split"] == "train"
    assert data["fit_on"]["n_rows"] == train.height
    assert data["fit_on"]["train_start"] == "2024-01-01T00:00:00+00:00"
    loaded = FitOnTrainScaler.load(path)
    assert loaded == scaler
    assert loaded.transform(labelled).equals(scaler.transform(labelled))


def test_unfitted_and_bad_inputs(labelled, tmp_path):
    with pytest.raises(ScalerError, match="not fitted"):
        FitOnTrainScaler().transform(labelled)
    with pytest.raises(ScalerError, match="not fitted"):
        FitOnTrainScaler().save(tmp_path / "x.json")
    scaler = FitOnTrainScaler().fit(train_rows(labelled), ["a"])
    with pytest.raises(ScalerError, match="lacks column"):
        scaler.transform(labelled.drop("a"))
    nan = train_rows(labelled).with_columns(pl.lit(float("nan")).alias("a"))
    with pytest.raises(ScalerError, match="no finite mean/std"):
        FitOnTrainScaler().fit(nan, ["a"])
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ScalerError, match="not a saved scaler"):
        FitOnTrainScaler.load(tmp_path / "bad.json")


# --- per-window OHLC -------------------------------------------------------------------------


def windows_array(n: int = 4, length: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, length)), axis=1))
    open_ = close * (1 + rng.normal(0, 0.002, (n, length)))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    volume = rng.uniform(1, 5, (n, length))
    return np.stack([open_, high, low, close, volume], axis=-1)


def test_ohlc_divides_by_last_close_of_each_window():
    w = windows_array()
    out = normalise_windows_ohlc(w)
    np.testing.assert_allclose(out[:, -1, 3], 1.0)
    for i in range(len(w)):
        np.testing.assert_allclose(out[i, :, :4], w[i, :, :4] / w[i, -1, 3])
    np.testing.assert_array_equal(out[:, :, 4], w[:, :, 4])  # volume untouched
    assert not np.shares_memory(out, w)


def test_ohlc_uses_only_window_data():
    w = windows_array()
    before = normalise_windows_ohlc(w)
    changed = w.copy()
    changed[1] *= 3.7  # rescale another window entirely
    changed[2, :, :4] += 50  # shift a third
    after = normalise_windows_ohlc(changed)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[3], before[3])
    np.testing.assert_allclose(after[1, :, :4], before[1, :, :4])  # scale-invariant per window
    # Each window alone gives the same result as in the batch.
    for i in range(len(w)):
        np.testing.assert_array_equal(normalise_windows_ohlc(w[i : i + 1])[0], before[i])


def test_ohlc_frame_with_list_columns_matches_array():
    w = windows_array(n=3, length=5)
    frame = pl.DataFrame(
        {
            "window_id": [0, 1, 2],
            **{
                c: [list(w[i, :, j]) for i in range(3)]
                for j, c in enumerate(["open", "high", "low", "close"])
            },
        }
    )
    out = normalise_windows_ohlc(frame)
    expected = normalise_windows_ohlc(w)
    for j, c in enumerate(["open", "high", "low", "close"]):
        np.testing.assert_allclose(np.array(out[c].to_list()), expected[:, :, j])
    assert out["window_id"].to_list() == [0, 1, 2]


def test_ohlc_rejects_bad_shapes_and_prices():
    with pytest.raises(ScalerError, match="must have shape"):
        normalise_windows_ohlc(np.ones((4, 8)))
    w = windows_array()
    w[2, -1, 3] = 0.0
    with pytest.raises(ScalerError, match="window 2 has last close 0.0"):
        normalise_windows_ohlc(w)
    with pytest.raises(ScalerError, match="lacks column"):
        normalise_windows_ohlc(pl.DataFrame({"open": [[1.0]]}))
