"""Which lots and trades of each second are taker buys, so that trades can add up to the klines.

The klines' per-second taker split is not always one that trades can make (a single trade has one
taker; a side's quote volume must lie within its seconds' price ranges), so lots move between the
seconds of a minute until each minute's taker-buy volume and quote goals are within reach.
"""

from __future__ import annotations

import numpy as np

from dagster_project.ingest.simulator.day_path import DayPath
from dagster_project.ingest.simulator.minutes import (
    SIDES,
    Bounds,
    Quotes,
    by_minute,
    fill_in_random_order,
)
from dagster_project.ingest.simulator.units import SECONDS_PER_MINUTE

_REACH_MARGIN = 0.1  # a minute's quote goals are kept this share of their range inside it
_SUBSET_WIDTH = 2_000_000  # widest range of sums (lots) of the exact search for side switches


def realisable_buy_lots(rng: np.random.Generator, path: DayPath) -> np.ndarray:
    """Per-second taker-buy lots that trades can realise, adding up to the klines' per minute.

    A second of one trade has one taker: it buys all its lots or none (the side the klines lean
    to), and the difference moves to seconds of two or more trades in the same minute (where
    these cannot hold it, more single trades change side first).
    """
    trades, volume, buys = path.trades, path.volume_lots, path.taker_buy_lots
    lone = (trades == 1) & (buys > 0) & (buys < volume)
    lots = np.where(lone, np.where(2 * buys >= volume, volume, 0), buys)
    shared = trades >= 2
    need = by_minute(buys - lots).sum(axis=1)
    up = by_minute(np.where(shared, volume - lots, 0)).sum(axis=1)
    down = by_minute(np.where(shared, lots, 0)).sum(axis=1)
    for minute in np.flatnonzero((need > up) | (-need > down)):
        part = _seconds_of(minute)
        lots[part] = _flip_single_trades(
            lots[part], buys[part], volume[part], trades[part] == 1, up[minute], down[minute]
        )
    need = by_minute(buys - lots).sum(axis=1)
    room = np.where(
        need[:, None] > 0,
        by_minute(np.where(shared, volume - lots, 0)),
        by_minute(np.where(shared, lots, 0)),
    )
    moved = fill_in_random_order(rng, room, np.abs(need))
    return lots + (np.sign(need)[:, None] * moved).ravel()


def _flip_single_trades(
    lots: np.ndarray,
    buys: np.ndarray,
    volume: np.ndarray,
    single: np.ndarray,
    up: int,
    down: int,
) -> np.ndarray:
    """One minute's taker-buy lots with single-trade seconds switched side until the seconds of
    several trades, which can take ``up`` more lots or give ``down``, hold the rest.

    The most buy-like seconds switch first when buys are missing (the most sell-like when there
    are too many); if that overshoots, an exact search picks the set of switches.
    """
    lots = lots.copy()
    need = int((buys - lots).sum())
    more = need > up
    candidates = np.flatnonzero(single & ((lots == 0) if more else (lots == volume)))
    share = buys[candidates] / volume[candidates]
    for second in candidates[np.argsort(-share if more else share, kind="stable")]:
        if -down <= need <= up:
            return lots
        step = int(volume[second]) if more else -int(volume[second])
        if -down <= need - step if more else need - step <= up:
            lots[second] += step
            need -= step
    if -down <= need <= up:
        return lots
    switchable = np.flatnonzero(single)
    change = np.where(lots[switchable] == 0, volume[switchable], -volume[switchable])
    chosen = _subset_in_range(change, need - up, need + down)
    if chosen is not None:
        lots[switchable[chosen]] += change[chosen]
    return lots


