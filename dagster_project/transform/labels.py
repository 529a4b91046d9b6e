"""Labels with ``known_at``.

``build_labels`` runs ``sql/labels/labels.sql`` over curated klines of one symbol and interval
(the windows the labels are paired with are built in ``transform.windows``). What each label
means is data (``LABEL_SPECS``); the SQL files document the exact definitions. The one
recursive input, the EWM volatility of log returns used by the triple-barrier labels, is
computed here (``ewm_volatility``) and handed to the query as two list parameters.

Partition exactness (docs/time_and_leakage.md): labels of decisions in a range of days
computed from the range's klines plus ``history_bars()`` candles before it and
``lookahead_bars()`` after it equal the same labels computed over the whole series. The volatility
is a recursive smoother like the indicators' (``transform.indicators``): it is given only
once its seed's residual weight is below ``SEED_RESIDUAL``, ``volatility_warmup()`` returns after
the input begins, so a series has no tb_* labels until that much history has landed (at the
default span of 60: none on its first 849 candles, about 35 days at 1h and 9 at 15m).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import interval_us
from dagster_project.core.sql import run_sql
from dagster_project.transform.indicators import converge_bars, recursive_mean


@dataclass(frozen=True)
class LabelSpec:
    """One label family: ``<family>_<horizon>`` for each horizon (or just ``family``)."""

    family: str
    horizons: tuple[int, ...]  # bars; () for a label without a horizon
    is_leaky: bool = False  # a leakage control: computed inside the window the model sees
    definition: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        if not self.horizons:
            return (self.family,)
        return tuple(f"{self.family}_{h}" for h in self.horizons)


NEXT_UP_HORIZONS = (1, 5, 15)
# window_up_w: the next w candles as one; the datasets pair the w-candle window with it
WINDOW_WIDTHS = (5, 15, 30)
TB_HORIZONS = (5, 15, 30)

LABEL_SPECS: tuple[LabelSpec, ...] = (
    LabelSpec("next_up", NEXT_UP_HORIZONS, definition="1.0 if close_{t+h} > close_t else 0.0"),
    LabelSpec("window_up", WINDOW_WIDTHS, definition="1.0 if close_{t+w} > open_{t+1} else 0.0"),
    LabelSpec("fwd_logret", NEXT_UP_HORIZONS, definition="ln(close_{t+h} / close_t)"),
    LabelSpec(
        "tb",
        TB_HORIZONS,
        definition=(
            "+1 / -1 if high >= close_t*exp(k*vol_t) / low <= close_t*exp(-k*vol_t) first in "
            "bars t+1..t+h (both in one bar: -1), else 0"
        ),
    ),
    LabelSpec(
        "leaky_last_candle_up", (), is_leaky=True, definition="1.0 if close_t > open_t else 0.0"
    ),
    LabelSpec(
        "leaky_window_up",
        WINDOW_WIDTHS,
        is_leaky=True,
        definition="1.0 if close_t > open_{t-w+1} else 0.0",
    ),
)


@dataclass(frozen=True)
class LabelParams:
    tb_k: float = 2.0  # barrier width in volatilities
    vol_span: int = 60  # EWM span (bars) of the squared log returns
    vol_min_periods: int = 20  # returns averaged into the EWM's seed (its textbook SMA start)

    @property
    def vol_alpha(self) -> float:
        return 2.0 / (self.vol_span + 1)


def label_names(include_leaky: bool = True) -> list[str]:
    return [n for s in LABEL_SPECS if include_leaky or not s.is_leaky for n in s.names]


def volatility_warmup(params: LabelParams | None = None) -> int:
    """Index (0-based, among the one-bar returns of the input) of the first volatility given:
    the seed's ``vol_min_periods`` returns, then ``converge_bars`` until it weighs below
    SEED_RESIDUAL (848 at the defaults)."""
    params = params or LabelParams()
    return params.vol_min_periods - 1 + converge_bars(params.vol_alpha)


def history_bars(params: LabelParams | None = None) -> int:
    """Candles before the start of a decision range (a midnight) that its labels read.

    The first decision closes the candle that opens one bar before the start. That candle needs
    the longest ``leaky_window_up_w`` window of candles ending at it and, for its volatility,
    ``volatility_warmup + 1`` before it (its own return is the warm-up's last).
    """
    return max(*WINDOW_WIDTHS, 1 + volatility_warmup(params) + 1)


def lookahead_bars() -> int:
    """Candles after the end of a decision range (a midnight) that its labels read.

    The last decision closes the candle t that opens two bars before the end; its longest horizon
    h reads candle t + h, which opens h - 2 bars after the end: h - 1 candles past it.
    """
    longest = max(h for spec in LABEL_SPECS if not spec.is_leaky for h in spec.horizons)
    return max(longest - 1, 0)


def build_labels(
    con: duckdb.DuckDBPyConnection,
    kline_files: Sequence[str],
    interval: str,
    start: dt.datetime,
    end: dt.datetime,
    params: LabelParams | None = None,
) -> pl.DataFrame:
    """Labels for decision times in ``[start, end)``: decision_time, label, value, known_at,
    is_leaky. ``kline_files`` must hold ``lookahead_bars()`` candles past ``end`` and
    ``history_bars(params)`` before ``start`` (or everything since the series began), or the
    edge labels are absent; with them, every label equals the whole-series computation."""
    params = params or LabelParams()
    bar_us = interval_us(interval)
    vol = ewm_volatility(_read_closes(kline_files), bar_us, params)
    specs = {s.family: s for s in LABEL_SPECS}
    return run_sql(
        con,
        "labels/labels",
        {
            "kline_files": list(kline_files),
            "bar_us": bar_us,
            "start": start,
            "end": end,
            "next_up_h": list(specs["next_up"].horizons),
            "window_up_w": list(specs["window_up"].horizons),
            "tb_h": list(specs["tb"].horizons),
            "tb_k": params.tb_k,
            "vol_open_times": vol["open_time"].to_list(),
            "vol_values": vol["vol"].to_list(),
        },
    ).pl()


def ewm_volatility(closes: pl.DataFrame, bar_us: int, params: LabelParams) -> pl.DataFrame:
    """EWM volatility of log returns known at each candle's close: sqrt of the EWM mean (weight
    ``vol_alpha``) of squared one-bar log returns up to and including candle t, seeded with the
    mean of the first ``vol_min_periods`` (``indicators.recursive_mean``). A return across a gap
    (open_times not one bar apart) is skipped, not invented. Given only from the
    ``volatility_warmup(params)``-th return of the input on, when the seed's residual weight is
    below SEED_RESIDUAL: from there it does not depend on where the input began (to ~1e-12).
    Input: open_time, close. Output: open_time, vol, for the candles that have one."""
    bar = dt.timedelta(microseconds=bar_us)
    logret = (
        pl.when(pl.col("open_time").diff() == bar)
        .then((pl.col("close") / pl.col("close").shift(1)).log())
        .alias("r")
    )
    returns = closes.sort("open_time").with_columns(logret).drop_nulls("r")
    squared = (returns["r"] ** 2).to_numpy()
    variance = recursive_mean(squared, params.vol_min_periods, params.vol_alpha)
    variance[: volatility_warmup(params)] = np.nan
    vol = pl.Series("vol", np.sqrt(variance), nan_to_null=True)
    return returns.select("open_time").with_columns(vol).drop_nulls("vol")


def check_known_at(labels: pl.DataFrame) -> pl.DataFrame:
    """The non-leaky label rows whose known_at is not after decision_time (empty when sound)."""
    return labels.filter(
        ~pl.col("is_leaky") & ~(pl.col("known_at") > pl.col("decision_time")).fill_null(False)
    )


def _read_closes(kline_files: Sequence[str]) -> pl.DataFrame:
    if not kline_files:
        raise InvalidRequestError("no kline files given; expected curated/klines Parquet files")
    return (
        pl.read_parquet(list(kline_files), columns=["open_time", "close", "is_complete"])
        .filter(pl.col("is_complete"))
        .select("open_time", "close")
    )
