"""The simulator: deterministic, partition-independent, continuous, in the contract, realistic."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from dagster_project.checks import agg_trade_checks, depth_snapshot_checks
from dagster_project.errors import InvalidRequestError, UnknownSymbolError, UnsupportedIntervalError
from dagster_project.ingest.simulator import (
    KNOWN_PROFILES,
    SECONDS_PER_DAY,
    DayPath,
    SimulatorConfig,
    aggregate_day,
    derive_profile,
    simulate_agg_trades,
    simulate_day,
    simulate_depth_snapshots,
    simulate_klines,
)
from dagster_project.klines import INTERVALS, RAW_KLINE_SCHEMA, UTC, TimeRange
from dagster_project.schemas import AGG_TRADE_SCHEMA, DEPTH_SNAPSHOT_SCHEMA

DAY1 = dt.datetime(2024, 3, 4, tzinfo=UTC)  # a Monday; the fixture covers Monday to Wednesday
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XYZ123ABC")


def days(start: dt.datetime, n: int) -> TimeRange:
    return TimeRange(start, start + dt.timedelta(days=n))


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


# ── aggregate trades ─────────────────────────────────────────────────────────────────────────────

TRADE_DAY = dt.datetime(2024, 3, 5, tzinfo=UTC)


@pytest.fixture(scope="module", params=["ETHUSDT", "SOLUSDT"])
def day_of_trades(request: pytest.FixtureRequest) -> tuple[str, pl.DataFrame]:
    return request.param, simulate_agg_trades(request.param, days(TRADE_DAY, 1))


def per_bar(trades: pl.DataFrame, every: str) -> pl.DataFrame:
    """The trades aggregated like klines: one row per bar of ``every`` that holds trades."""
    bought = ~pl.col("is_buyer_maker")
    return (
        trades.with_columns(
            fills=pl.col("last_trade_id") - pl.col("first_trade_id") + 1,
            quote=pl.col("price") * pl.col("qty"),
        )
        .group_by_dynamic("ts", every=every)
        .agg(
            trades=pl.col("fills").sum(),
            volume=pl.col("qty").sum(),
            taker_buy=pl.col("qty").filter(bought).sum(),
            quote=pl.col("quote").sum(),
            taker_buy_quote=pl.col("quote").filter(bought).sum(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
        )
    )


def unreachable_minutes(path: DayPath) -> np.ndarray:
    """Minutes whose own taker-buy or taker-sell quote volume no trades could produce: beyond
    what the minute's taker lots make with every lot at the lowest (highest) second-low (-high)
    its seconds' volumes allow (a relaxation, so these are certainly out of reach)."""
    tick = path.tick_size
    low = (path.low / tick).round().reshape(1440, 60)
    high = (path.high / tick).round().reshape(1440, 60)
    volume = path.volume_lots.reshape(1440, 60).astype(float)
    buys = path.taker_buy_lots.reshape(1440, 60).sum(axis=1)

    def best(lots: np.ndarray, price: np.ndarray, cheapest: bool) -> np.ndarray:
        order = np.argsort(price if cheapest else -price, axis=1)
        price, room = np.take_along_axis(price, order, 1), np.take_along_axis(volume, order, 1)
        take = np.clip(lots[:, None] - (np.cumsum(room, 1) - room), 0, room)
        return (take * price).sum(axis=1) * tick * path.lot_size

    sells = volume.sum(axis=1) - buys
    quote = path.quote_volume.reshape(1440, 60).sum(axis=1)
    buy_quote = path.taker_buy_quote_volume.reshape(1440, 60).sum(axis=1)
    slack = 1e-9 * quote
    return (
        (quote - buy_quote < best(sells, low, True) - slack)
        | (quote - buy_quote > best(sells, high, False) + slack)
        | (buy_quote < best(buys, low, True) - slack)
        | (buy_quote > best(buys, high, False) + slack)
    )


def test_agg_trades_are_in_the_contract(day_of_trades: tuple[str, pl.DataFrame]) -> None:
    symbol, trades = day_of_trades
    profile = SimulatorConfig().profile(symbol)
    assert trades.schema == pl.Schema(AGG_TRADE_SCHEMA)
    assert trades.null_count().sum_horizontal().item() == 0
    assert trades["source"].unique().to_list() == ["simulator"]
    assert (trades["price"] > 0).all() and (trades["qty"] > 0).all()
    for column, step in (("price", profile.tick_size), ("qty", profile.lot_size)):
        in_steps = trades[column].to_numpy() / step
        assert np.abs(in_steps - np.rint(in_steps)).max() < 1e-6
    assert all(outcome.passed for outcome in agg_trade_checks(trades, TRADE_DAY.date()))


