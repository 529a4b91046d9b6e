"""The embedded, offline market source: seeded, realistic market data, ``source = "simulator"``.

A two-layer price model, a day-level walk of anchor prices (:mod:`.walk`) and a per-second path
between consecutive anchors (:mod:`.day_path`), gives one :class:`DayPath` per (seed, symbol, UTC
day). Klines aggregate it (:mod:`.klines`); aggregate trades split its seconds and add up to those
klines (:mod:`.trades`, fitted by :mod:`.taker_sides` and :mod:`.quote_fit`); order books straddle
the same path (:mod:`.books`).

Every random draw for day D comes from an RNG seeded by (seed, symbol, D) (or from the day-level
walk, which is fixed per (seed, symbol)), so simulating D alone gives exactly the rows D gets
inside any longer range; and because D's last close and D+1's first open are both D+1's anchor on
the tick grid, the path is continuous across days.
"""

from dagster_project.ingest.simulator.books import simulate_depth_snapshots
from dagster_project.ingest.simulator.config import KNOWN_PROFILES, SimulatorConfig, SymbolProfile
from dagster_project.ingest.simulator.day_path import DayPath, simulate_day
from dagster_project.ingest.simulator.klines import aggregate_day, simulate_klines
from dagster_project.ingest.simulator.trades import simulate_agg_trades

__all__ = [
    "KNOWN_PROFILES",
    "DayPath",
    "SimulatorConfig",
    "SymbolProfile",
    "aggregate_day",
    "simulate_agg_trades",
    "simulate_day",
    "simulate_depth_snapshots",
    "simulate_klines",
]
