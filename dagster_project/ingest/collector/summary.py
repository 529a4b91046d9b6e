"""What a collector run did: per symbol, in total, and per flush."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster_project.ingest.orderbook.sync import SyncStats
from dagster_project.ingest.orderbook.ticker_check import BookTickerReport


@dataclass(frozen=True)
class SymbolSummary:
    """One symbol's share of a run."""

    events_applied: int
    resyncs: dict[str, int]  # out-of-sync episodes by reason
    snapshots_taken: int  # REST snapshots fetched for this symbol
    snapshot_failures: int
    duplicates_dropped: int  # rows not landed because a resync repeated them
    rows_landed: dict[str, int]  # table -> rows written to the lake
    book_tickers: BookTickerReport  # the book against Binance's own best bid/ask
    sync: SyncStats  # the synchronizer's counters


@dataclass(frozen=True)
class CollectorSummary:
    """What a run did; ``as_dict()`` is JSON-able (CLI output, Dagster metadata)."""

    symbols: tuple[str, ...]
    market: str
    started_at: dt.datetime
    stopped_at: dt.datetime
    stop_reason: str  # "signal SIGTERM", "stop_after_messages", "stop()", ...
    messages: dict[str, int]  # websocket messages by kind: depth, book_ticker, other, malformed
    events_applied: int
    resyncs: dict[str, int]  # all symbols, by reason (reconnect, sequence_gap, stale_stream, ...)
    snapshots_taken: int  # REST snapshots fetched (including any discarded after a reconnect)
    snapshot_failures: int  # fetches that failed after the REST client's own retries
    rest_retries: int  # transient REST failures the client retried by itself
    connections: int  # websocket connections opened
    disconnects: int  # open connections lost while not stopping
    connect_failures: int  # connection attempts that failed to open
    flushes: int
    flush_failures: int  # part writes that failed (their rows were kept)
    parts_written: int
    rows_landed: dict[str, int]  # table -> rows written
    rows_unwritten: dict[str, int]  # table -> rows still held at the end (lost on exit)
    duplicates_dropped: int
    per_symbol: dict[str, SymbolSummary]

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    @property
    def ok(self) -> bool:
        """True when every received row reached the lake."""
        return not any(self.rows_unwritten.values())

    @property
    def duration_s(self) -> float:
        return (self.stopped_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols),
            "market": self.market,
            "started_at": self.started_at.isoformat(),
            "stopped_at": self.stopped_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "stop_reason": self.stop_reason,
            "messages": dict(self.messages),
            "events_applied": self.events_applied,
            "resyncs": dict(self.resyncs),
            "snapshots_taken": self.snapshots_taken,
            "snapshot_failures": self.snapshot_failures,
            "rest_retries": self.rest_retries,
            "connections": self.connections,
            "reconnects": self.reconnects,
            "disconnects": self.disconnects,
            "connect_failures": self.connect_failures,
            "flushes": self.flushes,
            "flush_failures": self.flush_failures,
            "parts_written": self.parts_written,
            "rows_landed": dict(self.rows_landed),
            "rows_unwritten": dict(self.rows_unwritten),
            "duplicates_dropped": self.duplicates_dropped,
            "ok": self.ok,
            "book_tickers": {
                symbol: {
                    "compared": s.book_tickers.compared,
                    "mismatched": s.book_tickers.mismatched,
                    "not_comparable": s.book_tickers.not_comparable,
                }
                for symbol, s in self.per_symbol.items()
            },
        }


@dataclass(frozen=True)
class FlushReport:
    """One flush, passed to ``on_flush`` (a CLI progress bar, a Dagster log line)."""

    reason: str  # periodic, utc_midnight, stop, requested
    parts: tuple[Path, ...]  # files written
    rows: dict[str, int]  # table -> rows written by this flush
    failed: int  # part writes that failed (rows kept)
    rows_pending: int  # rows still held after this flush (failed writes)
    totals: dict[str, int]  # table -> rows landed so far
