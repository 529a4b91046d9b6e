"""REST polling of order-book snapshots: the fallback when no depth stream is running.

Every ``cadence_s`` each symbol's ``/depth`` is fetched (weight 5 at the default limit of 100 on
spot, so even 1 s polling of several symbols stays far below the 6,000-a-minute budget) and the
top levels are kept as ``raw/depth_snapshots`` rows stamped with the local receive time, source
``binance_rest``. Rows are appended to the day's partition as immutable parts every
``flush_every_s`` and when polling stops, so a stop or a crash loses at most one flush interval.
Unlike the stream collector this sees the book only at the poll instants and keeps no
``raw/depth_updates``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from dagster_project.core.errors import BinanceAPIError, LakeWriteError
from dagster_project.core.lake import Lake
from dagster_project.ingest.binance_rest import (
    BinanceRestClient,
    BinanceRestConfig,
    DepthSnapshot,
    depth_snapshots_frame,
)
from dagster_project.ingest.landing import check_symbol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollConfig:
    symbols: tuple[str, ...]
    rest: BinanceRestConfig = BinanceRestConfig()
    cadence_s: float = 1.0  # one /depth request per symbol this often
    limit: int = 100  # levels Binance returns per side (spot weight 5 up to 100)
    levels: int = 50  # levels per side kept in each row
    flush_every_s: float = 60.0  # append the rows received so far to the lake this often
    max_rounds: int | None = None  # stop after this many polling rounds (None: until stopped)


@dataclass
class PollSummary:
    rounds: int = 0
    snapshots: int = 0
    errors: int = 0
    rows_landed: dict[str, int] = field(default_factory=dict)  # by symbol


def poll_depth(
    lake: Lake,
    config: PollConfig,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PollSummary:
    """Poll until ``stop`` is set or ``max_rounds`` rounds are done; flushes before returning."""
    symbols = [check_symbol(s) for s in config.symbols]
    stop = stop or threading.Event()
    summary = PollSummary()
    pending: dict[str, list[DepthSnapshot]] = {s: [] for s in symbols}
    with BinanceRestClient(config.rest) as client:
        last_flush = next_round = clock()
        try:
            while not stop.is_set() and summary.rounds != config.max_rounds:
                for symbol in symbols:
                    snapshot = fetch(client, symbol, config.limit, summary)
                    if snapshot is not None:
                        pending[symbol].append(snapshot)
                summary.rounds += 1
                if clock() - last_flush >= config.flush_every_s:
                    flush(lake, pending, config.levels, summary)
                    last_flush = clock()
                next_round += config.cadence_s
                stop.wait(max(0.0, next_round - clock()))
        finally:
            flush(lake, pending, config.levels, summary)
    log.info("depth polling stopped: %s", summary)
    return summary


def fetch(
    client: BinanceRestClient, symbol: str, limit: int, summary: PollSummary
) -> DepthSnapshot | None:
    try:
        snapshot = client.depth_snapshot(symbol, limit)
    except BinanceAPIError as exc:  # retries are spent: skip this poll, keep polling
        summary.errors += 1
        log.warning("depth poll of %s failed: %s", symbol, exc)
        return None
    summary.snapshots += 1
    return snapshot


def flush(
    lake: Lake, pending: dict[str, list[DepthSnapshot]], levels: int, summary: PollSummary
) -> None:
    """Append each symbol's pending rows to its day partitions; rows stay pending on failure."""
    for symbol, snapshots in pending.items():
        if not snapshots:
            continue
        frame = depth_snapshots_frame(snapshots, levels)
        days = frame.with_columns(pl.col("ts").dt.date().alias("_day"))
        try:
            for (day,), rows in days.partition_by("_day", as_dict=True, include_key=False).items():
                first, last = rows["ts"].min(), rows["ts"].max()
                label = f"p{int(first.timestamp() * 1000)}-{int(last.timestamp() * 1000)}"
                lake.append_part(
                    "raw", "depth_snapshots", {"symbol": symbol, "date": day}, rows, label
                )
        except LakeWriteError as exc:
            log.error(
                "could not land %d %s depth rows, keeping them: %s", len(snapshots), symbol, exc
            )
            continue
        summary.rows_landed[symbol] = summary.rows_landed.get(symbol, 0) + len(snapshots)
        snapshots.clear()
