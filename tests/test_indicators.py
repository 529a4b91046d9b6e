"""sql/features/indicators.sql and transform/indicators.py against `ta` 0.11 and by hand.

Tolerance: relative 1e-9 of the value, plus 1e-9 of the column's largest magnitude for indicators
that cross zero (MACD, momentum, returns, OBV/VPT changes), where a relative error is undefined.
OBV is compared with `ta`'s after correcting the bars where `ta` departs from Granville's rule.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import ta

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TimeRange, interval_length
from dagster_project.core.lake import connect
from dagster_project.core.sql import run_sql
from dagster_project.ingest.simulator import simulate_klines
from dagster_project.transform import indicators as ind
from dagster_project.transform.labels import build_labels

UTC = dt.UTC
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
RTOL = 1e-9

# Index (from the first input bar) of each windowed indicator's first non-NULL value.
WINDOWED_WARMUP = {
    **{f"sma_{n}": n - 1 for n in (10, 20, 50, 100, 200)},
    **{f"bb_{b}_20": 19 for b in ("upper", "middle", "lower", "width", "pct_b")},
    "roc_12": 12,
    "mom_10": 10,
    "stoch_k_14": 13,
    "stoch_d_3": 15,
    "cmf_20": 19,
    "mfi_14": 14,
    "obv_20": 20,
    "vpt_20": 20,
    "ret_1": 1,
    "logret_1": 1,
    "volume_change_1": 1,
    "hl2": 0,
    "typical_price": 0,
    "rv_20": 20,
    **{f"keltner_{b}_20": 19 for b in ("upper", "middle", "lower")},
    **{f"donchian_{b}_20": 19 for b in ("upper", "middle", "lower")},
}
WARMUP = WINDOWED_WARMUP | ind.RECURSIVE_WARMUP
# `ta` writes 0 for ADX, +DI and -DI on the last bar of its input (its loops stop one bar short).
TA_LAST_BAR_WRONG = {"adx_14", "plus_di_14", "minus_di_14"}


def ta_indicators(k: pd.DataFrame) -> dict[str, pd.Series]:
    """The same indicators computed with `ta` (and pandas for those `ta` lacks)."""
    h, low, c, v = k["high"], k["low"], k["close"], k["volume"]
    bb = ta.volatility.BollingerBands(c, 20, 2)
    stoch = ta.momentum.StochasticOscillator(h, low, c, 14, 3)
    kc = ta.volatility.KeltnerChannel(h, low, c, 20, 10, original_version=True)
    dc = ta.volatility.DonchianChannel(h, low, c, 20)
    macd = ta.trend.MACD(c, 26, 12, 9)
    atr = ta.volatility.AverageTrueRange(h, low, c, 14).average_true_range()
    adx = ta.trend.ADXIndicator(h, low, c, 14)
    out = {f"sma_{n}": ta.trend.SMAIndicator(c, n).sma_indicator() for n in (10, 20, 50, 100, 200)}
    out |= {f"ema_{n}": ta.trend.EMAIndicator(c, n).ema_indicator() for n in (10, 20, 50, 100, 200)}
    out |= {f"rsi_{n}": ta.momentum.RSIIndicator(c, n).rsi() for n in (14, 21)}
    return out | {
        "bb_upper_20": bb.bollinger_hband(),
        "bb_middle_20": bb.bollinger_mavg(),
        "bb_lower_20": bb.bollinger_lband(),
        "bb_width_20": bb.bollinger_wband(),
        "bb_pct_b_20": bb.bollinger_pband(),
        "roc_12": ta.momentum.ROCIndicator(c, 12).roc(),
        "mom_10": c.diff(10),
        "stoch_k_14": stoch.stoch(),
        "stoch_d_3": stoch.stoch_signal(),
        "cmf_20": ta.volume.ChaikinMoneyFlowIndicator(h, low, c, v, 20).chaikin_money_flow(),
        "mfi_14": ta.volume.MFIIndicator(h, low, c, v, 14).money_flow_index(),
        "obv_20": textbook_obv(c, v).diff(20),
        # `ta`'s VPT is NaN on bar 0 (no previous close); its level there is 0
        "vpt_20": ta.volume.VolumePriceTrendIndicator(c, v).volume_price_trend().fillna(0).diff(20),
        "ret_1": ta.others.DailyReturnIndicator(c).daily_return() / 100,
        "logret_1": ta.others.DailyLogReturnIndicator(c).daily_log_return() / 100,
        "volume_change_1": v.pct_change(),
        "hl2": (h + low) / 2,
        "typical_price": (h + low + c) / 3,
        "rv_20": np.log(c).diff().rolling(20).std(),
        "keltner_upper_20": kc.keltner_channel_hband(),
        "keltner_middle_20": kc.keltner_channel_mband(),
        "keltner_lower_20": kc.keltner_channel_lband(),
        "donchian_upper_20": dc.donchian_channel_hband(),
        "donchian_middle_20": dc.donchian_channel_mband(),
        "donchian_lower_20": dc.donchian_channel_lband(),
        "macd_12_26": macd.macd(),
        "macd_signal_12_26_9": macd.macd_signal(),
        "macd_hist_12_26_9": macd.macd_diff(),
        "atr_14": atr,
        "natr_14": 100 * atr / c,
        "adx_14": adx.adx(),
        "plus_di_14": adx.adx_pos(),
        "minus_di_14": adx.adx_neg(),
    }


def textbook_obv(close: pd.Series, volume: pd.Series) -> pd.Series:
    """`ta`'s OBV with Granville's rule on an unchanged close: 0 there, where `ta` adds +volume."""
    ta_obv = ta.volume.OnBalanceVolumeIndicator(close, volume).on_balance_volume()
    return ta_obv - volume.where(close == close.shift(1), 0.0).cumsum()


def write_klines(klines: pl.DataFrame, folder: Path) -> list[str]:
    """One Parquet file per UTC day, as the lake holds curated klines."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for (day,), frame in klines.group_by(pl.col("open_time").dt.date(), maintain_order=True):
        path = folder / f"{day}.parquet"
        frame.write_parquet(path)
        files.append(str(path))
    return sorted(files)


