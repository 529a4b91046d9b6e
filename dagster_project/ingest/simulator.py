"""The embedded, offline market source: seeded, realistic klines marked ``source = "simulator"``.

The model has two layers.

* **Day level.** One anchor log-price per UTC day: a slowly mean-reverting random walk that starts
  at the symbol's start price on ``config.epoch``, with Student-t daily shocks whose scale follows a
  persistent AR(1) log-volatility (multi-day volatility clustering) and quieter weekends. The draws
  for day ``k`` come from an RNG seeded by (seed, symbol, block of ``k``), so each (seed, symbol)
  has one fixed walk and any day's anchor is a few thousand cheap steps from the epoch.
* **Intraday.** For day D a per-second log mid-price path from D's anchor to D+1's anchor:
  minute-level GARCH(1,1) with Student-t shocks, scaled by a UTC intraday activity profile
  (00:00 and 08:00 opens, the 13:30-16:00 US session, quiet 03:00-06:00, busier first minutes of
  each hour); inside each minute the seconds form a Brownian bridge with heavy-tailed steps; the
  difference between where the path would end and D+1's anchor is spread over the seconds in
  proportion to their variance (the conditional mean of a bridge). Trades, volume and taker flow
  per second follow activity, volatility and the size of the second's move.

Every random draw for day D comes from an RNG seeded by (seed, symbol, D) (or from the day-level
walk, which is fixed per (seed, symbol)), so simulating D alone gives exactly the rows D gets
inside any longer range; and because D's last close and D+1's first open are both D+1's anchor on
the tick grid, the path is continuous across days.

``simulate_day`` exposes the per-second path (:class:`DayPath`) that ``simulate_klines``
aggregates, so trades and order books can later be sampled from the same prices and volumes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dagster_project.errors import InvalidRequestError, UnknownSymbolError
from dagster_project.klines import (
    TIMESTAMP,
    TimeRange,
    conform,
    empty_klines,
    interval_length,
    to_utc,
)

SOURCE = "simulator"
SECONDS_PER_DAY = 86_400
_SECONDS_PER_MINUTE = 60
_MINUTES_PER_DAY = SECONDS_PER_DAY // _SECONDS_PER_MINUTE
_US_PER_SECOND = 1_000_000
_SYMBOL_RULE = re.compile(r"^[A-Z0-9]{5,20}$")
_BLOCK_DAYS = 256  # the day-level walk draws its shocks in blocks of this many days
_STREAM_DAILY = 1  # tags that keep the day-level and intraday random streams apart
_STREAM_INTRADAY = 2
_UNIX_EPOCH_DAY = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class SymbolProfile:
    """What makes one simulated symbol look like itself."""

    start_price: float  # price on config.epoch, and the level the long-run walk reverts to
    annual_volatility: float  # annualised volatility of log returns (0.6 = 60 %)
    tick_size: float  # price step; every simulated price is a multiple of it
    lot_size: float  # quantity step; every simulated volume is a multiple of it
    daily_volume: float  # typical base-asset volume traded in one day
    daily_trades: float  # typical number of trades in one day


# Rough Binance spot figures (prices are mid-2020s levels, volumes an ordinary day).
KNOWN_PROFILES: Mapping[str, SymbolProfile] = {
    "BTCUSDT": SymbolProfile(40_000.0, 0.60, 0.01, 0.00001, 40_000.0, 1_500_000),
    "ETHUSDT": SymbolProfile(2_500.0, 0.75, 0.01, 0.0001, 400_000.0, 900_000),
    "SOLUSDT": SymbolProfile(100.0, 1.00, 0.01, 0.001, 3_000_000.0, 500_000),
    "BNBUSDT": SymbolProfile(300.0, 0.65, 0.01, 0.001, 250_000.0, 250_000),
}


@dataclass(frozen=True)
class SimulatorConfig:
    """Every knob of the simulator; the defaults give Binance-like spot klines."""

    seed: int = 20_170_101  # master seed: every draw derives from (seed, symbol, day)
    epoch: dt.date = dt.date(2017, 1, 1)  # first day that can be simulated; the walk starts here
    # per-symbol profiles; any other valid symbol gets one derived from a hash of its name
    profiles: Mapping[str, SymbolProfile] = field(default_factory=lambda: dict(KNOWN_PROFILES))
    student_t_dof: float = 5.0  # degrees of freedom of every shock (> 2; lower = heavier tails)
    garch_alpha: float = 0.06  # minute-level GARCH(1,1): weight of the last squared shock
    garch_beta: float = 0.92  # minute-level GARCH(1,1): persistence (alpha + beta < 1)
    daily_vol_persistence: float = 0.97  # AR(1) coefficient of daily log-volatility
    daily_vol_of_vol: float = 0.08  # std of the daily log-volatility innovations
    mean_reversion_half_life_days: float = 730.0  # pull of the log price toward start_price
    weekend_variance: float = 0.6  # Saturday/Sunday variance relative to the weekly average
    volume_vol_elasticity: float = 1.0  # expected volume grows as (volatility / its level) ** this
    daily_volume_noise: float = 0.2  # std of a day's log volume around its expectation
    trade_size_shape: float = 0.5  # gamma shape of one trade's size (lower = more skewed sizes)
    wick_scale: float = 0.5  # size of a second's wick beyond its open/close, in second-vols

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:
            raise InvalidRequestError(f"seed {self.seed!r} is invalid; expected 0 <= seed < 2**63")
        if not self.student_t_dof > 2:
            raise InvalidRequestError(
                f"student_t_dof {self.student_t_dof!r} is invalid; expected > 2 (finite variance)"
            )
        if not (self.garch_alpha >= 0 and self.garch_beta >= 0):
            raise InvalidRequestError(
                f"garch_alpha {self.garch_alpha!r} / garch_beta {self.garch_beta!r} are invalid; "
                "expected both >= 0"
            )
        if not self.garch_alpha + self.garch_beta < 1:
            raise InvalidRequestError(
                f"garch_alpha + garch_beta = {self.garch_alpha + self.garch_beta!r}; expected < 1 "
                "(a stationary variance)"
            )
        if not 0 <= self.daily_vol_persistence < 1:
            raise InvalidRequestError(
                f"daily_vol_persistence {self.daily_vol_persistence!r} is invalid; "
                "expected 0 <= value < 1"
            )
        if not 0 < self.weekend_variance < 3.5:
            raise InvalidRequestError(
                f"weekend_variance {self.weekend_variance!r} is invalid; expected 0 < value < 3.5"
            )

    def profile(self, symbol: str) -> SymbolProfile:
        """``symbol``'s profile: the configured one, else one derived from its name."""
        check_symbol(symbol)
        return self.profiles.get(symbol) or derive_profile(symbol)


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
        return (self.day - _UNIX_EPOCH_DAY).days * SECONDS_PER_DAY * _US_PER_SECOND

    def volume(self) -> np.ndarray:
        """Per-second base volume."""
        return _Grid(self.lot_size).to_value(self.volume_lots)


