"""The simulator's aggregate trades: in the contract, adding up to its klines, deterministic."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from dagster_project.core.checks import agg_trade_checks
from dagster_project.core.klines import UTC, TimeRange
from dagster_project.core.schemas import AGG_TRADE_SCHEMA
from dagster_project.ingest.simulator import (
    DayPath,
    SimulatorConfig,
    aggregate_day,
    simulate_agg_trades,
    simulate_day,
    simulate_klines,
)
from dagster_project.ingest.simulator.units import SECONDS_PER_DAY
from tests.ingest.simulator.dates import DAY1, TRADE_DAY, days


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
