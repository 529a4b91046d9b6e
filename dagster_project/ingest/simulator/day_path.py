"""The intraday layer: one symbol's UTC day second by second (:class:`DayPath`).

For day D a per-second log mid-price path from D's anchor to D+1's anchor (:mod:`.walk`):
minute-level GARCH(1,1) with Student-t shocks, scaled by a UTC intraday activity profile (00:00
and 08:00 opens, the 13:30-16:00 US session, quiet 03:00-06:00, busier first minutes of each
hour); inside each minute the seconds form a Brownian bridge with heavy-tailed steps; the
difference between where the path would end and D+1's anchor is spread over the seconds in
proportion to their variance (the conditional mean of a bridge). Trades, volume and taker flow
per second follow activity, volatility and the size of the second's move.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TimeRange, to_utc
from dagster_project.ingest.simulator.config import SimulatorConfig, SymbolProfile
from dagster_project.ingest.simulator.streams import (
    STREAM_INTRADAY,
    mean_abs_t,
    stream_rng,
    student_t,
)
from dagster_project.ingest.simulator.units import (
    MINUTES_PER_DAY,
    SECONDS_PER_DAY,
    SECONDS_PER_MINUTE,
    US_PER_SECOND,
    Grid,
)
from dagster_project.ingest.simulator.walk import DailyWalk, daily_walk

_UNIX_EPOCH_DAY = dt.date(1970, 1, 1)
ID_BLOCK = 10**10  # ids of day k (days since the epoch) are k * ID_BLOCK + 0, 1, 2, ...


@dataclass(frozen=True, eq=False)
class DayPath:
    """One simulated UTC day of one symbol, second by second (read-only arrays).

    Second ``i`` covers ``[day 00:00:00 + i s, + 1 s)``. Prices of trades in second ``i`` lie in
    ``[low[i], high[i]]``, the first at ``open[i]`` and the last at ``close[i]``; its ``trades``
    trades sum to ``volume_lots[i]`` lots, ``taker_buy_lots[i]`` of them bought by takers.
    Trade and order-book generators sample inside these bounds so that they agree with the klines.
    """

    symbol: str
    day: dt.date
    tick_size: float
    lot_size: float
    mid: np.ndarray  # (86_401,) mid price at each second boundary; mid[-1] is the next day's mid[0]
    volatility: np.ndarray  # (86_400,) std of each second's log mid change (constant per minute)
    intensity: np.ndarray  # (86_400,) expected trading activity relative to an average second
    open: np.ndarray  # (86_400,) first trade price of each second, on the tick grid
    high: np.ndarray  # (86_400,) highest trade price of each second
    low: np.ndarray  # (86_400,) lowest trade price of each second
    close: np.ndarray  # (86_400,) last trade price of each second (= next second's open)
    trades: np.ndarray  # (86_400,) int64 number of trades, at least 1
    volume_lots: np.ndarray  # (86_400,) int64 base volume in lots (>= trades)
    taker_buy_lots: np.ndarray  # (86_400,) int64 lots bought by takers (<= volume_lots)
    quote_volume: np.ndarray  # (86_400,) quote volume (volume x a price inside [low, high])
    taker_buy_quote_volume: np.ndarray  # (86_400,) quote volume of the taker buys

    @property
    def start_us(self) -> int:
        """Epoch microseconds of the day's 00:00:00 UTC."""
        return (self.day - _UNIX_EPOCH_DAY).days * SECONDS_PER_DAY * US_PER_SECOND

    def volume(self) -> np.ndarray:
        """Per-second base volume."""
        return Grid(self.lot_size).to_value(self.volume_lots)


def simulate_day(symbol: str, day: dt.date | str, config: SimulatorConfig | None = None) -> DayPath:
    """The per-second path of ``symbol`` on UTC ``day`` (a date or ``YYYY-MM-DD``)."""
    config = config or SimulatorConfig()
    profile = config.profile(symbol)
    day = to_utc(day).date() if isinstance(day, str | dt.datetime) else day
    check_day(day, config)
    walk = daily_walk(symbol, profile, (day - config.epoch).days + 1, config)
    return _simulate_day(symbol, day, profile, walk, config)


def day_paths(symbol: str, time_range: TimeRange, config: SimulatorConfig) -> Iterator[DayPath]:
    """The :class:`DayPath` of every UTC day that ``time_range`` touches, in order."""
    profile = config.profile(symbol)
    start, end = to_utc(time_range.start), to_utc(time_range.end)
    if start >= end:
        raise InvalidRequestError(
            f"start {start.isoformat()} is not before end {end.isoformat()}; expected start < end"
        )
    first_day = start.date()
    last_day = (end - dt.timedelta(microseconds=1)).date()
    check_day(first_day, config)
    walk = daily_walk(symbol, profile, (last_day - config.epoch).days + 1, config)
    for i in range((last_day - first_day).days + 1):
        yield _simulate_day(symbol, first_day + dt.timedelta(days=i), profile, walk, config)