def _subset_in_range(values: np.ndarray, low: int, high: int) -> np.ndarray | None:
    """A mask of ``values`` (integers) whose sum lies in ``[low, high]``, by dynamic programming
    over the reachable sums; None when there is none or the sums span over ``_SUBSET_WIDTH``."""
    offset = -int(values[values < 0].sum())
    width = offset + int(values[values > 0].sum()) + 1
    if width > _SUBSET_WIDTH:
        return None
    reach = np.zeros((values.size + 1, width), dtype=bool)
    reach[0, offset] = True
    for i, value in enumerate(values.tolist()):
        reach[i + 1] = reach[i]
        if value > 0:
            reach[i + 1, value:] |= reach[i, :-value]
        elif value < 0:
            reach[i + 1, :value] |= reach[i, -value:]
    first, last = max(low + offset, 0), min(high + offset, width - 1)
    hits = np.flatnonzero(reach[-1, first : last + 1]) if first <= last else []
    if not len(hits):
        return None
    chosen, at = np.zeros(values.size, dtype=bool), first + int(hits[0])
    for i in range(values.size - 1, -1, -1):
        if not reach[i, at]:
            chosen[i], at = True, at - int(values[i])
    return chosen


def reach_minute_quotes(
    path: DayPath, buy_lots: np.ndarray, bounds: Bounds, quotes: Quotes
) -> np.ndarray:
    """``buy_lots`` with taker lots moved between the seconds of each minute whose taker-buy or
    taker-sell quote volume trades inside the seconds' ranges could not reach.

    The klines' per-second split can put a minute's taker-sell VWAP below what the lows of the
    seconds holding its sells allow (though never below the minute's low); moving sells to the
    seconds that trade lowest (and buys to those that trade highest, or the reverse) fixes it.
    """
    volume, low, high = path.volume_lots, bounds.low, bounds.high
    sell_goal = quotes.minute_total - quotes.minute_buys

    def reach(lots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lowest, highest = by_minute(lots * low).sum(axis=1), by_minute(lots * high).sum(axis=1)
        margin = _REACH_MARGIN * (highest - lowest)
        return lowest + margin, highest - margin

    (buy_low, buy_high), (sell_low, sell_high) = reach(buy_lots), reach(volume - buy_lots)
    unreachable = (sell_goal < sell_low) | (sell_goal > sell_high)
    unreachable |= (quotes.minute_buys < buy_low) | (quotes.minute_buys > buy_high)
    buys = buy_lots.copy()
    for minute in np.flatnonzero(unreachable):
        part = _seconds_of(minute)
        buys[part] = _rebalance_minute(
            buys[part],
            volume[part],
            low[part],
            high[part],
            path.trades[part] >= 2,
            quotes.minute_buys[minute],
            sell_goal[minute],
        )
    return buys


def _rebalance_minute(
    buys: np.ndarray,
    volume: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    shared: np.ndarray,
    buy_goal: int,
    sell_goal: int,
) -> np.ndarray:
    """One minute's taker-buy lots per second, moved until both sides' quote goals lie within
    the seconds' ranges, with a margin of ``_REACH_MARGIN`` of the range for the rounding of
    single trades.

    Each step moves sells from one second to another (and buys the other way): any number of
    lots between seconds of several trades (which may split any way), all the lots of a
    single-trade second (which switches side). It takes the move that leaves the goals least out
    of reach, and stops when they are in reach or no move helps.
    """
    buys = buys.copy()
    m = _REACH_MARGIN
    d_low, d_high = np.subtract.outer(low, low).T, np.subtract.outer(high, high).T
    d_width = d_high - d_low  # [i, j]: column minus row, for sells moving from row to column
    # how each reach check (> 0: out of reach by that much) changes per lot moved
    rates = np.stack(
        [d_low + m * d_width, -d_high + m * d_width, -d_low - m * d_width, d_high - m * d_width]
    )
    for _ in range(4 * SECONDS_PER_MINUTE):
        sells = volume - buys
        sell_margin, buy_margin = m * (sells * (high - low)).sum(), m * (buys * (high - low)).sum()
        checks = np.array(
            [
                (sells * low).sum() + sell_margin - sell_goal,
                sell_goal - (sells * high).sum() + sell_margin,
                (buys * low).sum() + buy_margin - buy_goal,
                buy_goal - (buys * high).sum() + buy_margin,
            ]
        )
        out_of_reach = np.maximum(checks, 0).sum()
        if out_of_reach <= 0:
            break
        movable = _movable_lots(buys, sells, volume, shared)
        worst = int(np.argmax(checks))
        exact = np.ceil(checks[worst] / np.maximum(-rates[worst], 1e-9))
        both_shared = shared[:, None] & shared[None, :]
        best, best_lots = out_of_reach, None
        for lots in (movable, np.where(both_shared, np.minimum(movable, exact), movable)):
            after = np.maximum(checks[:, None, None] + lots * rates, 0).sum(axis=0)
            after = np.where(lots > 0, after, np.inf)
            at = np.unravel_index(int(np.argmin(after)), after.shape)
            if after[at] < best:
                best, best_lots = after[at], (at, int(lots[at]))
        if best_lots is None:
            break
        (source, sink), moved = best_lots
        buys[source] += moved
        buys[sink] -= moved
    return buys


def _movable_lots(
    buys: np.ndarray, sells: np.ndarray, volume: np.ndarray, shared: np.ndarray
) -> np.ndarray:
    """Sell lots that can move from second ``i`` (row) to ``j`` (column) of a minute while each
    keeps a split its trades can make: up to ``min(sells_i, buys_j)`` between seconds of several
    trades, exactly the lots of a single-trade second that switches side, else 0."""
    give_any, take_any = shared & (sells > 0), shared & (buys > 0)
    give_all, take_all = ~shared & (buys == 0), ~shared & (sells == 0)
    moves = np.where(give_any[:, None] & take_any[None, :], np.minimum.outer(sells, buys), 0)
    whole_source = give_all[:, None] & (take_any & (buys > 0))[None, :]
    moves = np.where(whole_source & (buys[None, :] >= volume[:, None]), volume[:, None], moves)
    whole_sink = give_any[:, None] & take_all[None, :]
    moves = np.where(whole_sink & (sells[:, None] >= volume[None, :]), volume[None, :], moves)
    both = give_all[:, None] & take_all[None, :] & (volume[:, None] == volume[None, :])
    moves = np.where(both, volume[:, None], moves)
    np.fill_diagonal(moves, 0)
    return moves


def taker_buy_fills(trades: np.ndarray, buy_lots: np.ndarray, sell_lots: np.ndarray) -> np.ndarray:
    """Trades of each second whose taker bought: in proportion to lots, at least one lot each.

    Where no second of a minute has two trades of one side although one could, the second that
    allows it most gets two: a (second, side) of several trades can meet any quote volume in its
    range exactly, which the minute needs to add up to its kline.
    """
    lowest = np.maximum((buy_lots > 0).astype(np.int64), trades - sell_lots)
    highest = np.minimum(buy_lots, trades - (sell_lots > 0))
    share = np.rint(trades * buy_lots / (buy_lots + sell_lots)).astype(np.int64)
    fills = np.clip(share, lowest, highest)
    for side in range(SIDES):
        mine = fills if side == 0 else trades - fills
        most = highest if side == 0 else trades - lowest
        lacking = ~by_minute(mine >= 2).any(axis=1) & by_minute(most >= 2).any(axis=1)
        for minute in np.flatnonzero(lacking):
            part = _seconds_of(minute)
            second = minute * SECONDS_PER_MINUTE + int(np.argmax(most[part]))
            fills[second] = 2 if side == 0 else trades[second] - 2
    return fills


def _seconds_of(minute: int) -> slice:
    """The seconds of the day's ``minute``."""
    return slice(minute * SECONDS_PER_MINUTE, (minute + 1) * SECONDS_PER_MINUTE)
