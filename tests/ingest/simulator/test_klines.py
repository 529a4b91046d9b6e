"""The simulator's per-second path and klines: deterministic, partition-independent, continuous,
in the contract, realistic; its configuration and profiles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from dagster_project.core.errors import (
    InvalidRequestError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import INTERVALS, RAW_KLINE_SCHEMA, UTC, TimeRange
from dagster_project.ingest.simulator import (
    KNOWN_PROFILES,
    DayPath,
    SimulatorConfig,
    aggregate_day,
    simulate_day,
    simulate_klines,
)
from dagster_project.ingest.simulator.config import derive_profile
from dagster_project.ingest.simulator.units import SECONDS_PER_DAY
from tests.ingest.simulator.dates import DAY1, days

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XYZ123ABC")


@pytest.fixture(scope="module")
def three_days_1m() -> pl.DataFrame:
    return simulate_klines("BTCUSDT", "1m", days(DAY1, 3))


def log_returns(frame: pl.DataFrame) -> np.ndarray:
    return np.diff(np.log(frame["close"].to_numpy()))


def acf(values: np.ndarray, lag: int) -> float:
    x = values - values.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


def excess_kurtosis(values: np.ndarray) -> float:
    x = values - values.mean()
    return float((x**4).mean() / (x**2).mean() ** 2 - 3)


def heavy_tailed_and_clustered(returns: np.ndarray) -> dict[str, bool]:
    """The stylised-fact thresholds, shared by the simulator test and the Gaussian control."""
    abs_acf = [acf(np.abs(returns), lag) for lag in range(1, 11)]
    raw_acf = [acf(returns, lag) for lag in range(1, 11)]
    return {
        "heavy tails": excess_kurtosis(returns) > 2.0,
        "volatility clustering": min(abs_acf) > 0.05 and float(np.mean(abs_acf)) > 0.08,
        "no linear predictability": max(map(abs, raw_acf)) < 0.08,
    }


# ── contract ─────────────────────────────────────────────────────────────────────────────────────


def test_schema_source_and_grid(three_days_1m: pl.DataFrame) -> None:
    frame = three_days_1m
    assert frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert frame.height == 3 * 1440
    assert frame.null_count().sum_horizontal().item() == 0
    assert frame["source"].unique().to_list() == ["simulator"]
    assert frame["open_time"][0] == DAY1
    assert frame["open_time"].diff().drop_nulls().unique().to_list() == [dt.timedelta(minutes=1)]
    assert (frame["close_time"] - frame["open_time"]).unique().to_list() == [
        dt.timedelta(minutes=1) - dt.timedelta(milliseconds=1)
    ]


@pytest.mark.parametrize("interval", ["1s", "1m", "3m", "5m", "15m", "1h", "4h", "12h", "1d"])
def test_every_interval_has_the_day_s_bars(interval: str) -> None:
    frame = simulate_klines("ETHUSDT", interval, days(DAY1, 1))
    step = INTERVALS[interval]
    assert frame.height == dt.timedelta(days=1) // step
    assert frame["open_time"][-1] == DAY1 + dt.timedelta(days=1) - step
    assert frame["close_time"][-1] == DAY1 + dt.timedelta(days=1) - dt.timedelta(milliseconds=1)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_ohlc_ticks_lots_and_flows_are_consistent(symbol: str) -> None:
    config = SimulatorConfig()
    profile = config.profile(symbol)
    for start, interval in [(DAY1, "1m"), (dt.datetime(2019, 11, 30, tzinfo=UTC), "1s")]:
        frame = simulate_klines(symbol, interval, days(start, 2), config)
        o, h, low, c = (frame[name].to_numpy() for name in ("open", "high", "low", "close"))
        assert (low > 0).all()
        assert (low <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all()
        for prices in (o, h, low, c):
            in_ticks = prices / profile.tick_size
            assert np.abs(in_ticks - np.rint(in_ticks)).max() < 1e-6
        volume, trades = frame["volume"].to_numpy(), frame["trades"].to_numpy()
        in_lots = volume / profile.lot_size
        assert np.abs(in_lots - np.rint(in_lots)).max() < 1e-6
        assert (trades >= 1).all() and (volume > 0).all()
        taker = frame["taker_buy_base_volume"].to_numpy()
        assert (taker >= 0).all() and (taker <= volume).all()
        vwap = frame["quote_volume"].to_numpy() / volume
        assert (vwap >= low * (1 - 1e-12)).all() and (vwap <= h * (1 + 1e-12)).all()
        bought = taker > 0
        buy_vwap = frame["taker_buy_quote_volume"].to_numpy()[bought] / taker[bought]
        assert (buy_vwap >= low[bought] * (1 - 1e-12)).all()
        assert (buy_vwap <= h[bought] * (1 + 1e-12)).all()


def test_taker_buying_is_tilted_by_the_bar_s_direction(three_days_1m: pl.DataFrame) -> None:
    share = three_days_1m["taker_buy_base_volume"] / three_days_1m["volume"]
    up = three_days_1m["close"] > three_days_1m["open"]
    down = three_days_1m["close"] < three_days_1m["open"]
    assert share.filter(up).mean() > 0.55 > 0.45 > share.filter(down).mean()


def test_prices_start_near_the_profile_and_stay_plausible() -> None:
    first = simulate_klines("BTCUSDT", "1d", days(dt.datetime(2017, 1, 1, tzinfo=UTC), 1))
    assert first["open"].item() == KNOWN_PROFILES["BTCUSDT"].start_price
    later = simulate_klines("SOLUSDT", "1d", days(dt.datetime(2025, 6, 1, tzinfo=UTC), 1))
    assert 100 / 30 < later["close"].item() < 100 * 30


# ── determinism, partition independence, continuity ────────────────────────────────────────────


def test_same_inputs_give_the_same_bytes(three_days_1m: pl.DataFrame) -> None:
    again = simulate_klines("BTCUSDT", "1m", days(DAY1, 3))
    assert again.write_ipc(None).getvalue() == three_days_1m.write_ipc(None).getvalue()
    other_seed = simulate_klines("BTCUSDT", "1m", days(DAY1, 3), SimulatorConfig(seed=1))
    assert not other_seed.equals(three_days_1m)
    other_symbol = simulate_klines("BNBUSDT", "1m", days(DAY1, 3))
    assert not np.allclose(log_returns(other_symbol), log_returns(three_days_1m))


def test_a_day_alone_equals_the_day_inside_a_range(three_days_1m: pl.DataFrame) -> None:
    day2 = DAY1 + dt.timedelta(days=1)
    alone = simulate_klines("BTCUSDT", "1m", days(day2, 1))
    inside = three_days_1m.filter(pl.col("open_time").dt.date() == day2.date())
    assert alone.equals(inside)
    hour = TimeRange(day2 + dt.timedelta(hours=6), day2 + dt.timedelta(hours=7))
    assert simulate_klines("BTCUSDT", "1m", hour).equals(
        inside.filter(pl.col("open_time").is_between(hour.start, hour.end, closed="left"))
    )


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_the_path_is_continuous_across_days(symbol: str) -> None:
    tick = SimulatorConfig().profile(symbol).tick_size
    frame = simulate_klines(symbol, "1h", days(dt.datetime(2022, 12, 28, tzinfo=UTC), 8))
    at_midnight = frame.filter(pl.col("open_time").dt.hour() == 0)["open"].to_numpy()[1:]
    before = frame.filter(pl.col("open_time").dt.hour() == 23)["close"].to_numpy()[:-1]
    assert len(at_midnight) == 7
    assert np.abs(at_midnight - before).max() <= 2 * tick
    # Day-to-day moves look like ordinary hours, not jumps to an unrelated level.
    hourly = np.abs(np.diff(np.log(frame["close"].to_numpy()))).max()
    assert hourly < 0.1


def test_day_path_is_the_source_of_the_klines() -> None:
    path = simulate_day("BTCUSDT", "2024-03-05")
    assert isinstance(path, DayPath)
    assert path.mid.shape == (SECONDS_PER_DAY + 1,)
    for values in (path.volatility, path.intensity, path.open, path.trades, path.volume_lots):
        assert values.shape == (SECONDS_PER_DAY,)
        assert not values.flags.writeable
    assert (path.volatility > 0).all() and (path.intensity > 0).all()
    assert np.array_equal(path.open[1:], path.close[:-1])
    assert (path.taker_buy_lots <= path.volume_lots).all()
    assert path.mid[-1] == simulate_day("BTCUSDT", dt.date(2024, 3, 6)).mid[0]
    klines = aggregate_day(path, "1h")
    same_day = days(dt.datetime(2024, 3, 5, tzinfo=UTC), 1)
    assert klines.equals(simulate_klines("BTCUSDT", "1h", same_day))
    assert klines["trades"].sum() == path.trades.sum()
    assert klines["volume"].sum() == pytest.approx(path.volume().sum(), rel=1e-12)
    assert abs(path.open[0] - path.mid[0]) <= path.tick_size / 2 + 1e-9


# ── stylised facts ───────────────────────────────────────────────────────────────────────────────


def test_returns_are_heavy_tailed_and_volatility_clusters(three_days_1m: pl.DataFrame) -> None:
    facts = heavy_tailed_and_clustered(log_returns(three_days_1m))
    assert facts == dict.fromkeys(facts, True), facts


def test_a_gaussian_constant_volatility_walk_fails_those_thresholds() -> None:
    returns = np.random.default_rng(7).normal(0, 8e-4, 3 * 1440 - 1)
    facts = heavy_tailed_and_clustered(returns)
    assert not facts["heavy tails"] and not facts["volatility clustering"], facts


def test_volume_rises_with_the_size_of_the_move(three_days_1m: pl.DataFrame) -> None:
    moves = np.abs(log_returns(three_days_1m))
    volume = three_days_1m["volume"].to_numpy()[1:]
    assert np.corrcoef(volume, moves)[0, 1] > 0.3
    trades = three_days_1m["trades"].to_numpy()[1:]
    assert np.corrcoef(trades, moves)[0, 1] > 0.3


def test_volume_follows_the_intraday_sessions(three_days_1m: pl.DataFrame) -> None:
    minute = pl.col("open_time").dt.hour().cast(pl.Int32) * 60 + pl.col("open_time").dt.minute()

    def mean_volume(first: int, last: int) -> float:
        return three_days_1m.filter(minute.is_between(first, last, closed="left"))["volume"].mean()

    us_session, asia_lull = mean_volume(13 * 60 + 30, 16 * 60), mean_volume(3 * 60, 6 * 60)
    assert us_session > 1.5 * asia_lull


def test_coarser_klines_aggregate_the_finer_ones(three_days_1m: pl.DataFrame) -> None:
    day = three_days_1m.filter(pl.col("open_time").dt.date() == DAY1.date())
    resampled = day.group_by_dynamic("open_time", every="5m").agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
        pl.col("quote_volume").sum(),
        pl.col("trades").sum(),
        pl.col("taker_buy_base_volume").sum(),
        pl.col("close_time").last(),
    )
    five = simulate_klines("BTCUSDT", "5m", days(DAY1, 1))
    exact = ["open_time", "open", "high", "low", "close", "trades", "close_time"]
    assert five.select(exact).equals(resampled.select(exact))
    for name in ("volume", "quote_volume", "taker_buy_base_volume"):
        np.testing.assert_allclose(five[name].to_numpy(), resampled[name].to_numpy(), rtol=1e-12)


# ── ranges and bad input ───────────────────────────────────────────────────────────────────────


def test_only_bars_opening_inside_the_range_are_returned() -> None:
    start = dt.datetime(2024, 3, 5, 23, 57, 30, tzinfo=UTC)
    frame = simulate_klines("SOLUSDT", "1m", TimeRange(start, start + dt.timedelta(minutes=5)))
    assert frame["open_time"].to_list() == [
        dt.datetime(2024, 3, 5, 23, 58, tzinfo=UTC) + dt.timedelta(minutes=i) for i in range(5)
    ]


def test_profiles_are_known_or_derived_from_the_name() -> None:
    config = SimulatorConfig()
    assert config.profile("BTCUSDT").start_price == 40_000
    assert config.profile("ETHUSDT").start_price == 2_500
    assert config.profile("SOLUSDT").start_price == 100
    derived = config.profile("XYZ123ABC")
    assert derived == derive_profile("XYZ123ABC") != derive_profile("XYZ124ABC")
    assert derived.start_price > 0 and 0 < derived.annual_volatility < 2
    assert derived.tick_size < derived.start_price / 1000


@pytest.mark.parametrize("interval", ["7m", "1w", "1M", ""])
def test_unsupported_interval_is_named(interval: str) -> None:
    with pytest.raises(UnsupportedIntervalError, match=f"unsupported kline interval '{interval}'"):
        simulate_klines("BTCUSDT", interval, days(DAY1, 1))


@pytest.mark.parametrize("symbol", ["", "btcusdt", "BTC-USDT", "BTC", "A" * 21, None])
def test_malformed_symbol_is_named_with_the_rule(symbol: str) -> None:
    with pytest.raises(UnknownSymbolError, match=r"\^\[A-Z0-9\]\{5,20\}\$") as caught:
        simulate_klines(symbol, "1m", days(DAY1, 1))
    assert repr(symbol) in str(caught.value)


def test_empty_or_reversed_range_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="is not before end"):
        simulate_klines("BTCUSDT", "1m", TimeRange(DAY1, DAY1))
    with pytest.raises(InvalidRequestError, match="is not before end"):
        simulate_klines("BTCUSDT", "1m", TimeRange(DAY1, DAY1 - dt.timedelta(hours=1)))


def test_days_before_the_epoch_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="2016-12-31 is before the simulator's epoch"):
        simulate_klines("BTCUSDT", "1h", days(dt.datetime(2016, 12, 31, tzinfo=UTC), 2))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"garch_alpha": 0.1, "garch_beta": 0.95}, "garch_alpha \\+ garch_beta"),
        ({"student_t_dof": 2.0}, "student_t_dof 2.0"),
        ({"seed": -1}, "seed -1"),
    ],
)
def test_bad_config_is_named(settings: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        SimulatorConfig(**settings)