def check_day(day: dt.date, config: SimulatorConfig) -> None:
    """Raise :class:`InvalidRequestError` for a day before the walk's start."""
    if day < config.epoch:
        raise InvalidRequestError(
            f"day {day.isoformat()} is before the simulator's epoch {config.epoch.isoformat()}; "
            "expected days on or after SimulatorConfig.epoch"
        )


def day_index(path: DayPath, config: SimulatorConfig) -> int:
    """``path``'s day counted from ``config.epoch``: the index of its streams and ids."""
    return (path.day - config.epoch).days


def range_us(time_range: TimeRange) -> tuple[int, int]:
    """``time_range`` as epoch microseconds ``(start, end)``."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    one = dt.timedelta(microseconds=1)
    return (to_utc(time_range.start) - epoch) // one, (to_utc(time_range.end) - epoch) // one


def _simulate_day(
    symbol: str, day: dt.date, profile: SymbolProfile, walk: DailyWalk, config: SimulatorConfig
) -> DayPath:
    k = (day - config.epoch).days
    rng = stream_rng(config, symbol, STREAM_INTRADAY, k)
    shocks = _mid_path(rng, walk, k, config)
    mid = np.exp(shocks.log_mid)
    prices = _trade_prices(rng, mid, shocks.volatility, profile.tick_size, config.wick_scale)
    intensity = _intensity(rng, shocks, config)
    flow = _flow(rng, profile, walk, k, intensity, shocks, prices, config)
    trades, volume_lots, taker_buy_lots, quote_volume, taker_buy_quote_volume = flow
    return DayPath(
        symbol=symbol,
        day=day,
        tick_size=profile.tick_size,
        lot_size=profile.lot_size,
        mid=_frozen(mid),
        volatility=_frozen(shocks.volatility),
        intensity=_frozen(intensity),
        open=_frozen(prices[0]),
        high=_frozen(prices[1]),
        low=_frozen(prices[2]),
        close=_frozen(prices[3]),
        trades=_frozen(trades),
        volume_lots=_frozen(volume_lots),
        taker_buy_lots=_frozen(taker_buy_lots),
        quote_volume=_frozen(quote_volume),
        taker_buy_quote_volume=_frozen(taker_buy_quote_volume),
    )


@dataclass(frozen=True)
class _Shocks:
    """The intraday log mid path and the draws behind it."""

    log_mid: np.ndarray  # (86_401,) log mid at each second boundary
    volatility: np.ndarray  # (86_400,) std of each second's log change
    minute_z: np.ndarray  # (1_440,) each minute's unit Student-t shock
    garch: np.ndarray  # (1_440,) each minute's GARCH std relative to its level
    second_u: np.ndarray  # (86_400,) each second's unit Student-t shock

    def second_moves(self) -> np.ndarray:
        """Each second's log change in units of its own std."""
        return np.diff(self.log_mid) / self.volatility


def _mid_path(
    rng: np.random.Generator, walk: DailyWalk, k: int, config: SimulatorConfig
) -> _Shocks:
    """Day ``k``'s per-second log mid, from its anchor to the next day's anchor."""
    nu = config.student_t_dof
    # Minutes: GARCH(1,1) scale x intraday activity x the day's sigma (variances add up to it).
    minute_activity = activity_profile().reshape(MINUTES_PER_DAY, SECONDS_PER_MINUTE).mean(1)
    z = student_t(rng, nu, MINUTES_PER_DAY)
    garch = _garch_scale(z, config.garch_alpha, config.garch_beta)
    minute_sigma = walk.sigma[k] * np.sqrt(minute_activity / MINUTES_PER_DAY) * garch
    # Seconds: a heavy-tailed Brownian bridge inside each minute (demeaned steps sum to 0)...
    u = student_t(rng, nu, SECONDS_PER_DAY).reshape(MINUTES_PER_DAY, SECONDS_PER_MINUTE)
    second_sigma = minute_sigma / math.sqrt(SECONDS_PER_MINUTE)
    bridge = (u - u.mean(axis=1, keepdims=True)) * second_sigma[:, None]
    steps = ((minute_sigma * z)[:, None] / SECONDS_PER_MINUTE + bridge).ravel()
    # ...and the day bridged to the next anchor: the gap is spread in proportion to variance.
    volatility = np.repeat(second_sigma, SECONDS_PER_MINUTE)
    start, end = walk.log_price[k], walk.log_price[k + 1]
    variance = volatility**2
    steps += (end - start - steps.sum()) * variance / variance.sum()
    log_mid = np.concatenate([[start], start + np.cumsum(steps)])
    log_mid[-1] = end  # exactly the next day's first value, whatever the rounding
    return _Shocks(log_mid, volatility, z, garch, u.ravel())


def _intensity(rng: np.random.Generator, shocks: _Shocks, config: SimulatorConfig) -> np.ndarray:
    """Per-second activity: the intraday profile x GARCH volatility x the size of the minute's and
    the second's own shocks x minute-to-minute noise (the day's level is set in ``_flow``)."""
    mean_abs = mean_abs_t(config.student_t_dof)
    noise = np.exp(0.4 * rng.standard_normal(MINUTES_PER_DAY) - 0.08)
    minute_factor = (
        shocks.garch**config.volume_vol_elasticity
        * (0.7 + 0.3 * np.abs(shocks.minute_z) / mean_abs)
        * noise
    )
    minute_factor /= minute_factor.mean()
    second_factor = 0.6 + 0.4 * np.abs(shocks.second_u) / mean_abs
    return activity_profile() * np.repeat(minute_factor, SECONDS_PER_MINUTE) * second_factor


