"""The day level: one anchor log-price per UTC day.

A slowly mean-reverting random walk that starts at the symbol's start price on ``config.epoch``,
with Student-t daily shocks whose scale follows a persistent AR(1) log-volatility (multi-day
volatility clustering) and quieter weekends. The draws for day ``k`` come from an RNG seeded by
(seed, symbol, block of ``k``), so each (seed, symbol) has one fixed walk and any day's anchor is
a few thousand cheap steps from the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dagster_project.ingest.simulator.config import SimulatorConfig, SymbolProfile
from dagster_project.ingest.simulator.streams import STREAM_DAILY, stream_rng, student_t

_BLOCK_DAYS = 256  # the day-level walk draws its shocks in blocks of this many days


@dataclass(frozen=True)
class DailyWalk:
    """The day-level walk of one (seed, symbol): each day's anchor and the scale of its moves."""

    log_price: np.ndarray  # anchor log price at 00:00 UTC of epoch + k, k = 0 .. n
    sigma: np.ndarray  # std of the log return over day epoch + k, k = 0 .. n - 1
    sigma_level: float  # the walk's average daily sigma


def daily_walk(
    symbol: str, profile: SymbolProfile, days: int, config: SimulatorConfig
) -> DailyWalk:
    """The day-level walk from the epoch through ``days`` days (a prefix of one fixed path)."""
    shocks, vol_innovations = [], []
    for block in range(-(-days // _BLOCK_DAYS)):
        rng = stream_rng(config, symbol, STREAM_DAILY, block)
        shocks.append(student_t(rng, config.student_t_dof, _BLOCK_DAYS))
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
    return DailyWalk(log_price, sigma, sigma_level)


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