def whole_series(files: list[str], interval: str) -> pl.DataFrame:
    frame = pl.read_parquet(files)
    first, last = frame["open_time"].min(), frame["open_time"].max()
    end = last + dt.timedelta(microseconds=1)
    return ind.compute_indicators(connect(), files, interval, first, end)


def assert_matches_ta(
    ours: pl.DataFrame, klines: pl.DataFrame, expected: dict[str, pd.Series] | None = None
) -> None:
    """``ours`` equals ``expected`` (default: `ta` on ``klines``) after each warm-up."""
    expected = expected or ta_indicators(klines.to_pandas())
    assert set(expected) == set(WARMUP) == set(ours.columns) - set(ind.KEY_COLUMNS)
    failures = []
    for name, theirs in expected.items():
        try:
            assert_column_matches(ours, name, theirs)
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    assert not failures, "\n".join(failures)


def assert_column_matches(ours: pl.DataFrame, name: str, theirs: pd.Series) -> None:
    mine = ours[name].to_numpy().astype(np.float64)
    reference = theirs.to_numpy(dtype=np.float64).copy()
    if name in TA_LAST_BAR_WRONG:
        mine, reference = mine[:-1], reference[:-1]
    usable = slice(WARMUP[name], None)
    mine, reference = mine[usable], reference[usable]
    assert np.array_equal(np.isnan(mine), np.isnan(reference)), name
    scale = np.nanmax(np.abs(reference))
    np.testing.assert_allclose(mine, reference, rtol=RTOL, atol=RTOL * scale, err_msg=name)