def _trade_prices(
    rng: np.random.Generator, mid: np.ndarray, volatility: np.ndarray, tick: float, wick: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-second open, high, low, close on the tick grid (open = previous close)."""
    grid = Grid(tick)
    start, stop = mid[:-1], mid[1:]
    excursion = wick * volatility * np.abs(rng.standard_normal((2, SECONDS_PER_DAY)))
    high = np.maximum(start, stop) * np.exp(excursion[0])
    low = np.minimum(start, stop) * np.exp(-excursion[1])
    ticks = grid.to_steps(mid)
    return (
        grid.to_value(ticks[:-1]),
        grid.to_value(grid.to_steps(high)),
        grid.to_value(grid.to_steps(low)),
        grid.to_value(ticks[1:]),
    )


def _flow(
    rng: np.random.Generator,
    profile: SymbolProfile,
    walk: DailyWalk,
    k: int,
    intensity: np.ndarray,
    shocks: _Shocks,
    prices: tuple[np.ndarray, ...],
    config: SimulatorConfig,
) -> tuple[np.ndarray, ...]:
    """Per-second trades, volume lots, taker-buy lots, quote volume and taker-buy quote volume."""
    noise = config.daily_volume_noise
    day_factor = (walk.sigma[k] / walk.sigma_level) ** config.volume_vol_elasticity * math.exp(
        noise * rng.standard_normal() - noise**2 / 2
    )
    expected_trades = profile.daily_trades / SECONDS_PER_DAY * day_factor * intensity
    trades = np.maximum(rng.poisson(expected_trades), 1)
    shape = config.trade_size_shape
    mean_size = profile.daily_volume / profile.daily_trades
    volume = rng.gamma(trades * shape, mean_size / shape)
    lots = Grid(profile.lot_size)
    volume_lots = np.maximum(lots.to_steps(volume), trades)
    # Takers buy more in seconds and minutes that go up; the share stays in [0, 1].
    minute_move = np.repeat(shocks.minute_z, SECONDS_PER_MINUTE)
    buy_share = np.clip(
        0.5
        + 0.15 * np.tanh(shocks.second_moves())
        + 0.2 * np.tanh(minute_move)
        + 0.1 * np.repeat(rng.standard_normal(MINUTES_PER_DAY), SECONDS_PER_MINUTE)
        + 0.1 * rng.standard_normal(SECONDS_PER_DAY),
        0.0,
        1.0,
    )
    taker_buy_lots = np.minimum(np.rint(buy_share * volume_lots).astype(np.int64), volume_lots)
    # Average prices inside each second's [low, high]; takers buy in its upper part.
    _, high, low, _ = prices
    where = rng.uniform(0.2, 0.8, SECONDS_PER_DAY)
    vwap = low + where * (high - low)
    buy_vwap = low + np.minimum(where + 0.15, 1.0) * (high - low)
    return (
        trades.astype(np.int64),
        volume_lots,
        taker_buy_lots,
        lots.to_value(volume_lots) * vwap,
        lots.to_value(taker_buy_lots) * buy_vwap,
    )


def _garch_scale(z: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Conditional std of a GARCH(1,1) driven by unit shocks ``z``, unconditional variance 1."""
    omega = 1.0 - alpha - beta
    out, var = [], 1.0
    for zi in z.tolist():
        out.append(var)
        var = omega + var * (alpha * zi * zi + beta)
    return np.sqrt(np.asarray(out))


@functools.lru_cache(maxsize=1)
def activity_profile() -> np.ndarray:
    """Relative trading activity of each UTC second of a day (mean 1; read-only)."""
    seconds = np.arange(SECONDS_PER_DAY) + 0.5
    hours = seconds / 3600

    def after(open_hour: float, decay_hours: float) -> np.ndarray:
        since = hours - open_hour
        return np.where(since >= 0, np.exp(-since / decay_hours), 0.0)

    def logistic(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    us_session = logistic((hours - 13.5) / 0.08) * (
        logistic((15.0 - hours) / 0.08) + (hours > 15.0) * np.exp(-(hours - 15.0) / 2.0)
    )
    us_evening = np.exp(-0.5 * ((hours - 20.5) / 2.5) ** 2)
    activity = (
        0.50
        + 0.60 * after(0.0, 1.5)  # the UTC day (and Asian session) open
        + 0.30 * after(8.0, 2.0)  # the European open
        + 1.30 * us_session  # US equities open at 13:30 UTC; busiest until about 16:00
        + 0.35 * us_evening
    ) * (1.0 + 0.3 * np.exp(-(seconds % 3600) / 90.0))  # each hour's first minutes
    return _frozen(activity / activity.mean())


def _frozen(values: np.ndarray) -> np.ndarray:
    values.setflags(write=False)
    return values
