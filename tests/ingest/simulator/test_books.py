"""The simulator's order books: in the contract, straddling the path, reacting to volatility."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from dagster_project.core.checks import depth_snapshot_checks
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TimeRange
from dagster_project.core.schemas import DEPTH_SNAPSHOT_SCHEMA
from dagster_project.ingest.simulator import (
    KNOWN_PROFILES,
    SimulatorConfig,
    simulate_day,
    simulate_depth_snapshots,
)
from dagster_project.ingest.simulator.units import SECONDS_PER_DAY
from tests.ingest.simulator.dates import DAY1, TRADE_DAY, days


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