def test_trades_add_up_to_every_1m_kline(day_of_trades: tuple[str, pl.DataFrame]) -> None:
    symbol, trades = day_of_trades
    profile = SimulatorConfig().profile(symbol)
    klines = simulate_klines(symbol, "1m", days(TRADE_DAY, 1))
    bars = per_bar(trades, "1m")
    assert bars["ts"].equals(klines["open_time"], check_names=False)
    assert (bars["trades"] == klines["trades"]).all()
    lot, quantum = profile.lot_size, profile.tick_size * profile.lot_size
    for ours, theirs in (("volume", "volume"), ("taker_buy", "taker_buy_base_volume")):
        assert (bars[ours] - klines[theirs]).abs().max() < lot / 2
    # quote volumes: exact to the price x quantity grid, except in minutes whose own figures
    # are out of reach of any trades (the klines' per-second flows can be); none on these days
    out_of_reach = unreachable_minutes(simulate_day(symbol, TRADE_DAY.date()))
    assert out_of_reach.sum() == 0
    for ours, theirs in (("quote", "quote_volume"), ("taker_buy_quote", "taker_buy_quote_volume")):
        error = (bars[ours] - klines[theirs]).abs().to_numpy()
        assert (error <= quantum + 1e-12 * klines["quote_volume"].to_numpy()).all(), ours
    assert (bars["high"] <= klines["high"]).all() and (bars["low"] >= klines["low"]).all()


def test_only_minutes_the_klines_put_out_of_reach_miss_their_quote_volume() -> None:
    """On this day one BTCUSDT minute's taker-sell quote volume is below what its sells could
    fetch even at their seconds' lows: its trades come as near as they can, the rest are exact."""
    day = dt.datetime(2018, 7, 27, tzinfo=UTC)
    path = simulate_day("BTCUSDT", day.date())
    out_of_reach = unreachable_minutes(path)
    bars = per_bar(simulate_agg_trades("BTCUSDT", days(day, 1)), "1m")
    klines = aggregate_day(path, "1m")
    quote = klines["quote_volume"].to_numpy()
    error = np.abs(bars["quote"].to_numpy() - quote)
    missed = error > path.tick_size * path.lot_size + 1e-12 * quote
    assert out_of_reach.sum() == 1 and np.array_equal(missed, out_of_reach)
    assert (error / quote).max() < 1e-6
    assert (bars["taker_buy"] - klines["taker_buy_base_volume"]).abs().max() < path.lot_size / 2


def test_each_second_s_trades_add_up_and_stay_inside_it(
    day_of_trades: tuple[str, pl.DataFrame],
) -> None:
    symbol, trades = day_of_trades
    path = simulate_day(symbol, TRADE_DAY.date())
    seconds = per_bar(trades, "1s")
    index = ((seconds["ts"] - TRADE_DAY).dt.total_seconds()).to_numpy()
    assert seconds.height == SECONDS_PER_DAY  # every second holds at least one trade
    assert np.array_equal(seconds["trades"].to_numpy(), path.trades[index])
    volume = path.volume()[index]
    assert np.abs(seconds["volume"].to_numpy() - volume).max() < path.lot_size / 2
    tolerance = path.tick_size / 100
    assert (seconds["high"].to_numpy() <= path.high[index] + tolerance).all()
    assert (seconds["low"].to_numpy() >= path.low[index] - tolerance).all()
    # taker buys follow the klines' second by second wherever trades can (a second of one trade
    # has one taker, so it cannot split its lots between buyers and sellers)
    taker = np.rint(seconds["taker_buy"].to_numpy() / path.lot_size)
    lone_split = (path.trades == 1) & (path.taker_buy_lots > 0)
    lone_split &= path.taker_buy_lots < path.volume_lots
    assert (taker == path.taker_buy_lots)[~lone_split[index]].mean() > 0.9


