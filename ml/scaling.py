"""Fitted transforms that can only learn from training rows, and per-window OHLC normalisation.

``FitOnTrainScaler`` standardises features per column, ``(x − mean) / std``. It is fit on a frame
that carries its ``split`` column (from ``ml.splits.time_split``) and refuses any row not labelled
``train``; it remembers exactly what it saw (row count and decision-time range) and saves that
beside the statistics, so a saved model says what its scaler was fit on (docs/time_and_leakage.md).

``normalise_windows_ohlc`` needs no fitting: each window is divided by its own **last close** —
the price at the window's decision time — so every value is a ratio to "now" (the last close is
exactly 1.0) and nothing outside the window is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from ml.splits import DECISION, TRAIN

FORMAT = "candlelake.FitOnTrainScaler/1"
OHLC = ("open", "high", "low", "close")


class ScalerError(ValueError):
    """A scaler used in a way that would leak or cannot work."""


@dataclass
class FitOnTrainScaler:
    """Per-feature standardisation fit on training rows only.

    Statistics use the population standard deviation (ddof=0) over non-null values; a column
    with zero spread gets std 1.0, so it maps to 0 rather than dividing by zero.
    """

    split_column: str = "split"  # column holding the split label; every fit row must be "train"
    time_column: str = DECISION  # recorded as the training range
    columns: list[str] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    n_rows: int = 0
    train_start: datetime | None = None
    train_end: datetime | None = None

    @property
    def fitted(self) -> bool:
        return bool(self.columns)

    def fit(self, train_frame: pl.DataFrame, columns: list[str]) -> FitOnTrainScaler:
        """Learn mean and std of ``columns``; refuse unless every row's split is ``train``."""
        self._check_train_only(train_frame)
        if not columns:
            raise ScalerError("fit needs at least one feature column")
        _require_columns(train_frame, [*columns, self.time_column], "fit frame")
        stats = train_frame.select(
            *[pl.col(c).cast(pl.Float64).mean().alias(f"mean:{c}") for c in columns],
            *[pl.col(c).cast(pl.Float64).std(ddof=0).alias(f"std:{c}") for c in columns],
        ).row(0, named=True)
        mean, std = {}, {}
        for c in columns:
            m, s = stats[f"mean:{c}"], stats[f"std:{c}"]
            if m is None or s is None or not (math.isfinite(m) and math.isfinite(s)):
                raise ScalerError(
                    f"column {c!r} has no finite mean/std on the training rows (all null or "
                    f"contains NaN/inf): mean={m}, std={s}"
                )
            mean[c], std[c] = float(m), float(s) if s > 0 else 1.0
        times = train_frame[self.time_column]
        self.columns, self.mean, self.std = list(columns), mean, std
        self.n_rows = train_frame.height
        self.train_start, self.train_end = times.min(), times.max()
        return self

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Replace each fitted column by ``(x − mean) / std``; other columns are kept."""
        self._check_fitted()
        _require_columns(frame, self.columns, "transform frame")
        return frame.with_columns(
            ((pl.col(c).cast(pl.Float64) - self.mean[c]) / self.std[c]).alias(c)
            for c in self.columns
        )

    def inverse_transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Undo ``transform``."""
        self._check_fitted()
        _require_columns(frame, self.columns, "inverse_transform frame")
        return frame.with_columns(
            (pl.col(c) * self.std[c] + self.mean[c]).alias(c) for c in self.columns
        )

    def save(self, path: str | Path) -> Path:
        """Write statistics and what they were fit on as JSON."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitOnTrainScaler:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "columns": self.columns,
            "mean": self.mean,
            "std": self.std,
            "fit_on": {
                "split": TRAIN,
                "split_column": self.split_column,
                "time_column": self.time_column,
                "n_rows": self.n_rows,
                "train_start": _iso(self.train_start),
                "train_end": _iso(self.train_end),
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> FitOnTrainScaler:
        if data.get("format") != FORMAT:
            raise ScalerError(f"not a saved scaler: format={data.get('format')!r}, want {FORMAT}")
        fit_on = data["fit_on"]
        return cls(
            split_column=fit_on["split_column"],
            time_column=fit_on["time_column"],
            columns=list(data["columns"]),
            mean={k: float(v) for k, v in data["mean"].items()},
            std={k: float(v) for k, v in data["std"].items()},
            n_rows=int(fit_on["n_rows"]),
            train_start=_from_iso(fit_on["train_start"]),
            train_end=_from_iso(fit_on["train_end"]),
        )

    def _check_train_only(self, frame: pl.DataFrame) -> None:
        if self.split_column not in frame.columns:
            raise ScalerError(
                f"fit frame has no {self.split_column!r} column; pass the frame with its split "
                "labels so the scaler can check it sees training rows only"
            )
        if frame.height == 0:
            raise ScalerError("fit frame is empty")
        labels = frame[self.split_column]
        bad = frame.filter(pl.col(self.split_column).ne_missing(TRAIN))
        if bad.height:
            counts = dict(labels.filter(labels.ne_missing(TRAIN)).value_counts().iter_rows())
            raise ScalerError(
                f"refusing to fit on {bad.height} row(s) not labelled {TRAIN!r} in "
                f"{self.split_column!r}: {counts}; filter to split == 'train' first"
            )

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ScalerError("scaler is not fitted; call fit(train_frame, columns) first")


def normalise_windows_ohlc(windows: np.ndarray | pl.DataFrame) -> np.ndarray | pl.DataFrame:
    """Divide each window's OHLC by that window's last close (the decision-time price).

    * ``np.ndarray`` of shape ``(n_windows, window_len, n_channels)`` with channels
      open, high, low, close first; channels after the fourth (volume, …) are returned unchanged.
    * ``pl.DataFrame`` with one row per window and list columns ``open``, ``high``, ``low``,
      ``close`` (oldest first); other columns are returned unchanged.

    Only values inside each window are read. A window whose last close is not positive is an
    error (prices are positive; anything else is bad data).
    """
    if isinstance(windows, pl.DataFrame):
        return _normalise_frame(windows)
    arr = np.asarray(windows, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] < 4 or arr.shape[1] < 1:
        raise ScalerError(
            f"windows must have shape (n_windows, window_len ≥ 1, channels ≥ 4 as OHLC…), "
            f"got {arr.shape}"
        )
    last_close = arr[:, -1, 3]
    _check_positive(last_close)
    out = arr.copy()
    out[:, :, :4] /= last_close[:, None, None]
    return out


def _normalise_frame(windows: pl.DataFrame) -> pl.DataFrame:
    _require_columns(windows, list(OHLC), "windows frame")
    last_close = windows.select(pl.col("close").list.last()).to_series()
    _check_positive(last_close.to_numpy().astype(np.float64))
    anchor = pl.col("close").list.last().cast(pl.Float64)
    return windows.with_columns(
        (pl.col(c).cast(pl.List(pl.Float64)) / anchor).alias(c) for c in OHLC
    )


def _check_positive(last_close: np.ndarray) -> None:
    bad = ~(np.isfinite(last_close) & (last_close > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ScalerError(
            f"window {i} has last close {last_close[i]}; expected a positive finite price"
        )


def _require_columns(frame: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ScalerError(f"{what} lacks column(s) {missing}; have {frame.columns}")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
