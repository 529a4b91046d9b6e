"""The sliding windows of the named datasets, each paired with a label.

``build_windows`` runs ``sql/windows/windows.sql`` over curated klines of one symbol and
interval: for every dataset (``DATASETS``) and window size (``WINDOW_SIZES``), the window of
candles ending at each decision time, with the candles an irregular dataset drops (seeded, so
the same window drops the same candles on every run).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from dagster_project.core.klines import interval_us
from dagster_project.core.sql import run_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    name: str
    drop_fraction: float  # share of the window's candles removed (never the last one)
    label: str  # the label it is paired with; '{w}' is the window size


DATASETS: tuple[Dataset, ...] = (
    Dataset("regular", 0.0, "next_up_1"),
    # the seed's "Fullimage", made honest: the image of the last w candles predicts the next
    # w candles as one (window_up_w), never the window it shows (that is leaky_window_up_w)
    Dataset("fullimage", 0.0, "window_up_{w}"),
    Dataset("irregular_60", 0.60, "next_up_1"),
    Dataset("irregular_80", 0.80, "next_up_1"),
    Dataset("irregular_95", 0.95, "next_up_1"),
)
WINDOW_SIZES = (5, 15, 30)
DEFAULT_SEED = "candlelake"


def window_history_bars() -> int:
    """Candles before the start of a decision range that its windows read: the longest window
    w, ending at the candle that opens one bar before the start."""
    return max(WINDOW_SIZES)


def build_windows(
    con: duckdb.DuckDBPyConnection,
    kline_files: Sequence[str],
    interval: str,
    start: dt.datetime,
    end: dt.datetime,
    symbol: str = "",
    seed: str = DEFAULT_SEED,
) -> tuple[pl.DataFrame, int]:
    """Windows ending in ``[start, end)`` for every dataset and window size, and the number of
    (dataset, window_size, decision_time) windows excluded because they cross a gap. Windows
    the files hold too little history for are dropped too (logged, not counted as gaps)."""
    frame = run_sql(
        con,
        "windows/windows",
        {
            "kline_files": list(kline_files),
            "bar_us": interval_us(interval),
            "start": start,
            "end": end,
            "symbol": symbol,
            "seed": seed,
            "window_sizes": list(WINDOW_SIZES),
            "datasets": [d.name for d in DATASETS],
            "drop_fractions": [d.drop_fraction for d in DATASETS],
            "labels": [d.label for d in DATASETS],
        },
    ).pl()
    reasons = frame["excluded_reason"]
    excluded = int((reasons == "gap").sum())
    short = int((reasons == "history").sum())
    if short:
        log.info("%d windows dropped: the kline files start inside them", short)
    return frame.filter(reasons.is_null()).drop("excluded_reason"), excluded
