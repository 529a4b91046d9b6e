"""Trade prices whose price x quantity per (second, side) add up to the klines' quote volumes.

Some trades are pinned to the second's open, close, high and low; the free ones keep their model
prices shifted by a common offset, and a pair at adjacent ticks absorbs the rounding.
"""

from __future__ import annotations

import math

import numpy as np

from dagster_project.ingest.simulator.day_path import DayPath
from dagster_project.ingest.simulator.intrasecond import Knots
from dagster_project.ingest.simulator.minutes import (
    SIDES,
    Bounds,
    Quotes,
    by_minute,
    fill_in_random_order,
)
from dagster_project.ingest.simulator.units import (
    MINUTES_PER_DAY,
    SECONDS_PER_DAY,
    SECONDS_PER_MINUTE,
)

_EXACT_WINDOW = 60_000  # widest window (quanta) of the subset-sum search among single trades
_SHIFT_STEPS = 36  # bisection steps of the per-(second, side) price shift (span / 2**36)


def pins(
    bucket: np.ndarray,
    second: np.ndarray,
    knots: Knots,
    open_ticks: np.ndarray,
    close_ticks: np.ndarray,
) -> np.ndarray:
    """Prices pinned to the second's open, close, high and low (-1 where a trade is free).

    The first trade of a second trades at its open and the last at its close; the trades nearest
    the path's turning points trade at its high and low (with three trades, the middle one at the
    extreme farther from open and close). A (second, side) keeps at least two free trades, which
    the quote-volume fit needs: its extremes' pins go first, then close's, then open's.
    """
    starts = np.r_[True, second[1:] != second[:-1]]
    begin = np.flatnonzero(starts)
    count = np.diff(np.append(begin, second.size))[np.cumsum(starts) - 1]
    rank = np.arange(second.size) - begin[np.cumsum(starts) - 1]
    o, c = open_ticks[second], close_ticks[second]
    first, then = knots.extreme1[second], knots.extreme2[second]
    pin = np.where((count >= 2) & (rank == 0), o, -1)
    pin = np.where((count >= 2) & (rank == count - 1), c, pin)
    high, low = np.maximum(first, then), np.minimum(first, then)
    above, below = high - np.maximum(o, c), np.minimum(o, c) - low
    middle = np.where(above >= below, high, low)
    pin = np.where((count == 3) & (rank == 1) & (np.maximum(above, below) > 0), middle, pin)
    j1 = np.clip(np.rint(knots.u1[second] * (count - 1)), 1, np.maximum(count - 2, 1))
    j2 = np.clip(np.rint(knots.u2[second] * (count - 1)), 1, np.maximum(count - 2, 1))
    clash = j1 == j2
    bump = clash & (j2 < count - 2)
    j2, j1 = j2 + bump, j1 - (clash & ~bump)
    many = count >= 4
    pin = np.where(many & (rank == j1), first, pin)
    pin = np.where(many & (rank == j2), then, pin)
    # keep at most (trades - 2) pins per bucket: open and close first, then the extremes
    priority = np.where(rank == 0, 0, np.where(rank == count - 1, 1, 2))
    order = np.lexsort((priority, pin < 0, bucket))
    ordered = bucket[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    place = np.empty_like(order)
    place[order] = np.arange(order.size) - np.flatnonzero(starts)[np.cumsum(starts) - 1]
    size = np.bincount(bucket, minlength=SECONDS_PER_DAY * SIDES)[bucket]
    return np.where(place < size - 2, pin, -1)


def smallest_at_pins(
    rng: np.random.Generator,
    bucket: np.ndarray,
    lots: np.ndarray,
    fills: np.ndarray,
    pin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Lots and fills re-dealt within each (second, side) so that the pinned trades are its
    smallest (thin prints at the extremes; the free trades keep the weight to meet the quote
    volume) and the free ones get the rest in a random order."""
    slots = np.argsort(bucket * 2.0 + (pin < 0) + 0.5 * rng.random(bucket.size))
    records = np.argsort(bucket * (int(lots.max()) + 1) + lots, kind="stable")
    dealt_lots, dealt_fills = np.empty_like(lots), np.empty_like(fills)
    dealt_lots[slots], dealt_fills[slots] = lots[records], fills[records]
    return dealt_lots, dealt_fills


def quote_targets(
    rng: np.random.Generator,
    quotes: Quotes,
    path: DayPath,
    buy_lots: np.ndarray,
    bucket: np.ndarray,
    lots: np.ndarray,
    pin: np.ndarray,
    bounds: Bounds,
) -> tuple[np.ndarray, np.ndarray]:
    """Per (second, side), the quote volume in quanta its trades will add up to, and the minutes
    whose quote volumes could not all be placed.

    Each second's own figures where its trades can reach them; the rest of each minute's taker-buy
    and taker-sell quote volume is moved to (second, side)s with two or more free trades, in a
    random order, so that every minute adds up to its kline.
    """
    klines_buys, volume = path.taker_buy_lots, path.volume_lots
    total, buys = quotes.total, quotes.buys
    fallback = np.minimum(total / volume + 0.15 * (bounds.high - bounds.low), bounds.high)
    buy_price = np.where(klines_buys > 0, buys / np.maximum(klines_buys, 1), fallback)
    buy_guide = np.where(buy_lots == klines_buys, buys, np.rint(buy_lots * buy_price))
    guide = np.stack([buy_guide, total - buy_guide], axis=1).ravel().astype(np.int64)

    buckets = SECONDS_PER_DAY * SIDES
    pinned = pin >= 0
    fixed = np.rint(np.bincount(bucket, np.where(pinned, lots * pin, 0), buckets))
    free_lots = np.bincount(bucket, np.where(pinned, 0, lots), buckets).astype(np.int64)
    free_trades = np.bincount(bucket, ~pinned, buckets)
    low, high = bounds.of_buckets()
    lowest, highest = fixed + free_lots * low, fixed + free_lots * high
    one_price = np.clip(np.rint((guide - fixed) / np.maximum(free_lots, 1)), low, high)
    target = np.where(free_trades >= 2, np.clip(guide, lowest, highest), fixed)
    target = np.where(free_trades == 1, fixed + free_lots * one_price, target).astype(np.int64)

    lowest, highest = lowest.astype(np.int64), highest.astype(np.int64)
    flexible = free_trades >= 2
    unmet = np.zeros(MINUTES_PER_DAY, dtype=bool)
    minute_sells = quotes.minute_total - quotes.minute_buys
    for side, minute in enumerate((quotes.minute_buys, minute_sells)):
        part = np.s_[side::SIDES]
        need = minute - by_minute(target[part]).sum(axis=1)
        up = np.where(flexible[part], highest[part] - target[part], 0)
        down = np.where(flexible[part], target[part] - lowest[part], 0)
        room = np.where(need[:, None] > 0, by_minute(up), by_minute(down))
        moved = fill_in_random_order(rng, room, np.abs(need))
        target[part] += (np.sign(need)[:, None] * moved).ravel()
        left = need - np.sign(need) * moved.sum(axis=1)
        for m in np.flatnonzero(left):
            index = (m * SECONDS_PER_MINUTE + np.arange(SECONDS_PER_MINUTE)) * SIDES + side
            bounds_of = (lowest, highest, free_lots, free_trades)
            unmet[m] |= _settle(rng, int(left[m]), index, target, *bounds_of) != 0
    return target, unmet


def _settle(
    rng: np.random.Generator,
    left: int,
    index: np.ndarray,
    target: np.ndarray,
    lowest: np.ndarray,
    highest: np.ndarray,
    free_lots: np.ndarray,
    free_trades: np.ndarray,
) -> int:
    """Place ``left`` quanta among one minute-side's buckets ``index`` (in place); returns what
    could not be placed.

    Buckets of several free trades take any amount within their range; single free trades move
    by whole ticks (so by their lots), greedily in a random order and, where that cannot leave
    the former a part they can take, as found by a search over their steps.
    """
    index = rng.permutation(index)
    flexible = index[free_trades[index] >= 2]
    single = index[free_trades[index] == 1]

    def room() -> tuple[int, int]:
        up = int((highest[flexible] - target[flexible]).sum())
        return int((target[flexible] - lowest[flexible]).sum()), up

    down, up = room()
    for i in single:  # greedy whole-tick moves, overshooting by less than one trade
        if -down <= left <= up:
            break
        size = int(free_lots[i])
        step = math.ceil(left / size) if left > 0 else -math.ceil(-left / size)
        step = min(max(step, (lowest[i] - target[i]) // size), (highest[i] - target[i]) // size)
        target[i] += step * size
        left -= step * size
    if single.size and not -down <= left <= up:  # search the singles' steps for a fit
        lots = free_lots[single]
        steps = _steps_in_range(left - up, left + down, lots, target, lowest, highest, single)
        if steps is not None:
            target[single] += steps * lots
            left -= int((steps * lots).sum())
    for i in flexible:
        take = min(max(left, lowest[i] - target[i]), highest[i] - target[i])
        target[i] += take
        left -= take
    return left


def _steps_in_range(
    low: int,
    high: int,
    lots: np.ndarray,
    target: np.ndarray,
    lowest: np.ndarray,
    highest: np.ndarray,
    index: np.ndarray,
) -> np.ndarray | None:
    """Whole-tick steps of the single trades ``index`` (at most 4 either way, inside their
    ranges) that move their quote volume by an amount in ``[low, high]``, by dynamic programming
    over the partial sums within a window around 0; None when there are none or the window would
    pass ``_EXACT_WINDOW`` quanta."""
    width = max(2 * max(abs(low), abs(high)), 1_000)
    if width > _EXACT_WINDOW:
        return None
    size = 2 * width + 1
    first = ((lowest[index] - target[index]) // lots).tolist()
    last = ((highest[index] - target[index]) // lots).tolist()
    choices = [range(max(a, -4), min(b, 4) + 1) for a, b in zip(first, last, strict=True)]
    reach = np.zeros((lots.size + 1, size), dtype=bool)
    reach[0, width] = True
    for i, (lot, steps) in enumerate(zip(lots.tolist(), choices, strict=True)):
        for step in steps:
            shift = lot * step
            if abs(shift) < size:
                source = reach[i, max(0, -shift) : size - max(0, shift)]
                reach[i + 1, max(0, shift) : size - max(0, -shift)] |= source
    start, stop = max(low + width, 0), min(high + width, size - 1)
    hits = np.flatnonzero(reach[-1, start : stop + 1]) if start <= stop else []
    if not len(hits):
        return None
    out, at = np.zeros(lots.size, dtype=np.int64), start + int(hits[0])
    for i in range(lots.size - 1, -1, -1):
        for step in choices[i]:
            before = at - int(lots[i]) * step
            if 0 <= before < size and reach[i, before]:
                out[i], at = step, before
                break
    return out


def fit_prices(
    rng: np.random.Generator,
    bucket: np.ndarray,
    lots: np.ndarray,
    fills: np.ndarray,
    model: np.ndarray,
    pin: np.ndarray,
    target: np.ndarray,
    bounds: Bounds,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ticks (and re-split lots and fills) whose price x lots add up to ``target`` per bucket.

    Free trades keep their model prices shifted by one common offset per (second, side), clipped
    to the second's range and rounded; the two largest free trades of the bucket then absorb the
    rounding as a pair at adjacent ticks P and P + 1 (their lots and fills re-split between
    them). What a pair cannot absorb moves to other pairs of the same minute and side.
    """
    buckets = SECONDS_PER_DAY * SIDES
    low, high = bounds.of_buckets()
    pinned = pin >= 0
    free = np.flatnonzero(~pinned)
    free_bucket, free_lots = bucket[free], lots[free]
    fixed = np.rint(np.bincount(bucket, np.where(pinned, lots * pin, 0), buckets))
    goal = target - fixed.astype(np.int64)
    shift = _common_shift(free_bucket, free_lots, model[free], goal, low, high)
    free_ticks = np.clip(model[free] + shift[free_bucket], low[free_bucket], high[free_bucket])
    free_ticks = np.rint(free_ticks).astype(np.int64)
    free_count = np.bincount(free_bucket, minlength=buckets)
    alone = (free_count == 1)[free_bucket]  # its target was chosen as a multiple of its lots
    free_ticks = np.where(alone, goal[free_bucket] // free_lots, free_ticks)
    ticks = np.where(pinned, pin, 0)
    ticks[free] = free_ticks
    held = np.rint(np.bincount(free_bucket, free_lots * free_ticks, buckets)).astype(np.int64)
    residual = goal - held

    # the pair: the two largest free trades, preferring those strictly inside the range
    inside = (free_ticks > low[free_bucket]) & (free_ticks < high[free_bucket])
    by_size = np.lexsort((free_lots, inside, free_bucket))
    ordered = free_bucket[by_size]
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    last = last[free_count[ordered[last]] >= 2]
    pair_bucket = ordered[last]
    a, b = free[by_size[last]], free[by_size[last - 1]]
    size = lots[a] + lots[b]
    lowest, highest = size * low[pair_bucket], size * high[pair_bucket]
    wanted = lots[a] * ticks[a] + lots[b] * ticks[b] + residual[pair_bucket]
    value = np.clip(wanted, lowest, highest)
    left = residual.copy()
    left[pair_bucket] = wanted - value
    up, down = np.zeros(buckets, np.int64), np.zeros(buckets, np.int64)
    up[pair_bucket], down[pair_bucket] = highest - value, value - lowest
    moved = np.zeros(buckets, np.int64)
    for side in range(SIDES):
        part = np.s_[side::SIDES]
        need = by_minute(left[part]).sum(axis=1)
        room = np.where(need[:, None] > 0, by_minute(up[part]), by_minute(down[part]))
        moved[part] = (
            np.sign(need)[:, None] * fill_in_random_order(rng, room, np.abs(need))
        ).ravel()
    value += moved[pair_bucket]

    price = value // size
    upper = value - size * price  # lots at price + 1
    split = upper > 0
    both = fills[a] + fills[b]
    lots, fills = lots.copy(), fills.copy()
    fills_b = np.where(split, np.maximum(1, both - (size - upper)), fills[b])
    lots[a], lots[b] = np.where(split, size - upper, lots[a]), np.where(split, upper, lots[b])
    fills[a], fills[b] = both - fills_b, fills_b
    ticks[a], ticks[b] = price, price + split
    return ticks, lots, fills


def _common_shift(
    bucket: np.ndarray,
    lots: np.ndarray,
    model: np.ndarray,
    goal: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """Per bucket, the shift s (bisection) with sum(lots x clip(model + s, low, high)) = goal."""
    span = (high - low + 1).astype(np.float64)
    below, above = -span, span
    weights = lots.astype(np.float64)
    lo, hi = low[bucket], high[bucket]
    for _ in range(_SHIFT_STEPS):
        middle = (below + above) / 2
        got = np.bincount(bucket, weights * np.clip(model + middle[bucket], lo, hi), goal.size)
        short = got < goal
        below, above = np.where(short, middle, below), np.where(short, above, middle)
    return (below + above) / 2
