"""One symbol's book in the live collector, with its rows handed over at every flush."""

from __future__ import annotations

import logging
from dataclasses import replace

import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.ingest.collector.config import CollectorConfig
from dagster_project.ingest.collector.parts import TABLES
from dagster_project.ingest.collector.summary import SymbolSummary
from dagster_project.ingest.orderbook.book import OrderBook
from dagster_project.ingest.orderbook.messages import DepthEvent
from dagster_project.ingest.orderbook.sampling import BookSampler, DepthUpdateRecorder
from dagster_project.ingest.orderbook.sync import BookSynchronizer
from dagster_project.ingest.orderbook.ticker_check import BookTickerCheck

log = logging.getLogger(__name__)


class SymbolRecorder:
    """One symbol's synchronizer, sampler, updates recorder and bookTicker check (the parts of
    ``orderbook.recorder.BookRecorder``), with the rows handed over and forgotten at every
    ``take``."""

    def __init__(self, symbol: str, config: CollectorConfig) -> None:
        cadence_ms = config.cadence_s * 1000
        if cadence_ms < 1 or abs(cadence_ms - round(cadence_ms)) > 1e-9:
            raise InvalidRequestError(
                f"cadence_s={config.cadence_s}; expected a whole number of milliseconds >= 0.001 s"
            )
        self.symbol = symbol
        self._cadence_ms, self._levels = round(cadence_ms), config.levels
        self.sync = BookSynchronizer(
            symbol, config.market, config.stale_after_s, config.max_buffer, observers=[self]
        )
        self.tickers = BookTickerCheck()
        self.sync.add_observer(self.tickers)
        self._sampler = BookSampler(self._cadence_ms, self._levels)
        self._updates = DepthUpdateRecorder()
        self._max_event_ms: int | None = None  # latest applied event time since the last sync
        self._last_taken = {"depth_snapshots": None, "depth_updates": None}
        # bookkeeping read by the collector
        self.connection_events = 0  # depth events received on the current connection
        self.fetching = False
        self.day: int | None = None  # UTC day (exchange clock) of the latest event
        self.snapshots_taken = 0
        self.snapshot_failures = 0
        self.duplicates_dropped = 0
        self.rows_landed = dict.fromkeys(TABLES, 0)

    # The synchronizer's observer hooks: forward to the current sampler and recorder.
    def before_apply(self, event: DepthEvent, book: OrderBook) -> None:
        self._sampler.before_apply(event, book)

    def after_apply(self, event: DepthEvent, book: OrderBook) -> None:
        self._sampler.after_apply(event, book)
        self._updates.after_apply(event, book)
        if self._max_event_ms is None or event.event_time_ms > self._max_event_ms:
            self._max_event_ms = event.event_time_ms

    def on_desync(self, reason: str) -> None:
        self._sampler.on_desync(reason)
        self._max_event_ms = None

    def take(self, source: str) -> dict[str, pl.DataFrame]:
        """The rows recorded since the last take, by table; later rows go to fresh recorders.

        The new sampler continues the old one's grid: a synced ``BookSampler`` always waits to
        write the first grid time at or after the latest event it saw, which is exactly where a
        sampler starts after the first event of a sync, so it is primed with that event time.
        """
        sampler, updates = self._sampler, self._updates
        self._sampler = BookSampler(self._cadence_ms, self._levels)
        self._updates = DepthUpdateRecorder()
        if self._max_event_ms is not None:
            self._sampler.after_apply(_grid_mark(self._max_event_ms), self.sync.book)
        frames = {
            "depth_snapshots": sampler.to_frame(source),
            "depth_updates": updates.to_frame(source),
        }
        return {
            "depth_snapshots": self._fresh("depth_snapshots", frames["depth_snapshots"], "ts"),
            "depth_updates": self._fresh(
                "depth_updates", frames["depth_updates"], "final_update_id"
            ),
        }

    def _fresh(self, table: str, frame: pl.DataFrame, column: str) -> pl.DataFrame:
        """Rows whose ``column`` rises above every value taken before (the grain stays unique)."""
        if frame.height == 0:
            return frame
        key = pl.col(column).cast(pl.Int64)
        last = self._last_taken[table]
        floor = pl.max_horizontal(key.cum_max().shift(1), pl.lit(last, pl.Int64))  # nulls ignored
        fresh = frame.filter(floor.is_null() | (key > floor))
        dropped = frame.height - fresh.height
        if dropped:
            self.duplicates_dropped += dropped
            log.warning(
                "%s: %d %s rows repeat %s values already recorded (a resync replayed them); "
                "dropped",
                self.symbol,
                dropped,
                table,
                column,
            )
        if fresh.height:
            self._last_taken[table] = fresh[column].cast(pl.Int64).max()
        return fresh

    def summary(self) -> SymbolSummary:
        stats = self.sync.stats
        return SymbolSummary(
            events_applied=stats.events_applied,
            resyncs=dict(stats.resyncs),
            snapshots_taken=self.snapshots_taken,
            snapshot_failures=self.snapshot_failures,
            duplicates_dropped=self.duplicates_dropped,
            rows_landed=dict(self.rows_landed),
            book_tickers=self.tickers.report(),
            sync=replace(stats, resyncs=dict(stats.resyncs)),
        )


def _grid_mark(event_time_ms: int) -> DepthEvent:
    """An empty event at ``event_time_ms``: what primes a fresh sampler's grid."""
    return DepthEvent(event_time_ms, 0, 0, None, (), ())
