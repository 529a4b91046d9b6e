"""The simulator's knobs and the per-symbol profiles that make each symbol look like itself."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dagster_project.core.errors import InvalidRequestError, UnknownSymbolError

SOURCE = "simulator"
_SYMBOL_RULE = re.compile(r"^[A-Z0-9]{5,20}$")


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


def check_symbol(symbol: str) -> None:
    """Raise :class:`UnknownSymbolError` unless ``symbol`` looks like a Binance symbol."""
    if not isinstance(symbol, str) or not _SYMBOL_RULE.fullmatch(symbol):
        raise UnknownSymbolError(
            f"symbol {symbol!r} is not a valid simulator symbol; expected 5 to 20 upper-case "
            f"letters or digits like 'BTCUSDT' (rule {_SYMBOL_RULE.pattern})"
        )


def derive_profile(symbol: str) -> SymbolProfile:
    """A deterministic, plausible profile for a symbol without a configured one."""
    key = symbol_key(symbol)
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


def symbol_key(symbol: str) -> int:
    """A 64-bit key of ``symbol`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "little")
