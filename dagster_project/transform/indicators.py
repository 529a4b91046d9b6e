"""Technical indicators of one symbol and interval: SQL window functions plus recursive smoothers.

``build_indicators`` writes ``features/indicators`` and ``features/indicator_availability`` for a
symbol's days from the curated klines, one stretch of consecutive days per query.

``compute_indicators`` runs ``sql/features/indicators.sql`` (every windowed indicator) and adds the
recursive smoothers SQL cannot express efficiently (EMA, Wilder RSI, MACD, ATR/NATR, ADX/+DI/-DI),
all through one vectorised helper, :func:`recursive_mean`. Each row carries its bar's ``open_time``
and ``decision_time`` (``open_time`` + the interval, the close of the candle): labels and windows
join on ``decision_time``, so a row is never paired with a decision made before its candle closed.

Warm-up and partition exactness (docs/time_and_leakage.md):

* A windowed indicator is NULL until its full window exists in the input.
* A recursive smoother ``y_t = (1 - a) y_{t-1} + a x_t`` is seeded the textbook way (Wilder,
  TA-Lib): with the simple mean of its first ``period`` inputs, at the bar where they exist. Its
  value still depends on where the input begins, by ``(1 - a)**k`` after ``k`` further bars, so it
  stays NULL until that seed residual is below ``SEED_RESIDUAL`` (1e-12): from then on it is a
  function of the market alone, equal to `ta` (which seeds differently) and to any computation
  that starts earlier, to far better than 1e-9. ``WARMUP_BARS`` is the longest such warm-up.
* Computing a partition: give ``compute_indicators`` the partition plus at least ``WARMUP_BARS``
  earlier bars (:func:`warmup_days` whole days), or everything since the series began. Either way
  every row equals the whole-series computation (to 1e-9 relative; exactly for windowed ones).

Where `ta` 0.11 departs from the textbook, the textbook is followed: RSI seeds Wilder's average
with the mean of the first 14 changes (``ta`` seeds an EWM with the first change; both agree once
the seed has decayed); EMA and MACD seed with the SMA of the first ``period`` closes (TA-Lib;
``ta`` seeds pandas' EWM with the first close); ADX/+DI/-DI follow Wilder (``ta`` writes 0 for
the last bar of its input); NATR (not in ``ta``) is 100 * ATR / close; OBV adds 0 on an
unchanged close (Granville; ``ta`` adds +volume); for MFI and OBV/VPT see the SQL file.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import duckdb
import numpy as np
import polars as pl

from dagster_project.core.days import rows_by_day
from dagster_project.core.klines import CURATED_INTERVALS, interval_length, interval_us, to_utc
from dagster_project.core.lake import Lake
from dagster_project.core.sql import run_sql
from dagster_project.transform.curate import landed_stretches, span_files

SQL_NAME = "features/indicators"
# Columns of every indicator row that are keys, not indicators.
KEY_COLUMNS = ("open_time", "decision_time")
# Residual weight of a recursive smoother's seed below which its value counts as converged.
SEED_RESIDUAL = 1e-12
EMA_PERIODS = (10, 20, 50, 100, 200)
RSI_PERIODS = (14, 21)
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
ATR_PERIOD = 14
ADX_PERIOD = 14


def converge_bars(alpha: float) -> int:
    """Bars after its seed until a smoother with weight ``alpha`` forgets it below SEED_RESIDUAL."""
    return math.ceil(math.log(SEED_RESIDUAL) / math.log1p(-alpha))


def _ema_alpha(period: int) -> float:
    return 2.0 / (period + 1)


def _recursive_warmups() -> dict[str, int]:
    """Index (0-based, from the first input bar) of each recursive column's first usable value."""
    wilder = converge_bars(1 / ATR_PERIOD)
    warmups = {f"ema_{n}": n - 1 + converge_bars(_ema_alpha(n)) for n in EMA_PERIODS}
    warmups |= {f"rsi_{n}": n + converge_bars(1 / n) for n in RSI_PERIODS}
    macd_line = MACD_SLOW - 1 + converge_bars(_ema_alpha(MACD_SLOW))
    signal = macd_line + MACD_SIGNAL - 1 + converge_bars(_ema_alpha(MACD_SIGNAL))
    warmups |= {
        f"macd_{MACD_FAST}_{MACD_SLOW}": macd_line,
        f"macd_signal_{MACD_FAST}_{MACD_SLOW}_{MACD_SIGNAL}": signal,
        f"macd_hist_{MACD_FAST}_{MACD_SLOW}_{MACD_SIGNAL}": signal,
        f"atr_{ATR_PERIOD}": ATR_PERIOD - 1 + wilder,
        f"natr_{ATR_PERIOD}": ATR_PERIOD - 1 + wilder,
        f"plus_di_{ADX_PERIOD}": ADX_PERIOD + wilder,
        f"minus_di_{ADX_PERIOD}": ADX_PERIOD + wilder,
        f"adx_{ADX_PERIOD}": 2 * ADX_PERIOD - 1 + 2 * wilder,
    }
    return warmups