def simulate_klines(
    symbol: str,
    interval: str,
    time_range: TimeRange,
    config: SimulatorConfig | None = None,
) -> pl.DataFrame:
    """Simulated klines of ``symbol`` with ``open_time`` in ``[start, end)``, in the contract."""
    config = config or SimulatorConfig()
    interval_length(interval)
    profile = config.profile(symbol)
    start, end = to_utc(time_range.start), to_utc(time_range.end)
    if start >= end:
        raise InvalidRequestError(
            f"start {start.isoformat()} is not before end {end.isoformat()}; expected start < end"
        )
    first_day = start.date()
    last_day = (end - dt.timedelta(microseconds=1)).date()
    _check_day(first_day, config)
    walk = _daily_walk(symbol, profile, (last_day - config.epoch).days + 1, config)
    day_paths = (
        _simulate_day(symbol, first_day + dt.timedelta(days=i), profile, walk, config)
        for i in range((last_day - first_day).days + 1)
    )
    frames = [aggregate_day(path, interval) for path in day_paths]
    frame = pl.concat(frames) if frames else empty_klines()
    return frame.filter(pl.col("open_time").is_between(start, end, closed="left"))


def simulate_day(symbol: str, day: dt.date | str, config: SimulatorConfig | None = None) -> DayPath:
    """The per-second path of ``symbol`` on UTC ``day`` (a date or ``YYYY-MM-DD``)."""
    config = config or SimulatorConfig()
    profile = config.profile(symbol)
    day = to_utc(day).date() if isinstance(day, str | dt.datetime) else day
    _check_day(day, config)
    walk = _daily_walk(symbol, profile, (day - config.epoch).days + 1, config)
    return _simulate_day(symbol, day, profile, walk, config)


