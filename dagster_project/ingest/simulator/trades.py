"""Aggregate trades: each second's trades and lots split into a tape that adds up to the klines.

Each second's trades and lots are split into fills of at least one lot, grouped into aggregate
trades (a fill continues the previous taker order with probability ``agg_fill_share``): counts and
base volume add up exactly to every second's kline, and every price lies in its second's
``[low, high]`` on the tick grid. Trades sit at sorted random microseconds; taker buys take the
moments where the intra-second path (:mod:`.intrasecond`: open, then high and low in a
direction-tilted order, then close, with turning times that put its mean at the second's VWAP) is
high, sells where it is low; each is priced at the touch of a book riding that path (buys at the
ask, sells at the bid), the trades nearest the second's start, end and turning points exactly at
its open, close, high and low. One common shift per (second, side), clipped to ``[low, high]``,
and two "balancing" trades at adjacent ticks make price x quantity add up to the klines' quote and
taker-buy quote volumes to the quantum ``tick x lot`` (:mod:`.quote_fit`).

The klines' per-second flows are not always trade-consistent (a single trade with both taker
sides; a taker-sell VWAP below what the second's low allows), so what a second cannot take moves
to other seconds of its minute (:mod:`.taker_sides`): taker-buy volume and both quote volumes
match every 1m (hence coarser) kline, bar a few minutes whose own figures no trades inside their
seconds can produce (about 1 in 7,000 minutes for BTCUSDT/ETHUSDT, 1 in 500 for quiet symbols; off
by < 2e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from dagster_project.core.klines import TIMESTAMP, TimeRange
from dagster_project.core.schemas import AGG_TRADE_SCHEMA, conform_to, empty
from dagster_project.ingest.simulator.books import book_spread, touch
from dagster_project.ingest.simulator.config import SOURCE, SimulatorConfig
from dagster_project.ingest.simulator.day_path import (
    ID_BLOCK,
    DayPath,
    day_index,
    day_paths,
    range_us,
)
from dagster_project.ingest.simulator.intrasecond import knots_of
from dagster_project.ingest.simulator.minutes import SIDES, Bounds, Quotes
from dagster_project.ingest.simulator.quote_fit import (
    fit_prices,
    pins,
    quote_targets,
    smallest_at_pins,
)
from dagster_project.ingest.simulator.streams import STREAM_TRADES, stream_rng
from dagster_project.ingest.simulator.taker_sides import (
    reach_minute_quotes,
    realisable_buy_lots,
    taker_buy_fills,
)
from dagster_project.ingest.simulator.units import (
    SECONDS_PER_DAY,
    SECONDS_PER_MINUTE,
    US_PER_SECOND,
    Grid,
)


def simulate_agg_trades(
    symbol: str, time_range: TimeRange, config: SimulatorConfig | None = None
) -> pl.DataFrame:
    """Simulated aggregate trades of ``symbol`` with ``ts`` in ``[start, end)``, in the contract.

    The trades of a second add up exactly to its 1s kline in count (``last_trade_id -
    first_trade_id + 1`` summed) and base volume, and lie in its ``[low, high]`` on the tick grid;
    taker-buy volume and the quote volumes match the second where trades can, and every 1m (hence
    coarser) kline (quote volumes to ``tick x lot``) except the rare minutes whose own figures no
    trades inside their seconds can produce. Ids run in steps of 1 within a UTC day and start at
    ``days since config.epoch x 10**10``; a day's rows depend only on (seed, symbol, day).
    """
    config = config or SimulatorConfig()
    start_us, end_us = range_us(time_range)
    frames = [
        _day_agg_trades(path, config, start_us, end_us)
        for path in day_paths(symbol, time_range, config)
    ]
    return pl.concat(frames) if frames else empty(AGG_TRADE_SCHEMA)


def _day_agg_trades(
    path: DayPath, config: SimulatorConfig, start_us: int, end_us: int
) -> pl.DataFrame:
    """The aggregate trades of ``path``'s day with ``ts`` in ``[start_us, end_us)``."""
    tape = _trade_tape(path, config)
    ts = path.start_us + tape.second * US_PER_SECOND + tape.offset_us
    first_id = day_index(path, config) * ID_BLOCK
    last_trade = first_id + np.cumsum(tape.fills) - 1
    keep = (ts >= start_us) & (ts < end_us)
    frame = pl.DataFrame(
        {
            "agg_trade_id": (first_id + np.arange(ts.size, dtype=np.int64))[keep],
            "ts": pl.Series(ts[keep]).cast(TIMESTAMP),
            "price": Grid(path.tick_size).to_value(tape.ticks[keep]),
            "qty": Grid(path.lot_size).to_value(tape.lots[keep]),
            "first_trade_id": (last_trade - tape.fills + 1)[keep],
            "last_trade_id": last_trade[keep],
            "is_buyer_maker": ~tape.is_buy[keep],
            "source": pl.repeat(SOURCE, int(keep.sum()), dtype=pl.String, eager=True),
        }
    )
    return conform_to(frame, AGG_TRADE_SCHEMA, "agg_trades")