def assert_warmup_nulls(ours: pl.DataFrame) -> None:
    for name, first in WARMUP.items():
        column = ours[name]
        assert column[:first].null_count() == first, name
        assert column[first] is not None, name


def simulated(interval: str, days: int) -> pl.DataFrame:
    return simulate_klines("BTCUSDT", interval, TimeRange(START, START + dt.timedelta(days=days)))


@pytest.fixture(scope="module")
def sim_1m(tmp_path_factory) -> tuple[pl.DataFrame, list[str]]:
    klines = simulated("1m", 5)
    return klines, write_klines(klines, tmp_path_factory.mktemp("sim_1m"))


@pytest.fixture(scope="module")
def real_15m(shared_binance, tmp_path_factory) -> tuple[pl.DataFrame, list[str]]:
    path = shared_binance / "spot_freqtrade" / "BTC_USDT-15m.feather"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    klines = (
        pl.read_ipc(path)
        .rename({"date": "open_time"})
        .with_columns(pl.col("open_time").dt.cast_time_unit("us").dt.convert_time_zone("UTC"))
        .sort("open_time")
        .head(96 * 90)
    )
    return klines, write_klines(klines, tmp_path_factory.mktemp("real_15m"))


def test_simulated_1m_matches_ta(sim_1m):
    klines, files = sim_1m
    ours = whole_series(files, "1m")
    assert ours.height == klines.height and ours.width - len(ind.KEY_COLUMNS) >= 40
    assert_warmup_nulls(ours)
    assert_matches_ta(ours, klines)


@pytest.mark.parametrize(("interval", "days"), [("5m", 11), ("15m", 32), ("1h", 125)])
def test_other_intervals_match_ta(interval, days, tmp_path):
    klines = simulated(interval, days)
    ours = whole_series(write_klines(klines, tmp_path), interval)
    assert klines.height > ind.WARMUP_BARS
    assert (ours["decision_time"] - ours["open_time"] == interval_length(interval)).all()
    assert_warmup_nulls(ours)
    assert_matches_ta(ours, klines)


def test_real_15m_matches_ta(real_15m):
    klines, files = real_15m
    ours = whole_series(files, "15m")
    assert_warmup_nulls(ours)
    assert_matches_ta(ours, klines)


def partitions_equal_whole(files: list[str], interval: str, days: list[int]) -> None:
    whole = whole_series(files, interval)
    history = ind.warmup_days(interval)
    for day in days:
        start = pl.read_parquet(files[day])["open_time"].min()
        start = start.replace(hour=0, minute=0)
        history_files = files[max(0, day - history) : day + 1]
        part = ind.compute_indicators(
            connect(), history_files, interval, start, start + dt.timedelta(days=1)
        )
        expected = whole.filter(
            pl.col("open_time").is_between(
                part["open_time"][0], start + dt.timedelta(days=1), closed="left"
            )
        )
        assert part["open_time"].to_list() == expected["open_time"].to_list()
        for name in WARMUP:
            mine, theirs = part[name].to_numpy(), expected[name].to_numpy()
            assert np.array_equal(np.isnan(mine.astype(float)), np.isnan(theirs.astype(float)))
            scale = np.nanmax(np.abs(theirs)) if not np.all(np.isnan(theirs)) else 0.0
            np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=RTOL * scale, err_msg=name)


def test_partition_at_a_time_equals_whole_series_1m(sim_1m):
    _, files = sim_1m
    assert ind.warmup_days("1m") == 3
    # days 0-2 lack full history (seeded at the series start, like the whole series); 3-4 have it
    partitions_equal_whole(files, "1m", [0, 1, 2, 3, 4])


def test_partition_at_a_time_equals_whole_series_real_15m(real_15m):
    _, files = real_15m
    partitions_equal_whole(files, "15m", [10, 40, 60, 89])