def aggregate_day(path: DayPath, interval: str) -> pl.DataFrame:
    """``path`` as klines of ``interval`` (any of ``klines.INTERVALS``), in the contract schema."""
    seconds = int(interval_length(interval).total_seconds())
    bars = SECONDS_PER_DAY // seconds

    def by_bar(values: np.ndarray) -> np.ndarray:
        return values.reshape(bars, seconds)

    lots = _Grid(path.lot_size)
    open_us = path.start_us + np.arange(bars, dtype=np.int64) * seconds * _US_PER_SECOND
    frame = pl.DataFrame(
        {
            "open_time": pl.Series(open_us).cast(TIMESTAMP),
            "open": by_bar(path.open)[:, 0],
            "high": by_bar(path.high).max(axis=1),
            "low": by_bar(path.low).min(axis=1),
            "close": by_bar(path.close)[:, -1],
            "volume": lots.to_value(by_bar(path.volume_lots).sum(axis=1)),
            "close_time": pl.Series(open_us + seconds * _US_PER_SECOND - 1_000).cast(TIMESTAMP),
            "quote_volume": by_bar(path.quote_volume).sum(axis=1),
            "trades": by_bar(path.trades).sum(axis=1),
            "taker_buy_base_volume": lots.to_value(by_bar(path.taker_buy_lots).sum(axis=1)),
            "taker_buy_quote_volume": by_bar(path.taker_buy_quote_volume).sum(axis=1),
            "source": pl.repeat(SOURCE, bars, dtype=pl.String, eager=True),
        }
    )
    return conform(frame)


def check_symbol(symbol: str) -> None:
    """Raise :class:`UnknownSymbolError` unless ``symbol`` looks like a Binance symbol."""
    if not isinstance(symbol, str) or not _SYMBOL_RULE.fullmatch(symbol):
        raise UnknownSymbolError(
            f"symbol {symbol!r} is not a valid simulator symbol; expected 5 to 20 upper-case "
            f"letters or digits like 'BTCUSDT' (rule {_SYMBOL_RULE.pattern})"
        )


def derive_profile(symbol: str) -> SymbolProfile:
    """A deterministic, plausible profile for a symbol without a configured one."""
    key = _symbol_key(symbol)
    u = [((key >> (16 * i)) & 0xFFFF) / 0xFFFF for i in range(4)]
    price = float(f"{10 ** (-2 + 5 * u[0]):.3g}")  # 0.01 .. 1000
    magnitude = math.floor(math.log10(price))
    return SymbolProfile(
        start_price=price,
        annual_volatility=round(0.6 + 0.6 * u[1], 3),
        tick_size=10.0 ** (magnitude - 4),
        lot_size=10.0 ** -(magnitude + 1),
        daily_volume=float(f"{10 ** (6.5 + 1.5 * u[2]) / price:.3g}"),  # $3M .. $100M a day
        daily_trades=float(round(10 ** (4.7 + 1.0 * u[3]))),
    )


# ── day level ──────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _DailyWalk:
    log_price: np.ndarray  # anchor log price at 00:00 UTC of epoch + k, k = 0 .. n
    sigma: np.ndarray  # std of the log return over day epoch + k, k = 0 .. n - 1
    sigma_level: float  # the walk's average daily sigma


