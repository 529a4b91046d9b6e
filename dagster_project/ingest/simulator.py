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
aggregates; trades and order books are sampled from the same path.

* **Aggregate trades** (``simulate_agg_trades``). Each second's trades and lots are split into
  fills of at least one lot, grouped into aggregate trades (a fill continues the previous taker
  order with probability ``agg_fill_share``): counts and base volume add up exactly to every
  second's kline, and every price lies in its second's ``[low, high]`` on the tick grid. Trades
  sit at sorted random microseconds; taker buys take the moments where the intra-second path
  (open, then high and low in a direction-tilted order, then close, with turning times that put
  its mean at the second's VWAP) is high, sells where it is low; each is priced at the touch of a
  book riding that path (buys at the ask, sells at the bid), the trades nearest the second's start,
  end and turning points exactly at its open, close, high and low. One common shift per (second,
  side), clipped to ``[low, high]``, and two "balancing" trades at adjacent ticks make price x
  quantity add up to the klines' quote and taker-buy quote volumes to the quantum ``tick x lot``.
  The klines' per-second flows are not always trade-consistent (a single trade with both taker
  sides; a taker-sell VWAP below what the second's low allows), so what a second cannot take moves
  to other seconds of its minute: taker-buy volume and both quote volumes match every 1m (hence
  coarser) kline, bar a few minutes whose own figures no trades inside their seconds can produce
  (about 1 in 7,000 minutes for BTCUSDT/ETHUSDT, 1 in 500 for quiet symbols; off by < 2e-5).
* **Order books** (``simulate_depth_snapshots``). At each sample time ``ts`` the book straddles the
  path's mid at ``ts``; its spread in ticks, its level gaps and its resting sizes follow the
  volatility known at ``ts`` (the second's GARCH volatility blended with realised volatility of
  the trailing seconds), wider and thinner when the market is wild. Noise comes from a counter
  hash of (seed, symbol, ts, level), so a book depends only on ``ts``: any cadence, level count or
  range gives the same book at the same instant.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
from collections.abc import Iterator, Mapping
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
from dagster_project.schemas import (
    AGG_TRADE_SCHEMA,
    DEPTH_SNAPSHOT_SCHEMA,
    conform_to,
    empty,
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
_STREAM_TRADES = 3
_STREAM_KNOTS = 4
_STREAM_BOOK = 5
_UNIX_EPOCH_DAY = dt.date(1970, 1, 1)
_ID_BLOCK = 10**10  # ids of day k (days since the epoch) are k * _ID_BLOCK + 0, 1, 2, ...
_MIN_CADENCE_US = 10_000  # the book's last_update_id advances once per 10 ms, so no finer cadence
_MAX_LEVELS = 5_000  # Binance's deepest REST snapshot
_SIDES = 2  # trade buckets are (second, side): side 0 = taker buys, side 1 = taker sells
_REACH_MARGIN = 0.1  # a minute's quote goals are kept this share of their range inside it
_EXACT_WINDOW = 60_000  # widest window (quanta) of the subset-sum search among single trades
_SUBSET_WIDTH = 2_000_000  # widest range of sums (lots) of the exact search for side switches
_SHIFT_STEPS = 36  # bisection steps of the per-(second, side) price shift (span / 2**36)
_BOOK_BLOCK_US = 10_000_000  # a level's size noise persists for this long (plus a per-ts part)
_FIELD_SPREAD, _FIELD_BIDS, _FIELD_ASKS, _FIELD_BLOCK = 1, 2, 3, 16  # hash fields of the book


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
    # aggregate trades and order books (they never change the klines)
    agg_fill_share: float = 0.4  # chance that a trade is one more fill of the previous taker order
    taker_side_noise: float = (
        0.3  # noise (in second-ranges) on the path level: buys high, sells low
    )
    spread_vol_ticks: float = 0.005  # mean spread beyond 1 tick, per tick of one-second volatility
    level_gap_vol_ticks: float = 0.003  # mean gap between book levels beyond 1 tick, same units
    touch_depth_trades: float = 8.0  # mean resting size at the touch, in mean trade sizes
    depth_vol_elasticity: float = 1.0  # touch size ~ (volatility / usual) ** -this; fades deeper
    book_vol_window_s: int = 30  # trailing seconds of realised volatility the book reacts to

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
        if not 0 <= self.agg_fill_share < 1:
            raise InvalidRequestError(
                f"agg_fill_share {self.agg_fill_share!r} is invalid; expected 0 <= value < 1"
            )
        knobs = (
            "taker_side_noise",
            "spread_vol_ticks",
            "level_gap_vol_ticks",
            "depth_vol_elasticity",
        )
        for name in knobs:
            if not getattr(self, name) >= 0:
                raise InvalidRequestError(
                    f"{name} {getattr(self, name)!r} is invalid; expected a value >= 0"
                )
        if not self.touch_depth_trades > 0:
            raise InvalidRequestError(
                f"touch_depth_trades {self.touch_depth_trades!r} is invalid; expected > 0"
            )
        if not (isinstance(self.book_vol_window_s, int) and self.book_vol_window_s >= 1):
            raise InvalidRequestError(
                f"book_vol_window_s {self.book_vol_window_s!r} is invalid; expected an int >= 1"
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
    frames = [aggregate_day(path, interval) for path in _day_paths(symbol, time_range, config)]
    frame = pl.concat(frames) if frames else empty_klines()
    start, end = to_utc(time_range.start), to_utc(time_range.end)
    return frame.filter(pl.col("open_time").is_between(start, end, closed="left"))


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
    start_us, end_us = _range_us(time_range)
    frames = [
        _day_agg_trades(path, config, start_us, end_us)
        for path in _day_paths(symbol, time_range, config)
    ]
    return pl.concat(frames) if frames else empty(AGG_TRADE_SCHEMA)


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
    start_us, end_us = _range_us(time_range)
    frames = []
    for path in _day_paths(symbol, time_range, config):
        day_us = SECONDS_PER_DAY * _US_PER_SECOND
        first = max(start_us - path.start_us, 0)
        stop = min(end_us - path.start_us, day_us)
        offsets = np.arange(-(-first // cadence_us) * cadence_us, stop, cadence_us, dtype=np.int64)
        if offsets.size:
            frames.append(_day_depth(path, offsets, levels, config))
    return pl.concat(frames) if frames else empty(DEPTH_SNAPSHOT_SCHEMA)


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


def _day_paths(symbol: str, time_range: TimeRange, config: SimulatorConfig) -> Iterator[DayPath]:
    """The :class:`DayPath` of every UTC day that ``time_range`` touches, in order."""
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
    for i in range((last_day - first_day).days + 1):
        yield _simulate_day(symbol, first_day + dt.timedelta(days=i), profile, walk, config)


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


# ── aggregate trades ───────────────────────────────────────────────────────────────────────────


def _day_agg_trades(
    path: DayPath, config: SimulatorConfig, start_us: int, end_us: int
) -> pl.DataFrame:
    """The aggregate trades of ``path``'s day with ``ts`` in ``[start_us, end_us)``."""
    tape = _trade_tape(path, config)
    ts = path.start_us + tape.second * _US_PER_SECOND + tape.offset_us
    first_id = _day_index(path, config) * _ID_BLOCK
    last_trade = first_id + np.cumsum(tape.fills) - 1
    keep = (ts >= start_us) & (ts < end_us)
    frame = pl.DataFrame(
        {
            "agg_trade_id": (first_id + np.arange(ts.size, dtype=np.int64))[keep],
            "ts": pl.Series(ts[keep]).cast(TIMESTAMP),
            "price": _Grid(path.tick_size).to_value(tape.ticks[keep]),
            "qty": _Grid(path.lot_size).to_value(tape.lots[keep]),
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
    rng = _rng(config, path.symbol, _STREAM_TRADES, _day_index(path, config))
    tick = _Grid(path.tick_size)
    bounds = _Bounds(tick.to_steps(path.low), tick.to_steps(path.high))
    quotes = _Quotes.of(path)
    buy_lots = _reach_minute_quotes(path, _taker_buy_lots(rng, path), bounds, quotes)
    sell_lots = path.volume_lots - buy_lots
    buy_fills = _taker_buy_fills(path.trades, buy_lots, sell_lots)
    bucket_fills = np.stack([buy_fills, path.trades - buy_fills], axis=1).ravel()
    bucket_lots = np.stack([buy_lots, sell_lots], axis=1).ravel()
    bucket, fills, lots = _aggregate_fills(rng, bucket_fills, bucket_lots, config)
    order, offset_us = _schedule(rng, bucket // _SIDES)
    second = bucket[order] // _SIDES
    knots = _knots(path, config)
    level = knots.at(second, offset_us / _US_PER_SECOND)
    scheduled_buy = bucket[order] % _SIDES == 0
    dealt = _deal_by_level(
        rng, order, scheduled_buy, second, level, bounds, config.taker_side_noise
    )
    bucket, fills, lots = bucket[dealt], fills[dealt], lots[dealt]
    is_buy = bucket % _SIDES == 0

    spread = _book_spread(path, config, np.arange(SECONDS_PER_DAY) * _US_PER_SECOND)
    bid, ask = _touch(level, spread[second])
    model = bounds.clip(np.where(is_buy, ask, bid), second)
    pin = _pins(bucket, second, knots, tick.to_steps(path.open), tick.to_steps(path.close))
    lots, fills = _smallest_at_pins(rng, bucket, lots, fills, pin)
    target, unmet = _quote_targets(rng, quotes, path, buy_lots, bucket, lots, pin, bounds)
    if unmet.any():  # pins left a minute's quote volume out of reach: free its trades
        pin = np.where(unmet[second // _SECONDS_PER_MINUTE], -1, pin)
        target, _ = _quote_targets(rng, quotes, path, buy_lots, bucket, lots, pin, bounds)
    ticks, lots, fills = _fit_prices(rng, bucket, lots, fills, model, pin, target, bounds)
    return _Tape(second, offset_us, is_buy, ticks, lots, fills)


@dataclass(frozen=True)
class _Quotes:
    """The klines' quote volumes in quanta (tick x lot): per second within 1 of the klines', and
    per minute exactly the rounded minute sums."""

    total: np.ndarray
    buys: np.ndarray
    minute_total: np.ndarray
    minute_buys: np.ndarray

    @classmethod
    def of(cls, path: DayPath) -> _Quotes:
        scale = _Grid(path.tick_size).scale(1.0) * _Grid(path.lot_size).scale(1.0)
        total, minute_total = _cumulative_round(path.quote_volume * scale)
        buys, minute_buys = _cumulative_round(path.taker_buy_quote_volume * scale)
        return cls(total, buys, minute_total, minute_buys)


@dataclass(frozen=True)
class _Bounds:
    """Each second's ``[low, high]`` in ticks."""

    low: np.ndarray
    high: np.ndarray

    def clip(self, ticks: np.ndarray, second: np.ndarray) -> np.ndarray:
        return np.clip(ticks, self.low[second], self.high[second])

    def of_buckets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(self.low, _SIDES), np.repeat(self.high, _SIDES)


def _taker_buy_lots(rng: np.random.Generator, path: DayPath) -> np.ndarray:
    """Per-second taker-buy lots that trades can realise, adding up to the klines' per minute.

    A second of one trade has one taker: it buys all its lots or none (the side the klines lean
    to), and the difference moves to seconds of two or more trades in the same minute (where
    these cannot hold it, more single trades change side first).
    """
    trades, volume, buys = path.trades, path.volume_lots, path.taker_buy_lots
    lone = (trades == 1) & (buys > 0) & (buys < volume)
    lots = np.where(lone, np.where(2 * buys >= volume, volume, 0), buys)
    shared = trades >= 2
    need = _by_minute(buys - lots).sum(axis=1)
    up = _by_minute(np.where(shared, volume - lots, 0)).sum(axis=1)
    down = _by_minute(np.where(shared, lots, 0)).sum(axis=1)
    for minute in np.flatnonzero((need > up) | (-need > down)):
        part = slice(minute * _SECONDS_PER_MINUTE, (minute + 1) * _SECONDS_PER_MINUTE)
        lots[part] = _flip_single_trades(
            lots[part], buys[part], volume[part], trades[part] == 1, up[minute], down[minute]
        )
    need = _by_minute(buys - lots).sum(axis=1)
    room = np.where(
        need[:, None] > 0,
        _by_minute(np.where(shared, volume - lots, 0)),
        _by_minute(np.where(shared, lots, 0)),
    )
    moved = _fill_in_random_order(rng, room, np.abs(need))
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


def _reach_minute_quotes(
    path: DayPath, buy_lots: np.ndarray, bounds: _Bounds, quotes: _Quotes
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
        lowest, highest = _by_minute(lots * low).sum(axis=1), _by_minute(lots * high).sum(axis=1)
        margin = _REACH_MARGIN * (highest - lowest)
        return lowest + margin, highest - margin

    (buy_low, buy_high), (sell_low, sell_high) = reach(buy_lots), reach(volume - buy_lots)
    unreachable = (sell_goal < sell_low) | (sell_goal > sell_high)
    unreachable |= (quotes.minute_buys < buy_low) | (quotes.minute_buys > buy_high)
    buys = buy_lots.copy()
    for minute in np.flatnonzero(unreachable):
        part = slice(minute * _SECONDS_PER_MINUTE, (minute + 1) * _SECONDS_PER_MINUTE)
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
    for _ in range(4 * _SECONDS_PER_MINUTE):
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


def _taker_buy_fills(trades: np.ndarray, buy_lots: np.ndarray, sell_lots: np.ndarray) -> np.ndarray:
    """Trades of each second whose taker bought: in proportion to lots, at least one lot each.

    Where no second of a minute has two trades of one side although one could, the second that
    allows it most gets two: a (second, side) of several trades can meet any quote volume in its
    range exactly, which the minute needs to add up to its kline.
    """
    lowest = np.maximum((buy_lots > 0).astype(np.int64), trades - sell_lots)
    highest = np.minimum(buy_lots, trades - (sell_lots > 0))
    share = np.rint(trades * buy_lots / (buy_lots + sell_lots)).astype(np.int64)
    fills = np.clip(share, lowest, highest)
    for side in range(_SIDES):
        mine = fills if side == 0 else trades - fills
        most = highest if side == 0 else trades - lowest
        lacking = ~_by_minute(mine >= 2).any(axis=1) & _by_minute(most >= 2).any(axis=1)
        for minute in np.flatnonzero(lacking):
            part = slice(minute * _SECONDS_PER_MINUTE, (minute + 1) * _SECONDS_PER_MINUTE)
            second = minute * _SECONDS_PER_MINUTE + int(np.argmax(most[part]))
            fills[second] = 2 if side == 0 else trades[second] - 2
    return fills


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
    raw = (rng.random(second.size) * (_US_PER_SECOND - count + 1)).astype(np.int64)
    order = np.argsort(second * _US_PER_SECOND + raw, kind="stable")
    rank = np.arange(second.size) - (np.cumsum(per_second) - per_second)[second]
    return order, raw[order] + rank


def _deal_by_level(
    rng: np.random.Generator,
    order: np.ndarray,
    is_buy: np.ndarray,
    second: np.ndarray,
    level: np.ndarray,
    bounds: _Bounds,
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


def _pins(
    bucket: np.ndarray,
    second: np.ndarray,
    knots: _Knots,
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
    size = np.bincount(bucket, minlength=SECONDS_PER_DAY * _SIDES)[bucket]
    return np.where(place < size - 2, pin, -1)


def _smallest_at_pins(
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


def _quote_targets(
    rng: np.random.Generator,
    quotes: _Quotes,
    path: DayPath,
    buy_lots: np.ndarray,
    bucket: np.ndarray,
    lots: np.ndarray,
    pin: np.ndarray,
    bounds: _Bounds,
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

    buckets = SECONDS_PER_DAY * _SIDES
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
    unmet = np.zeros(_MINUTES_PER_DAY, dtype=bool)
    minute_sells = quotes.minute_total - quotes.minute_buys
    for side, minute in enumerate((quotes.minute_buys, minute_sells)):
        part = np.s_[side::_SIDES]
        need = minute - _by_minute(target[part]).sum(axis=1)
        up = np.where(flexible[part], highest[part] - target[part], 0)
        down = np.where(flexible[part], target[part] - lowest[part], 0)
        room = np.where(need[:, None] > 0, _by_minute(up), _by_minute(down))
        moved = _fill_in_random_order(rng, room, np.abs(need))
        target[part] += (np.sign(need)[:, None] * moved).ravel()
        left = need - np.sign(need) * moved.sum(axis=1)
        for m in np.flatnonzero(left):
            index = (m * _SECONDS_PER_MINUTE + np.arange(_SECONDS_PER_MINUTE)) * _SIDES + side
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


def _fit_prices(
    rng: np.random.Generator,
    bucket: np.ndarray,
    lots: np.ndarray,
    fills: np.ndarray,
    model: np.ndarray,
    pin: np.ndarray,
    target: np.ndarray,
    bounds: _Bounds,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ticks (and re-split lots and fills) whose price x lots add up to ``target`` per bucket.

    Free trades keep their model prices shifted by one common offset per (second, side), clipped
    to the second's range and rounded; the two largest free trades of the bucket then absorb the
    rounding as a pair at adjacent ticks P and P + 1 (their lots and fills re-split between
    them). What a pair cannot absorb moves to other pairs of the same minute and side.
    """
    buckets = SECONDS_PER_DAY * _SIDES
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
    for side in range(_SIDES):
        part = np.s_[side::_SIDES]
        need = _by_minute(left[part]).sum(axis=1)
        room = np.where(need[:, None] > 0, _by_minute(up[part]), _by_minute(down[part]))
        moved[part] = (
            np.sign(need)[:, None] * _fill_in_random_order(rng, room, np.abs(need))
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


def _cumulative_round(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-second integers within 1 of ``values`` whose minute sums are the rounded minute sums."""
    reached = np.rint(np.cumsum(_by_minute(values), axis=1)).astype(np.int64)
    return np.diff(reached, axis=1, prepend=0).ravel(), reached[:, -1]


def _fill_in_random_order(
    rng: np.random.Generator, room: np.ndarray, amount: np.ndarray
) -> np.ndarray:
    """Share ``amount[m]`` among the entries of row ``m`` of ``room`` (minutes x seconds), each up
    to its room, filling them one after another in a random order (so few seconds change)."""
    order = np.argsort(rng.random(room.shape), axis=1)
    ordered = np.take_along_axis(room, order, axis=1)
    before = np.cumsum(ordered, axis=1) - ordered
    take = np.clip(amount[:, None] - before, 0, ordered)
    out = np.empty_like(take)
    np.put_along_axis(out, order, take, axis=1)
    return out


def _by_minute(values: np.ndarray) -> np.ndarray:
    return values.reshape(_MINUTES_PER_DAY, _SECONDS_PER_MINUTE)


@dataclass(frozen=True)
class _Knots:
    """Each second's intra-second path in ticks: from the mid at its start through its two
    extremes (at fractions ``u1 < u2`` of the second) to the mid at its end, linear in between."""

    start: np.ndarray
    extreme1: np.ndarray
    extreme2: np.ndarray
    end: np.ndarray
    u1: np.ndarray
    u2: np.ndarray

    def at(self, second: np.ndarray, frac: np.ndarray) -> np.ndarray:
        """The path (real ticks) at ``frac`` of the way through ``second``."""
        u1, u2 = self.u1[second], self.u2[second]
        a, b = self.start[second], self.extreme1[second]
        c, d = self.extreme2[second], self.end[second]
        rise1 = a + (b - a) * frac / np.maximum(u1, 1e-12)
        rise2 = b + (c - b) * (frac - u1) / np.maximum(u2 - u1, 1e-12)
        rise3 = c + (d - c) * (frac - u2) / np.maximum(1 - u2, 1e-12)
        return np.where(frac < u1, rise1, np.where(frac < u2, rise2, rise3))


def _knots(path: DayPath, config: SimulatorConfig) -> _Knots:
    """The intra-second paths of ``path``'s day: the high comes first in 30 % of rising seconds,
    70 % of falling ones and half of flat ones; the turning times are random, then moved so that
    the path's mean over the second is as near its VWAP as they allow."""
    rng = _rng(config, path.symbol, _STREAM_KNOTS, _day_index(path, config))
    a, b, c = rng.random((3, SECONDS_PER_DAY))
    tick = _Grid(path.tick_size)
    opens, closes = tick.to_steps(path.open), tick.to_steps(path.close)
    low, high = tick.to_steps(path.low), tick.to_steps(path.high)
    high_first = c < np.where(closes > opens, 0.3, np.where(closes < opens, 0.7, 0.5))
    mid = tick.scale(path.mid)
    start, end = mid[:-1], mid[1:]
    first, then = np.where(high_first, high, low), np.where(high_first, low, high)
    # turning times moved (least squares) so that the path's mean is the second's VWAP:
    # mean = (then + end) / 2 + u1 (start - then) / 2 + u2 (first - end) / 2
    vwap = tick.scale(path.quote_volume / path.volume())
    g1, g2 = (start - then) / 2, (first - end) / 2
    u1, u2 = np.minimum(a, b), np.maximum(a, b)
    miss = (vwap - (then + end) / 2 - g1 * u1 - g2 * u2) / np.maximum(g1**2 + g2**2, 1e-12)
    u1 = np.clip(u1 + miss * g1, 0.0, 1.0)
    u2 = np.clip(u2 + miss * g2, u1, 1.0)
    return _Knots(start=start, extreme1=first, extreme2=then, end=end, u1=u1, u2=u2)


# ── order book ─────────────────────────────────────────────────────────────────────────────────


def _day_depth(
    path: DayPath, offsets: np.ndarray, levels: int, config: SimulatorConfig
) -> pl.DataFrame:
    """Book snapshots of ``path``'s day at ``offsets`` (microseconds after its midnight)."""
    profile = config.profile(path.symbol)
    mid, sigma, spread = _book_state(path, config, offsets)
    bid, ask = _touch(mid, spread)
    second = offsets // _US_PER_SECOND
    ts = path.start_us + offsets
    usual = profile.annual_volatility / math.sqrt(365.0 * SECONDS_PER_DAY)
    mean_trade_lots = profile.daily_volume / profile.daily_trades / path.lot_size
    touch_lots = config.touch_depth_trades * mean_trade_lots * np.sqrt(_activity_profile()[second])
    key = _book_key(config, path.symbol)
    ladder = functools.partial(
        _ladder, key, ts, levels, sigma * mid, sigma / usual, touch_lots, config
    )
    bid_away, bid_lots = ladder(_FIELD_BIDS)
    ask_away, ask_lots = ladder(_FIELD_ASKS)
    tick, lot = _Grid(path.tick_size), _Grid(path.lot_size)
    trades_before = np.r_[0, np.cumsum(path.trades)][second]
    update_id = _day_index(path, config) * _ID_BLOCK + 1 + offsets // _MIN_CADENCE_US

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
    second, inside = np.divmod(offsets, _US_PER_SECOND)
    mid = _Grid(path.tick_size).scale(path.mid[second])
    if inside.any():
        knots = _knots(path, config)
        mid = np.where(inside > 0, knots.at(second, inside / _US_PER_SECOND), mid)
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


def _touch(mid: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best bid and ask in ticks: ``spread`` apart and centred on ``mid`` as far as the grid allows,
    with bid < mid < ask strictly (the spread grows by a tick where the mid is on the grid)."""
    bid = np.minimum(np.rint(mid - spread / 2), np.ceil(mid) - 1)
    ask = np.maximum(bid + spread, np.floor(mid) + 1)
    return bid.astype(np.int64), ask.astype(np.int64)


def _book_spread(path: DayPath, config: SimulatorConfig, offsets: np.ndarray) -> np.ndarray:
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
    entropy = [config.seed, _symbol_key(symbol), _STREAM_BOOK]
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

    def scale(self, values: np.ndarray | float) -> np.ndarray | float:
        """``values`` in (real, unrounded) steps."""
        return values * self.inverse if self.inverse else values / self.step


def _check_day(day: dt.date, config: SimulatorConfig) -> None:
    if day < config.epoch:
        raise InvalidRequestError(
            f"day {day.isoformat()} is before the simulator's epoch {config.epoch.isoformat()}; "
            "expected days on or after SimulatorConfig.epoch"
        )


def _day_index(path: DayPath, config: SimulatorConfig) -> int:
    return (path.day - config.epoch).days


def _range_us(time_range: TimeRange) -> tuple[int, int]:
    """``time_range`` as epoch microseconds ``(start, end)``."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    one = dt.timedelta(microseconds=1)
    return (to_utc(time_range.start) - epoch) // one, (to_utc(time_range.end) - epoch) // one


def _cadence_us(cadence_s: float) -> int:
    """``cadence_s`` in microseconds; it must be >= 0.01 s and divide a day."""
    valid = isinstance(cadence_s, int | float) and not isinstance(cadence_s, bool)
    cadence_us = round(cadence_s * _US_PER_SECOND) if valid and math.isfinite(cadence_s) else 0
    if (
        cadence_us < _MIN_CADENCE_US
        or abs(cadence_us - cadence_s * _US_PER_SECOND) > 1e-3
        or (SECONDS_PER_DAY * _US_PER_SECOND) % cadence_us
    ):
        raise InvalidRequestError(
            f"cadence_s {cadence_s!r} is invalid; expected a number of seconds >= 0.01, in whole "
            "microseconds, that divides a day (such as 0.1, 0.5, 1, 5 or 60)"
        )
    return cadence_us


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