def test_warmup_days_per_interval():
    assert ind.RECURSIVE_WARMUP["ema_200"] == ind.WARMUP_BARS
    expected = {"1m": 1440, "5m": 288, "15m": 96, "1h": 24}
    for interval, bars in expected.items():
        assert (ind.warmup_days(interval) - 1) * bars < ind.WARMUP_BARS
        assert ind.warmup_days(interval) * bars >= ind.WARMUP_BARS


def test_sql_by_hand(tmp_path):
    """Small hand-computed klines: exact values and warm-up NULLs of the SQL file alone."""
    times = [START + dt.timedelta(minutes=i) for i in range(25)]
    close = [float(100 + i) for i in range(25)]
    klines = pl.DataFrame(
        {
            "open_time": times,
            "open": close,
            "high": [c + 1 for c in close],
            "low": [c - 1 for c in close],
            "close": close,
            "volume": [10.0] * 25,
        }
    )
    path = tmp_path / "k.parquet"
    klines.write_parquet(path)
    params = {"kline_files": [str(path)], "bar_us": 60_000_000, "start": times[1], "end": times[24]}
    out = run_sql(connect(), "features/indicators", params).pl()
    assert out["open_time"].to_list() == times[1:24]  # [start, end)
    assert out["decision_time"].to_list() == times[2:25]  # the close of each candle
    row = out.row(23 - 1, named=True)  # open_time = times[23], close 123
    assert row["sma_10"] == pytest.approx(np.mean(close[14:24]), rel=1e-12)
    assert row["sma_50"] is None and row["sma_20"] == pytest.approx(113.5, rel=1e-12)
    assert row["mom_10"] == 10.0 and row["roc_12"] == pytest.approx(100 * 12 / 111, rel=1e-12)
    assert row["hl2"] == 123.0 and row["typical_price"] == 123.0
    # a rising close at the top of each bar's range: %K = 100 * (123 - 109) / (124 - 109)
    assert row["stoch_k_14"] == pytest.approx(100 * 14 / 15, rel=1e-12)
    assert row["obv_20"] == 200.0 and row["mfi_14"] == 100.0
    assert row["donchian_upper_20"] == 124.0 and row["donchian_lower_20"] == 103.0
    assert out.row(0, named=True)["ret_1"] == pytest.approx(1 / 100, rel=1e-12)
    assert out.row(8 - 1, named=True)["sma_10"] is None
    assert out.row(9 - 1, named=True)["sma_10"] == pytest.approx(104.5, rel=1e-12)


def test_obv_adds_nothing_on_an_unchanged_close(tmp_path):
    """Granville's OBV: +volume on a higher close, -volume on a lower one, 0 on an unchanged one."""
    times = [START + dt.timedelta(minutes=i) for i in range(25)]
    moves = [1.0, 0.0, -1.0, 0.0, 0.0]  # close change of bars 1, 2, 3, ... (repeating)
    close = [100.0]
    for bar in range(1, 25):
        close.append(close[-1] + moves[(bar - 1) % 5])
    volume = [float(bar + 1) for bar in range(25)]
    klines = pl.DataFrame(
        {
            "open_time": times,
            "high": [c + 1 for c in close],
            "low": [c - 1 for c in close],
            "close": close,
            "volume": volume,
        }
    )
    klines.write_parquet(tmp_path / "k.parquet")
    params = {
        "kline_files": [str(tmp_path / "k.parquet")],
        "bar_us": 60_000_000,
        "start": times[0],
        "end": times[-1] + dt.timedelta(minutes=1),
    }
    out = run_sql(connect(), "features/indicators", params).pl()
    # bars 1..20: rises at bars 1, 6, 11, 16 (volumes 2 + 7 + 12 + 17 = 38), falls at 3, 8, 13, 18
    # (4 + 9 + 14 + 19 = 46): -8; then bar 21 rises (+22), bar 23 falls (+24 in, 4 out), ...
    expected = [None] * 20 + [-8.0, 12.0, 12.0, -8.0, -8.0]
    assert out["obv_20"].to_list() == expected
    c, v = klines["close"].to_pandas(), klines["volume"].to_pandas()
    assert textbook_obv(c, v).diff(20).tolist()[20:] == expected[20:]
    # `ta` counts the 12 unchanged closes as rises: a different series, not a rounding
    theirs = ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume().diff(20)
    assert theirs.tolist()[20:] == [138.0, 158.0, 178.0, 158.0, 178.0]