RECURSIVE_WARMUP: dict[str, int] = _recursive_warmups()
# History a partition needs before its first bar so that every indicator equals the whole series.
WARMUP_BARS: int = max(RECURSIVE_WARMUP.values())


def warmup_days(interval: str) -> int:
    """Whole UTC days of klines to read before a day's partition of ``interval``."""
    bars_per_day = dt.timedelta(days=1) // interval_length(interval)
    return math.ceil(WARMUP_BARS / bars_per_day)


# Earlier days of curated klines an indicators day reads, at its longest-warm-up interval.
INDICATOR_HISTORY_DAYS = max(warmup_days(interval) for interval in CURATED_INTERVALS)


@dataclass(frozen=True)
class IndicatorDay:
    interval: str
    day: dt.date
    rows: int
    usable: int  # indicators non-NULL on every row of the day
    unusable: tuple[str, ...]  # still in warm-up (not enough history landed)


def build_indicators(
    lake: Lake, con: duckdb.DuckDBPyConnection, symbol: str, days: Sequence[dt.date]
) -> list[IndicatorDay]:
    """Write ``features/indicators`` (and ``features/indicator_availability``) for each curated
    interval of each of a symbol's ``days``. Consecutive days are computed in one query over the
    whole stretch plus ``warmup_days(interval)`` earlier days of warm-up, then written day by
    day: equal to computing each day alone (indicators are partition-exact), at a fraction of
    the cost. Days without curated klines at an interval are skipped."""
    built = []
    for interval in CURATED_INTERVALS:
        warmup = warmup_days(interval)
        for stretch in landed_stretches(lake, symbol, interval, days):
            files = span_files(lake, symbol, interval, stretch[0], stretch[-1], warmup)
            start, end = to_utc(stretch[0]), to_utc(stretch[-1]) + dt.timedelta(days=1)
            frame = compute_indicators(con, files, interval, start, end)
            for day, rows in rows_by_day(frame, "open_time", stretch).items():
                built.append(write_indicator_day(lake, symbol, interval, day, rows))
    return built


def write_indicator_day(
    lake: Lake, symbol: str, interval: str, day: dt.date, frame: pl.DataFrame
) -> IndicatorDay:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    lake.write_partition("features", "indicators", keys, frame)
    availability = feature_availability(frame)
    lake.write_partition("features", "indicator_availability", keys, availability)
    unusable = tuple(availability.filter(~pl.col("usable"))["indicator"].to_list())
    return IndicatorDay(
        interval, day, frame.height, availability.height - len(unusable), unusable
    )


def compute_indicators(
    con: duckdb.DuckDBPyConnection,
    kline_files: Sequence[str],
    interval: str,
    start: dt.datetime,
    end: dt.datetime,
) -> pl.DataFrame:
    """All indicators for bars with ``open_time`` in ``[start, end)``, one row per bar, keyed by
    ``open_time`` and ``decision_time``.

    ``kline_files``: curated klines of one symbol and ``interval``, the partition plus warm-up
    history.
    The recursive smoothers run in a second thread while DuckDB computes the windowed SQL (both
    release the GIL).
    """
    files = [str(f) for f in kline_files]
    params = {"kline_files": files, "bar_us": interval_us(interval), "start": start, "end": end}
    with ThreadPoolExecutor(max_workers=1) as pool:
        recursive = pool.submit(_recursive_frame, con.cursor(), files, start, end)
        windowed = run_sql(con, SQL_NAME, params).pl()
        recursive = recursive.result()
    times = windowed["open_time"]
    if times.n_unique() != times.len():
        raise ValueError(f"kline files repeat an open_time (curated klines are unique): {files}")
    if not times.equals(recursive["open_time"]):
        raise ValueError(f"kline files changed while their indicators were computed: {files}")
    return pl.concat([windowed, recursive.drop("open_time")], how="horizontal")


