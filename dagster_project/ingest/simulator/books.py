"""Order books (``simulate_depth_snapshots``) that straddle the path and react to its volatility.

At each sample time ``ts`` the book straddles the path's mid at ``ts``; its spread in ticks, its
level gaps and its resting sizes follow the volatility known at ``ts`` (the second's GARCH
volatility blended with realised volatility of the trailing seconds), wider and thinner when the
market is wild. Noise comes from a counter hash of (seed, symbol, ts, level), so a book depends
only on ``ts``: any cadence, level count or range gives the same book at the same instant.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TIMESTAMP, TimeRange
from dagster_project.core.schemas import DEPTH_SNAPSHOT_SCHEMA, conform_to, empty
from dagster_project.ingest.simulator.config import SOURCE, SimulatorConfig, symbol_key
from dagster_project.ingest.simulator.day_path import (
    ID_BLOCK,
    DayPath,
    activity_profile,
    day_index,
    day_paths,
    range_us,
)
from dagster_project.ingest.simulator.intrasecond import knots_of
from dagster_project.ingest.simulator.streams import STREAM_BOOK
from dagster_project.ingest.simulator.units import SECONDS_PER_DAY, US_PER_SECOND, Grid

_MIN_CADENCE_US = 10_000  # the book's last_update_id advances once per 10 ms, so no finer cadence
_MAX_LEVELS = 5_000  # Binance's deepest REST snapshot
_BOOK_BLOCK_US = 10_000_000  # a level's size noise persists for this long (plus a per-ts part)
_FIELD_SPREAD, _FIELD_BIDS, _FIELD_ASKS, _FIELD_BLOCK = 1, 2, 3, 16  # hash fields of the book


def simulate_depth_snapshots(
    symbol: str,
    time_range: TimeRange,
    cadence_s: float = 1.0,
    levels: int = 50,
    config: SimulatorConfig | None = None,
) -> pl.DataFrame:
    """Simulated top-``levels`` books of ``symbol`` every ``cadence_s`` seconds in ``[start, end)``.

    Sample times are the multiples of ``cadence_s`` (which must divide a day, at least 0.01 s) from
    each UTC midnight. The book at ``ts`` is built from the path up to ``ts`` only and does not
    depend on the cadence, the range or (beyond truncation) the number of levels.
    """
    config = config or SimulatorConfig()
    cadence_us = _cadence_us(cadence_s)
    integral = isinstance(levels, int | np.integer) and not isinstance(levels, bool)
    if not integral or not 1 <= levels <= _MAX_LEVELS:
        raise InvalidRequestError(
            f"levels {levels!r} is invalid; expected an int from 1 to {_MAX_LEVELS}"
        )
    start_us, end_us = range_us(time_range)
    frames = []
    for path in day_paths(symbol, time_range, config):
        day_us = SECONDS_PER_DAY * US_PER_SECOND
        first = max(start_us - path.start_us, 0)
        stop = min(end_us - path.start_us, day_us)
        offsets = np.arange(-(-first // cadence_us) * cadence_us, stop, cadence_us, dtype=np.int64)
        if offsets.size:
            frames.append(_day_depth(path, offsets, levels, config))
    return pl.concat(frames) if frames else empty(DEPTH_SNAPSHOT_SCHEMA)


def _day_depth(
    path: DayPath, offsets: np.ndarray, levels: int, config: SimulatorConfig
) -> pl.DataFrame:
    """Book snapshots of ``path``'s day at ``offsets`` (microseconds after its midnight)."""
    profile = config.profile(path.symbol)
    mid, sigma, spread = _book_state(path, config, offsets)
    bid, ask = touch(mid, spread)
    second = offsets // US_PER_SECOND
    ts = path.start_us + offsets
    usual = profile.annual_volatility / math.sqrt(365.0 * SECONDS_PER_DAY)
    mean_trade_lots = profile.daily_volume / profile.daily_trades / path.lot_size
    touch_lots = config.touch_depth_trades * mean_trade_lots * np.sqrt(activity_profile()[second])
    key = _book_key(config, path.symbol)
    ladder = functools.partial(
        _ladder, key, ts, levels, sigma * mid, sigma / usual, touch_lots, config
    )
    bid_away, bid_lots = ladder(_FIELD_BIDS)
    ask_away, ask_lots = ladder(_FIELD_ASKS)
    tick, lot = Grid(path.tick_size), Grid(path.lot_size)
    trades_before = np.r_[0, np.cumsum(path.trades)][second]
    update_id = day_index(path, config) * ID_BLOCK + 1 + offsets // _MIN_CADENCE_US

    def column(values: np.ndarray) -> pl.Series:
        return pl.Series(values).cast(pl.List(pl.Float64))

    frame = pl.DataFrame(
        {
            "ts": pl.Series(ts).cast(TIMESTAMP),
            "last_update_id": update_id + 2 * trades_before,
            "bid_prices": column(tick.to_value(bid[:, None] - bid_away)),
            "bid_sizes": column(lot.to_value(bid_lots)),
            "ask_prices": column(tick.to_value(ask[:, None] + ask_away)),
            "ask_sizes": column(lot.to_value(ask_lots)),
            "source": pl.repeat(SOURCE, offsets.size, dtype=pl.String, eager=True),
        }
    )
    return conform_to(frame, DEPTH_SNAPSHOT_SCHEMA, "depth_snapshots")