@pytest.mark.parametrize(("interval", "days"), [("1m", 1), ("15m", 3)])
def test_labels_join_the_indicators_of_the_candle_that_closes_at_decision_time(
    interval, days, tmp_path
):
    """Joined on decision_time, a label row gets the indicators of candle t (open_time =
    decision_time - interval), whose close is the last price known then; never candle t + 1."""
    bar = interval_length(interval)
    klines = simulated(interval, days).with_columns(is_complete=pl.lit(True))
    files = write_klines(klines, tmp_path)
    end = START + dt.timedelta(days=days)
    con = connect()
    indicators = ind.compute_indicators(con, files, interval, START, end)
    labels = build_labels(con, files, interval, START, end + bar)
    joined = labels.join(indicators, on="decision_time", how="left")
    assert joined.height == labels.height > 0
    assert joined["open_time"].null_count() == 0  # every label row found its candle
    assert (joined["open_time"] == joined["decision_time"] - bar).all()
    # sma_20 and typical_price of candle t straight from the klines, keyed by t's close
    candle_t = klines.select(
        (pl.col("open_time") + bar).alias("decision_time"),
        pl.col("close").rolling_mean(20).alias("klines_sma_20"),
        ((pl.col("high") + pl.col("low") + pl.col("close")) / 3).alias("klines_typical_price"),
    )
    checked = joined.join(candle_t, on="decision_time").drop_nulls("klines_sma_20")
    assert checked.height > 0.9 * joined.height  # all but the first 19 candles' labels
    np.testing.assert_allclose(checked["sma_20"], checked["klines_sma_20"], rtol=1e-12)
    np.testing.assert_allclose(
        checked["typical_price"], checked["klines_typical_price"], rtol=1e-15
    )


def test_stochastic_is_null_where_the_range_is_flat(tmp_path):
    """%K is undefined on a flat 14-bar range; %D over it is NULL, not a mean of fewer bars."""
    times = [START + dt.timedelta(minutes=i) for i in range(40)]
    close = [100.0] * 20 + [100.0 + i for i in range(1, 21)]
    klines = pl.DataFrame(
        {"open_time": times, "high": close, "low": close, "close": close, "volume": [1.0] * 40}
    )
    klines.write_parquet(tmp_path / "k.parquet")
    end = times[-1] + dt.timedelta(minutes=1)
    params = {
        "kline_files": [str(tmp_path / "k.parquet")],
        "bar_us": 60_000_000,
        "start": times[0],
        "end": end,
    }
    out = run_sql(connect(), "features/indicators", params).pl()
    stoch_k, stoch_d = out["stoch_k_14"].to_list(), out["stoch_d_3"].to_list()
    assert stoch_k[19] is None and stoch_k[20] == 100.0  # bar 20 is the first to rise
    assert stoch_d[21] is None and stoch_d[22] == 100.0
    high, low, close = (klines[c].to_pandas() for c in ("high", "low", "close"))
    theirs = ta.momentum.StochasticOscillator(high, low, close, 14, 3).stoch_signal()
    assert np.isnan(theirs[21]) and theirs[22] == 100.0


def test_duplicate_bars_are_rejected(tmp_path):
    klines = simulated("1h", 2)
    files = write_klines(pl.concat([klines, klines.tail(1)]), tmp_path)
    with pytest.raises(ValueError, match="repeat an open_time"):
        ind.compute_indicators(connect(), files, "1h", START, START + dt.timedelta(days=2))