@dataclass(frozen=True)
class _Tape:
    """One day of aggregate trades in time order (one entry per aggregate trade)."""

    second: np.ndarray  # second of the day
    offset_us: np.ndarray  # microseconds into that second, strictly increasing within it
    is_buy: np.ndarray  # the taker bought (taker buys pay the ask)
    ticks: np.ndarray  # price in ticks
    lots: np.ndarray  # quantity in lots (>= fills: every fill is at least one lot)
    fills: np.ndarray  # individual trades aggregated (last_trade_id - first_trade_id + 1)


def _trade_tape(path: DayPath, config: SimulatorConfig) -> _Tape:
    """Split every second of ``path`` into aggregate trades that add up to its klines."""
    rng = stream_rng(config, path.symbol, STREAM_TRADES, day_index(path, config))
    tick = Grid(path.tick_size)
    bounds = Bounds(tick.to_steps(path.low), tick.to_steps(path.high))
    quotes = Quotes.of(path)
    buy_lots = reach_minute_quotes(path, realisable_buy_lots(rng, path), bounds, quotes)
    sell_lots = path.volume_lots - buy_lots
    buy_fills = taker_buy_fills(path.trades, buy_lots, sell_lots)
    bucket_fills = np.stack([buy_fills, path.trades - buy_fills], axis=1).ravel()
    bucket_lots = np.stack([buy_lots, sell_lots], axis=1).ravel()
    bucket, fills, lots = _aggregate_fills(rng, bucket_fills, bucket_lots, config)
    order, offset_us = _schedule(rng, bucket // SIDES)
    second = bucket[order] // SIDES
    knots = knots_of(path, config)
    level = knots.at(second, offset_us / US_PER_SECOND)
    scheduled_buy = bucket[order] % SIDES == 0
    dealt = _deal_by_level(
        rng, order, scheduled_buy, second, level, bounds, config.taker_side_noise
    )
    bucket, fills, lots = bucket[dealt], fills[dealt], lots[dealt]
    is_buy = bucket % SIDES == 0

    spread = book_spread(path, config, np.arange(SECONDS_PER_DAY) * US_PER_SECOND)
    bid, ask = touch(level, spread[second])
    model = bounds.clip(np.where(is_buy, ask, bid), second)
    pin = pins(bucket, second, knots, tick.to_steps(path.open), tick.to_steps(path.close))
    lots, fills = smallest_at_pins(rng, bucket, lots, fills, pin)
    target, unmet = quote_targets(rng, quotes, path, buy_lots, bucket, lots, pin, bounds)
    if unmet.any():  # pins left a minute's quote volume out of reach: free its trades
        pin = np.where(unmet[second // SECONDS_PER_MINUTE], -1, pin)
        target, _ = quote_targets(rng, quotes, path, buy_lots, bucket, lots, pin, bounds)
    ticks, lots, fills = fit_prices(rng, bucket, lots, fills, model, pin, target, bounds)
    return _Tape(second, offset_us, is_buy, ticks, lots, fills)


def _aggregate_fills(
    rng: np.random.Generator,
    bucket_fills: np.ndarray,
    bucket_lots: np.ndarray,
    config: SimulatorConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group each bucket's fills into aggregate trades and share its lots among them.

    A fill continues the previous aggregate trade with probability ``agg_fill_share``, except that
    a bucket of two or more fills always has at least two aggregate trades. Returns, per aggregate
    trade in bucket order, its bucket, its fills and its lots (>= its fills).
    """
    total = int(bucket_fills.sum())
    bucket = np.repeat(np.arange(bucket_fills.size), bucket_fills)
    first = np.cumsum(bucket_fills) - bucket_fills
    position = np.arange(total) - first[bucket]
    starts = (position == 0) | (rng.random(total) >= config.agg_fill_share)
    # buckets of >= 2 fills that drew a single aggregate trade: split at a random fill
    lonely = (bucket_fills >= 2) & (np.bincount(bucket, starts, bucket_fills.size) == 1)
    split = (rng.random(bucket_fills.size) * (bucket_fills - 1)).astype(np.int64) + 1
    starts[(first + split)[lonely]] = True
    begin = np.flatnonzero(starts)
    fills = np.diff(np.append(begin, total))
    agg_bucket = bucket[begin]
    weights = rng.gamma(config.trade_size_shape * fills)
    extra = _split_by_weight(bucket_lots - bucket_fills, agg_bucket, weights)
    return agg_bucket, fills, fills + extra


def _split_by_weight(totals: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Integers >= 0 in proportion to ``weights`` that add up to ``totals[g]`` within each group
    ``g`` (``group`` is sorted; every group of ``totals`` with a non-zero total has members)."""
    new = np.r_[True, group[1:] != group[:-1]]
    begin = np.flatnonzero(new)
    segment = np.cumsum(new) - 1
    # normalised per group first, so the running sum never dwarfs a group's weights
    weights = np.maximum(weights, np.finfo(np.float64).tiny)
    cumulative = np.cumsum(weights / np.add.reduceat(weights, begin)[segment])
    within = cumulative - np.r_[0.0, cumulative][begin][segment]
    last = np.r_[begin[1:], group.size] - 1
    reached = np.rint(within / within[last][segment] * totals[group]).astype(np.int64)
    before = np.r_[0, reached[:-1]]
    before[begin] = 0
    return reached - before


def _schedule(rng: np.random.Generator, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random time order of the aggregate trades inside their seconds (``second`` is sorted).

    Returns the permutation into time order and each trade's microsecond in its second, strictly
    increasing within the second.
    """
    per_second = np.bincount(second, minlength=SECONDS_PER_DAY)
    count = per_second[second]
    raw = (rng.random(second.size) * (US_PER_SECOND - count + 1)).astype(np.int64)
    order = np.argsort(second * US_PER_SECOND + raw, kind="stable")
    rank = np.arange(second.size) - (np.cumsum(per_second) - per_second)[second]
    return order, raw[order] + rank


def _deal_by_level(
    rng: np.random.Generator,
    order: np.ndarray,
    is_buy: np.ndarray,
    second: np.ndarray,
    level: np.ndarray,
    bounds: Bounds,
    noise: float,
) -> np.ndarray:
    """Which aggregate trade takes each time slot: within a second, the taker buys take the slots
    where the path is highest and the sells the lowest, up to a normal noise of ``noise`` x the
    second's range (takers lift the price as they buy and press it as they sell).

    ``order`` maps time slots to trades as scheduled and ``is_buy``/``second`` describe them in
    that order; returns the trade for each slot.
    """
    width = (bounds.high - bounds.low + 1)[second]
    score = (level - bounds.low[second]) / width + noise * rng.standard_normal(second.size)
    by_score = np.argsort(second * 16.0 + np.clip(score, -7.0, 7.0) + 7.0)  # second, then score
    dealt = np.empty_like(order)
    dealt[by_score] = order[np.argsort(second * 2 + is_buy, kind="stable")]
    return dealt