def _daily_walk(
    symbol: str, profile: SymbolProfile, days: int, config: SimulatorConfig
) -> _DailyWalk:
    """The day-level walk from the epoch through ``days`` days (a prefix of one fixed path)."""
    shocks, vol_innovations = [], []
    for block in range(-(-days // _BLOCK_DAYS)):
        rng = _rng(config, symbol, _STREAM_DAILY, block)
        shocks.append(_student_t(rng, config.student_t_dof, _BLOCK_DAYS))
        vol_innovations.append(rng.standard_normal(_BLOCK_DAYS))
    shocks = np.concatenate(shocks)[:days]
    vol_innovations = np.concatenate(vol_innovations)[:days]

    phi, vol_of_vol = config.daily_vol_persistence, config.daily_vol_of_vol
    log_vol = _ar1(vol_innovations * vol_of_vol, phi)
    stationary_var = vol_of_vol**2 / (1 - phi**2)
    sigma_level = profile.annual_volatility / math.sqrt(365.0)
    weekday = (np.arange(days) + config.epoch.weekday()) % 7
    weekend = config.weekend_variance
    seasonal_var = np.where(weekday >= 5, weekend, (7 - 2 * weekend) / 5)
    sigma = sigma_level * np.exp(log_vol - stationary_var) * np.sqrt(seasonal_var)

    kappa = math.log(2) / config.mean_reversion_half_life_days
    log_price = _mean_reverting_walk(math.log(profile.start_price), sigma * shocks, kappa)
    return _DailyWalk(log_price, sigma, sigma_level)


def _ar1(innovations: np.ndarray, phi: float) -> np.ndarray:
    out, x = [], 0.0
    for e in innovations.tolist():
        x = phi * x + e
        out.append(x)
    return np.asarray(out)


def _mean_reverting_walk(level: float, steps: np.ndarray, kappa: float) -> np.ndarray:
    out, x = [level], level
    for step in steps.tolist():
        x = x - kappa * (x - level) + step
        out.append(x)
    return np.asarray(out)


# ── intraday ───────────────────────────────────────────────────────────────────────────────────


def _simulate_day(
    symbol: str, day: dt.date, profile: SymbolProfile, walk: _DailyWalk, config: SimulatorConfig
) -> DayPath:
    k = (day - config.epoch).days
    rng = _rng(config, symbol, _STREAM_INTRADAY, k)
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
    rng: np.random.Generator, walk: _DailyWalk, k: int, config: SimulatorConfig
) -> _Shocks:
    """Day ``k``'s per-second log mid, from its anchor to the next day's anchor."""
    nu = config.student_t_dof
    # Minutes: GARCH(1,1) scale x intraday activity x the day's sigma (variances add up to it).
    minute_activity = _activity_profile().reshape(_MINUTES_PER_DAY, _SECONDS_PER_MINUTE).mean(1)
    z = _student_t(rng, nu, _MINUTES_PER_DAY)
    garch = _garch_scale(z, config.garch_alpha, config.garch_beta)
    minute_sigma = walk.sigma[k] * np.sqrt(minute_activity / _MINUTES_PER_DAY) * garch
    # Seconds: a heavy-tailed Brownian bridge inside each minute (demeaned steps sum to 0)...
    u = _student_t(rng, nu, SECONDS_PER_DAY).reshape(_MINUTES_PER_DAY, _SECONDS_PER_MINUTE)
    second_sigma = minute_sigma / math.sqrt(_SECONDS_PER_MINUTE)
    bridge = (u - u.mean(axis=1, keepdims=True)) * second_sigma[:, None]
    steps = ((minute_sigma * z)[:, None] / _SECONDS_PER_MINUTE + bridge).ravel()
    # ...and the day bridged to the next anchor: the gap is spread in proportion to variance.
    volatility = np.repeat(second_sigma, _SECONDS_PER_MINUTE)
    start, end = walk.log_price[k], walk.log_price[k + 1]
    variance = volatility**2
    steps += (end - start - steps.sum()) * variance / variance.sum()
    log_mid = np.concatenate([[start], start + np.cumsum(steps)])
    log_mid[-1] = end  # exactly the next day's first value, whatever the rounding
    return _Shocks(log_mid, volatility, z, garch, u.ravel())


def _intensity(rng: np.random.Generator, shocks: _Shocks, config: SimulatorConfig) -> np.ndarray:
    """Per-second activity: the intraday profile x GARCH volatility x the size of the minute's and
    the second's own shocks x minute-to-minute noise (the day's level is set in ``_flow``)."""
    mean_abs = _mean_abs_t(config.student_t_dof)
    noise = np.exp(0.4 * rng.standard_normal(_MINUTES_PER_DAY) - 0.08)
    minute_factor = (
        shocks.garch**config.volume_vol_elasticity
        * (0.7 + 0.3 * np.abs(shocks.minute_z) / mean_abs)
        * noise
    )
    minute_factor /= minute_factor.mean()
    second_factor = 0.6 + 0.4 * np.abs(shocks.second_u) / mean_abs
    return _activity_profile() * np.repeat(minute_factor, _SECONDS_PER_MINUTE) * second_factor


def _trade_prices(
    rng: np.random.Generator, mid: np.ndarray, volatility: np.ndarray, tick: float, wick: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-second open, high, low, close on the tick grid (open = previous close)."""
    grid = _Grid(tick)
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
    walk: _DailyWalk,
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
    lots = _Grid(profile.lot_size)
    volume_lots = np.maximum(lots.to_steps(volume), trades)
    # Takers buy more in seconds and minutes that go up; the share stays in [0, 1].
    minute_move = np.repeat(shocks.minute_z, _SECONDS_PER_MINUTE)
    buy_share = np.clip(
        0.5
        + 0.15 * np.tanh(shocks.second_moves())
        + 0.2 * np.tanh(minute_move)
        + 0.1 * np.repeat(rng.standard_normal(_MINUTES_PER_DAY), _SECONDS_PER_MINUTE)
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
def _activity_profile() -> np.ndarray:
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


# ── helpers ────────────────────────────────────────────────────────────────────────────────────


class _Grid:
    """A price or quantity grid: values <-> integer steps, exactly decimal when step = 10**-n."""

    def __init__(self, step: float) -> None:
        self.step = step
        inverse = 1.0 / step
        self.inverse = round(inverse) if step < 1 and abs(inverse - round(inverse)) < 1e-9 else None

    def to_steps(self, values: np.ndarray) -> np.ndarray:
        scaled = values * self.inverse if self.inverse else values / self.step
        return np.maximum(np.rint(scaled), 1).astype(np.int64)

    def to_value(self, steps: np.ndarray) -> np.ndarray:
        return steps / self.inverse if self.inverse else steps * self.step


def _check_day(day: dt.date, config: SimulatorConfig) -> None:
    if day < config.epoch:
        raise InvalidRequestError(
            f"day {day.isoformat()} is before the simulator's epoch {config.epoch.isoformat()}; "
            "expected days on or after SimulatorConfig.epoch"
        )


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "little")


def _rng(config: SimulatorConfig, symbol: str, stream: int, index: int) -> np.random.Generator:
    entropy = [config.seed, _symbol_key(symbol), stream, index]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _student_t(rng: np.random.Generator, dof: float, size: int) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(dof, size) * math.sqrt((dof - 2) / dof)


@functools.lru_cache(maxsize=8)
def _mean_abs_t(dof: float) -> float:
    """E|T| of a unit-variance Student-t with ``dof`` degrees of freedom."""
    log_ratio = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)
    return 2 * math.sqrt(dof - 2) * math.exp(log_ratio) / ((dof - 1) * math.sqrt(math.pi))


def _frozen(values: np.ndarray) -> np.ndarray:
    values.setflags(write=False)
    return values