def test_run_sql_checks_params(tmp_path):
    with pytest.raises(InvalidRequestError):
        run_sql(connect(), "features/indicators", {"kline_files": [], "start": START})


def loop_recursive_mean(x: np.ndarray, period: int, alpha: float) -> np.ndarray:
    """Plain-loop reference of the textbook seeded smoother (test only)."""
    out = np.full(len(x), np.nan)
    first = int(np.flatnonzero(~np.isnan(x))[0])
    seed_at = first + period - 1
    out[seed_at] = np.mean(x[first : seed_at + 1])
    for t in range(seed_at + 1, len(x)):
        out[t] = (1 - alpha) * out[t - 1] + alpha * x[t]
    return out


def test_recursive_mean_textbook_seed():
    x = np.array([np.nan, 1.0, 2.0, 3.0, 4.0, 10.0, 0.0])
    out = ind.recursive_mean(x, 3, 1 / 3)
    # Wilder: first average = mean of the first 3 inputs, then (2 * prev + x) / 3
    assert np.isnan(out[:3]).all() and out[3] == 2.0
    assert out[4] == pytest.approx((2 * 2 + 4) / 3, rel=1e-15)
    assert out[5] == pytest.approx((2 * out[4] + 10) / 3, rel=1e-15)
    rng = np.random.default_rng(0)
    y = rng.normal(100, 5, 2000)
    np.testing.assert_allclose(
        ind.recursive_mean(y, 14, 2 / 15), loop_recursive_mean(y, 14, 2 / 15), rtol=1e-12
    )


def test_rsi_and_adx_textbook_seed(sim_1m):
    """Wilder's RSI and ADX from their first bar, against a plain-loop textbook computation."""
    klines, _ = sim_1m
    h, low, c = (klines[col].to_numpy() for col in ("high", "low", "close"))
    change = np.diff(c, prepend=np.nan)
    gain = np.where(change > 0, change, 0.0)
    loss = np.where(change < 0, -change, 0.0)
    gain[0] = loss[0] = np.nan
    up, down = loop_recursive_mean(gain, 14, 1 / 14), loop_recursive_mean(loss, 14, 1 / 14)
    rsi = 100 - 100 / (1 + up / down)
    raw = ind._rsi_columns(c)["rsi_14"]
    np.testing.assert_allclose(raw[14:], rsi[14:], rtol=1e-10)
    # ADX: DX from bar 14, first ADX = mean of DX at bars 14..27, at bar 27
    prices = ind._Prices(h, low, c)
    adx = ind._adx_columns(prices)
    plus, minus = adx["plus_di_14"], adx["minus_di_14"]
    dx = 100 * np.abs(plus - minus) / (plus + minus)
    assert np.isnan(adx["adx_14"][:27]).all()
    assert adx["adx_14"][27] == pytest.approx(np.mean(dx[14:28]), rel=1e-12)
    np.testing.assert_allclose(adx["adx_14"], loop_recursive_mean(dx, 14, 1 / 14), rtol=1e-10)


def test_feature_availability(sim_1m):
    _, files = sim_1m
    ours = whole_series(files, "1m")
    report = ind.feature_availability(ours)
    assert set(report["indicator"]) == set(WARMUP)  # the key columns are not indicators
    usable = {(str(r["date"]), r["indicator"]): r["usable"] for r in report.iter_rows(named=True)}
    assert usable[("2024-01-01", "sma_200")] is False
    assert usable[("2024-01-02", "sma_200")] is True
    assert usable[("2024-01-02", "ema_200")] is False  # bar 2963 is on the third day
    assert usable[("2024-01-03", "ema_200")] is False
    assert usable[("2024-01-04", "ema_200")] is True
    assert report.filter(pl.col("date") == dt.date(2024, 1, 5))["usable"].all()