def test_trade_ids_are_contiguous_and_times_ordered(
    day_of_trades: tuple[str, pl.DataFrame],
) -> None:
    symbol, trades = day_of_trades
    first_id = (TRADE_DAY.date() - SimulatorConfig().epoch).days * 10**10
    assert trades["agg_trade_id"][0] == first_id == trades["first_trade_id"][0]
    assert (trades["agg_trade_id"].diff().drop_nulls() == 1).all()
    assert (trades["first_trade_id"].shift(-1) == trades["last_trade_id"] + 1).drop_nulls().all()
    assert (trades["last_trade_id"] >= trades["first_trade_id"]).all()
    assert (trades["ts"].diff().drop_nulls() > dt.timedelta(0)).all()
    assert trades["ts"].min() >= TRADE_DAY
    assert trades["ts"].max() < TRADE_DAY + dt.timedelta(days=1)


def test_taker_buys_trade_above_taker_sells(day_of_trades: tuple[str, pl.DataFrame]) -> None:
    _, trades = day_of_trades
    vwap = (
        trades.group_by(pl.col("ts").dt.truncate("1s"), "is_buyer_maker")
        .agg(vwap=(pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum())
        .pivot("is_buyer_maker", index="ts", values="vwap")
        .drop_nulls()
    )
    assert (vwap["false"] >= vwap["true"]).mean() > 0.9


def test_agg_trades_are_deterministic_and_a_day_depends_only_on_itself() -> None:
    two_days = simulate_agg_trades("XYZ123ABC", days(DAY1, 2))
    day2 = DAY1 + dt.timedelta(days=1)
    alone = simulate_agg_trades("XYZ123ABC", days(day2, 1))
    inside = two_days.filter(pl.col("ts") >= day2)
    assert alone.write_ipc(None).getvalue() == inside.write_ipc(None).getvalue()
    # ids start afresh at each day's block, above the day before
    assert alone["agg_trade_id"][0] == (day2.date() - SimulatorConfig().epoch).days * 10**10
    assert (two_days["agg_trade_id"].diff().drop_nulls() > 0).all()
    other_seed = simulate_agg_trades("XYZ123ABC", days(day2, 1), SimulatorConfig(seed=1))
    assert not other_seed["price"].equals(alone["price"])
    # a range returns exactly the day's trades inside it
    start = day2 + dt.timedelta(hours=5, minutes=59, seconds=59, milliseconds=500)
    window = TimeRange(start, start + dt.timedelta(minutes=30))
    inside = alone.filter(pl.col("ts").is_between(window.start, window.end, closed="left"))
    assert simulate_agg_trades("XYZ123ABC", window).equals(inside) and inside.height > 0


# ── order books ──────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def btc_books() -> pl.DataFrame:
    return simulate_depth_snapshots("BTCUSDT", days(TRADE_DAY, 1))


def touch(books: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    best = books.select(pl.col("bid_prices").list.first(), pl.col("ask_prices").list.first())
    return best["bid_prices"].to_numpy(), best["ask_prices"].to_numpy()


def test_books_are_in_the_contract_on_an_exact_cadence(btc_books: pl.DataFrame) -> None:
    profile = SimulatorConfig().profile("BTCUSDT")
    assert btc_books.schema == pl.Schema(DEPTH_SNAPSHOT_SCHEMA)
    assert btc_books.height == SECONDS_PER_DAY
    assert btc_books["ts"][0] == TRADE_DAY
    assert (btc_books["ts"].diff().drop_nulls() == dt.timedelta(seconds=1)).all()
    assert btc_books["source"].unique().to_list() == ["simulator"]
    assert (btc_books["last_update_id"].diff().drop_nulls() > 0).all()
    for side in ("bid", "ask"):
        assert (btc_books[f"{side}_prices"].list.len() == 50).all()
        sizes = btc_books[f"{side}_sizes"].explode().to_numpy()
        assert (sizes > 0).all()
        assert np.abs(sizes / profile.lot_size - np.rint(sizes / profile.lot_size)).max() < 1e-6
        prices = btc_books[f"{side}_prices"].explode().to_numpy() / profile.tick_size
        assert np.abs(prices - np.rint(prices)).max() < 1e-6
    assert all(o.passed for o in depth_snapshot_checks(btc_books, TRADE_DAY.date(), 1.0))


def test_books_straddle_the_mid_with_monotone_ladders(btc_books: pl.DataFrame) -> None:
    path = simulate_day("BTCUSDT", TRADE_DAY.date())
    bid, ask = touch(btc_books)
    assert (bid < path.mid[:-1]).all() and (path.mid[:-1] < ask).all()
    # the second's first trade (its open) is inside the book at its start
    assert (bid <= path.open + 1e-9).all() and (path.open <= ask + 1e-9).all()
    ladders = btc_books.select(
        bids=pl.col("bid_prices").list.diff().list.drop_nulls().list.max(),
        asks=pl.col("ask_prices").list.diff().list.drop_nulls().list.min(),
    )
    assert (ladders["bids"] < 0).all() and (ladders["asks"] > 0).all()


def test_spread_widens_and_the_touch_thins_with_volatility(btc_books: pl.DataFrame) -> None:
    volatility = simulate_day("BTCUSDT", TRADE_DAY.date()).volatility
    bid, ask = touch(btc_books)
    spread = np.rint((ask - bid) / KNOWN_PROFILES["BTCUSDT"].tick_size)
    assert np.corrcoef(spread, volatility)[0, 1] > 0.3
    calm, wild = np.quantile(volatility, [0.1, 0.9])
    assert spread[volatility >= wild].mean() > 1.5 * spread[volatility <= calm].mean()
    near = btc_books.select(pl.col("bid_sizes").list.head(5).list.sum())["bid_sizes"].to_numpy()
    assert np.corrcoef(near, volatility)[0, 1] < -0.1
    assert near[volatility >= wild].mean() < 0.8 * near[volatility <= calm].mean()
    span = btc_books.select(pl.col("bid_prices").list.first() - pl.col("bid_prices").list.last())
    assert np.corrcoef(span.to_series().to_numpy(), volatility)[0, 1] > 0.3


def test_a_book_depends_only_on_its_instant() -> None:
    two_days = simulate_depth_snapshots("ETHUSDT", days(DAY1, 2), cadence_s=5)
    day2 = DAY1 + dt.timedelta(days=1)
    alone = simulate_depth_snapshots("ETHUSDT", days(day2, 1), cadence_s=5)
    assert alone.equals(two_days.filter(pl.col("ts") >= day2))
    assert (two_days["last_update_id"].diff().drop_nulls() > 0).all()  # across midnight too
    # finer cadences, fewer levels and shorter ranges give the same books at the same instants
    start = day2 + dt.timedelta(hours=13, minutes=30, milliseconds=250)
    window = TimeRange(start, start + dt.timedelta(minutes=10))
    fine = simulate_depth_snapshots("ETHUSDT", window, cadence_s=0.25, levels=20)
    assert fine.height == 10 * 60 * 4
    assert (
        fine["ts"][0] == start
        and (fine["ts"].diff().drop_nulls() == dt.timedelta(milliseconds=250)).all()
    )
    coarse = alone.filter(pl.col("ts").is_between(window.start, window.end, closed="left"))
    sampled = fine.join(coarse.select("ts"), on="ts")
    assert sampled.height == coarse.height == 120
    lists = [c for c, dtype in DEPTH_SNAPSHOT_SCHEMA.items() if isinstance(dtype, pl.List)]
    assert sampled.equals(coarse.with_columns(pl.col(c).list.head(20) for c in lists))
    assert alone.write_ipc(None).getvalue() == (
        simulate_depth_snapshots("ETHUSDT", days(day2, 1), cadence_s=5).write_ipc(None).getvalue()
    )
    other = simulate_depth_snapshots(
        "ETHUSDT", days(day2, 1), cadence_s=5, config=SimulatorConfig(seed=1)
    )
    assert not other["bid_sizes"].equals(alone["bid_sizes"])


def test_books_between_seconds_follow_the_path_inside_the_second() -> None:
    start = TRADE_DAY + dt.timedelta(hours=14)
    books = simulate_depth_snapshots(
        "SOLUSDT", TimeRange(start, start + dt.timedelta(minutes=5)), 0.1
    )
    path = simulate_day("SOLUSDT", TRADE_DAY.date())
    bid, ask = touch(books)
    second = ((books["ts"] - TRADE_DAY).dt.total_microseconds() // 1_000_000).to_numpy()
    assert (bid < ask).all()
    tick = path.tick_size
    assert (ask > path.low[second] - tick / 2).all() and (bid < path.high[second] + tick / 2).all()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cadence_s": 0.7}, "cadence_s 0.7 is invalid"),
        ({"cadence_s": 0.001}, "cadence_s 0.001 is invalid"),
        ({"cadence_s": 0}, "cadence_s 0 is invalid"),
        ({"levels": 0}, "levels 0 is invalid"),
        ({"levels": 2.5}, "levels 2.5 is invalid"),
    ],
)
def test_bad_book_requests_are_named(settings: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        simulate_depth_snapshots("BTCUSDT", days(DAY1, 1), **settings)