def _book_state(
    path: DayPath, config: SimulatorConfig, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each offset (microseconds after midnight): the path's mid in real ticks, the volatility
    the book sees (per second, relative) and the spread in whole ticks."""
    second, inside = np.divmod(offsets, US_PER_SECOND)
    mid = Grid(path.tick_size).scale(path.mid[second])
    if inside.any():
        knots = knots_of(path, config)
        mid = np.where(inside > 0, knots.at(second, inside / US_PER_SECOND), mid)
    sigma = _book_volatility(path, config.book_vol_window_s)[second]
    noise, jitter = _hash_uniforms(
        _book_key(config, path.symbol), _FIELD_SPREAD, path.start_us + offsets
    )
    width = config.spread_vol_ticks * sigma * mid * np.exp(0.25 * _logistic(noise))
    return mid, sigma, (1 + np.floor(width + jitter)).astype(np.int64)


def _book_volatility(path: DayPath, window: int) -> np.ndarray:
    """At the start of each second: sqrt of the mean of the second's (ex-ante) GARCH variance and
    the realised variance of the ``window`` seconds before it (no look-ahead; before midnight the
    day's first ex-ante variance stands in, so a day needs no other day)."""
    ex_ante = path.volatility**2
    squared = np.diff(np.log(path.mid)) ** 2
    cumulative = np.r_[0.0, np.cumsum(squared)]
    second = np.arange(SECONDS_PER_DAY)
    first = np.maximum(second - window, 0)
    missing = window - (second - first)
    realised = (cumulative[second] - cumulative[first] + missing * ex_ante[0]) / window
    return np.sqrt(0.5 * ex_ante + 0.5 * realised)


def touch(mid: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best bid and ask in ticks: ``spread`` apart and centred on ``mid`` as far as the grid allows,
    with bid < mid < ask strictly (the spread grows by a tick where the mid is on the grid)."""
    bid = np.minimum(np.rint(mid - spread / 2), np.ceil(mid) - 1)
    ask = np.maximum(bid + spread, np.floor(mid) + 1)
    return bid.astype(np.int64), ask.astype(np.int64)


def book_spread(path: DayPath, config: SimulatorConfig, offsets: np.ndarray) -> np.ndarray:
    return _book_state(path, config, offsets)[2]


def _ladder(
    key: int,
    ts: np.ndarray,
    levels: int,
    sigma_ticks: np.ndarray,
    vol_ratio: np.ndarray,
    touch_lots: np.ndarray,
    config: SimulatorConfig,
    field: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One side's levels: ticks away from the touch (0, then strictly growing) and sizes in lots.

    Gaps are 1 tick plus an exponential part that scales with volatility in ticks; sizes grow away
    from the touch, shrink near it as volatility rises, and carry a noise that persists for
    ``_BOOK_BLOCK_US`` plus a per-snapshot one.
    """
    level = np.arange(levels)
    gap_u, size_u = _hash_uniforms(key, field, ts, level)
    gaps = 1 + np.floor(config.level_gap_vol_ticks * sigma_ticks[:, None] * -np.log(gap_u))
    gaps[:, 0] = 0
    blocks, block_of = np.unique(ts // _BOOK_BLOCK_US, return_inverse=True)
    block_u, _ = _hash_uniforms(key, field + _FIELD_BLOCK, blocks * _BOOK_BLOCK_US, level)
    noise = np.exp(0.45 * _logistic(block_u)[block_of] + 0.35 * _logistic(size_u) - 0.16)
    fade = config.depth_vol_elasticity * np.exp(-level / 10.0)
    size = touch_lots[:, None] * (1 + 0.08 * level) * vol_ratio[:, None] ** -fade * noise
    return np.cumsum(gaps, axis=1).astype(np.int64), np.maximum(np.rint(size), 1).astype(np.int64)


def _book_key(config: SimulatorConfig, symbol: str) -> int:
    entropy = [config.seed, symbol_key(symbol), STREAM_BOOK]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def _hash_uniforms(
    key: int, field: int, ts: np.ndarray, level: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent uniforms in (0, 1) per ``ts`` (x ``level``): a counter-based hash
    (splitmix64) of (key, field, ts, level), so any instant's draws need no other instant's."""
    salt = _mix(np.array([key ^ field], dtype=np.uint64))
    x = _mix(ts.astype(np.uint64) ^ salt)
    if level is not None:
        x = _mix(x[:, None] ^ (level.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))[None, :])
    high = (x >> np.uint64(32)).astype(np.float64)
    low = (x & np.uint64(0xFFFFFFFF)).astype(np.float64)
    return (high + 0.5) / 2**32, (low + 0.5) / 2**32


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's step and finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _logistic(u: np.ndarray) -> np.ndarray:
    """Unit-variance logistic draws from uniforms (a cheap, slightly heavy-tailed normal)."""
    return np.log(u / (1 - u)) * (math.sqrt(3) / math.pi)


def _cadence_us(cadence_s: float) -> int:
    """``cadence_s`` in microseconds; it must be >= 0.01 s and divide a day."""
    valid = isinstance(cadence_s, int | float) and not isinstance(cadence_s, bool)
    cadence_us = round(cadence_s * US_PER_SECOND) if valid and math.isfinite(cadence_s) else 0
    if (
        cadence_us < _MIN_CADENCE_US
        or abs(cadence_us - cadence_s * US_PER_SECOND) > 1e-3
        or (SECONDS_PER_DAY * US_PER_SECOND) % cadence_us
    ):
        raise InvalidRequestError(
            f"cadence_s {cadence_s!r} is invalid; expected a number of seconds >= 0.01, in whole "
            "microseconds, that divides a day (such as 0.1, 0.5, 1, 5 or 60)"
        )
    return cadence_us