def _recursive_frame(
    cursor: duckdb.DuckDBPyConnection, files: list[str], start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    klines = cursor.sql(
        "select open_time, high, low, close from read_parquet($files) order by open_time",
        params={"files": files},
    ).pl()
    inside = klines["open_time"].is_between(start, end, closed="left")
    columns = [klines["open_time"], *recursive_indicators(klines).values()]
    return pl.DataFrame(columns).filter(inside)


@dataclass(frozen=True)
class _Prices:
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @cached_property
    def true_range(self) -> np.ndarray:
        """The first bar, without a previous close, is high - low (as Wilder and `ta`)."""
        prev_close = np.concatenate(([np.nan], self.close[:-1]))
        with np.errstate(invalid="ignore"):
            gaps = np.fmax(np.abs(self.high - prev_close), np.abs(self.low - prev_close))
        return np.fmax(self.high - self.low, gaps)


def recursive_indicators(klines: pl.DataFrame) -> dict[str, pl.Series]:
    """EMA, RSI, MACD, ATR/NATR and ADX/+DI/-DI of time-ordered ``klines`` (high, low, close).

    Values before a column's RECURSIVE_WARMUP (and any NaN) are NULL.
    """
    prices = _Prices(*(klines[c].cast(pl.Float64).to_numpy() for c in ("high", "low", "close")))
    values = _ema_columns(prices.close) | _rsi_columns(prices.close) | _macd_columns(prices.close)
    values |= _atr_columns(prices) | _adx_columns(prices)
    columns = {}
    for name, array in values.items():
        array[: RECURSIVE_WARMUP[name]] = np.nan
        columns[name] = pl.Series(name, array, nan_to_null=True)
    return columns


def recursive_mean(values: np.ndarray, period: int, alpha: float) -> np.ndarray:
    """``y_t = (1 - alpha) * y_{t-1} + alpha * x_t`` seeded with the mean of the first ``period``
    non-NaN inputs at the bar of the last of them (NaN before). Leading NaNs are skipped; the
    inputs after the first valid one must be finite. Vectorised (polars ``ewm_mean``)."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full(len(x), np.nan)
    first = int(np.argmax(~np.isnan(x))) if len(x) else 0
    seed_at = first + period - 1
    if seed_at >= len(x) or np.isnan(x[first]):
        return out
    tail = x[seed_at:].copy()
    tail[0] = x[first : seed_at + 1].mean()
    out[seed_at:] = pl.Series(tail).ewm_mean(alpha=alpha, adjust=False).to_numpy()
    return out


def _ema_columns(close: np.ndarray) -> dict[str, np.ndarray]:
    return {f"ema_{n}": recursive_mean(close, n, _ema_alpha(n)) for n in EMA_PERIODS}


def _rsi_columns(close: np.ndarray) -> dict[str, np.ndarray]:
    change = np.diff(close, prepend=np.nan)
    gain, loss = np.where(change > 0, change, 0.0), np.where(change < 0, -change, 0.0)
    gain[0] = loss[0] = np.nan
    columns = {}
    for n in RSI_PERIODS:
        up, down = recursive_mean(gain, n, 1 / n), recursive_mean(loss, n, 1 / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[f"rsi_{n}"] = np.where(down == 0, 100.0, 100 - 100 / (1 + up / down))
        columns[f"rsi_{n}"][np.isnan(up)] = np.nan
    return columns


def _macd_columns(close: np.ndarray) -> dict[str, np.ndarray]:
    fast = recursive_mean(close, MACD_FAST, _ema_alpha(MACD_FAST))
    slow = recursive_mean(close, MACD_SLOW, _ema_alpha(MACD_SLOW))
    line = fast - slow
    signal = recursive_mean(line, MACD_SIGNAL, _ema_alpha(MACD_SIGNAL))
    suffix = f"{MACD_FAST}_{MACD_SLOW}"
    return {
        f"macd_{suffix}": line,
        f"macd_signal_{suffix}_{MACD_SIGNAL}": signal,
        f"macd_hist_{suffix}_{MACD_SIGNAL}": line - signal,
    }


def _atr_columns(prices: _Prices) -> dict[str, np.ndarray]:
    atr = recursive_mean(prices.true_range, ATR_PERIOD, 1 / ATR_PERIOD)
    return {f"atr_{ATR_PERIOD}": atr, f"natr_{ATR_PERIOD}": 100 * atr / prices.close}


def _adx_columns(prices: _Prices) -> dict[str, np.ndarray]:
    """Wilder's ADX: +DM/-DM and true range from the second bar, Wilder-smoothed; DX; ADX."""
    n = ADX_PERIOD
    up = np.diff(prices.high, prepend=np.nan)
    down = -np.diff(prices.low, prepend=np.nan)
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    true_range = prices.true_range.copy()
    for series in (plus_dm, minus_dm, true_range):
        series[0] = np.nan
    smoothed_tr = recursive_mean(true_range, n, 1 / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        plus_di = np.where(
            smoothed_tr == 0, 0.0, 100 * recursive_mean(plus_dm, n, 1 / n) / smoothed_tr
        )
        minus_di = np.where(
            smoothed_tr == 0, 0.0, 100 * recursive_mean(minus_dm, n, 1 / n) / smoothed_tr
        )
        total = plus_di + minus_di
        dx = np.where(total == 0, 0.0, 100 * np.abs(plus_di - minus_di) / total)
    missing = np.isnan(smoothed_tr)
    for series in (plus_di, minus_di, dx):
        series[missing] = np.nan
    return {
        f"plus_di_{n}": plus_di,
        f"minus_di_{n}": minus_di,
        f"adx_{n}": recursive_mean(dx, n, 1 / n),
    }


def feature_availability(indicators: pl.DataFrame) -> pl.DataFrame:
    """Per UTC date and indicator: rows, non-NULL rows, and ``usable`` (non-NULL on every row).

    Models use only the indicators that are usable on every date they train or predict on.
    """
    names = [c for c in indicators.columns if c not in KEY_COLUMNS]
    return (
        indicators.with_columns(pl.col("open_time").dt.date().alias("date"))
        .unpivot(index="date", on=names, variable_name="indicator")
        .group_by("date", "indicator", maintain_order=True)
        .agg(rows=pl.len(), non_null=pl.col("value").is_not_null().sum())
        .with_columns(usable=pl.col("rows") == pl.col("non_null"))
        .sort("date", "indicator")
    )
