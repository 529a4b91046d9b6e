"""The live order-book collector: Binance's diff-depth and bookTicker streams, landed in the lake.

``collect_depth(lake, CollectorConfig(symbols=("BTCUSDT", "ETHUSDT")))`` runs until SIGINT/SIGTERM
(or a configured stop) and returns a ``CollectorSummary``. ``DepthCollector(lake, config).run()`` is
the same as a coroutine, for callers that own an event loop.

How it works (one asyncio event loop, two worker threads):

- **One connection** to the combined stream ``<ws base>/stream?streams=<sym>@depth@100ms/
  <sym>@bookTicker/...`` for every symbol (spot and USD-M futures alike; Binance allows 1024
  streams a connection). Each depth event goes through the symbol's ``BookSynchronizer`` (Binance's
  buffering, bridging and sequence rules, see ``orderbook.py``), which feeds the ``BookSampler``
  (``raw/depth_snapshots`` rows on the exchange clock) and the ``DepthUpdateRecorder``
  (``raw/depth_updates``); each bookTicker goes to the ``BookTickerCheck``.
- **Snapshots.** Whenever a symbol's synchronizer ``needs_snapshot`` and it has buffered at least
  one event from the current connection (Binance: open the stream, buffer, then fetch), a REST
  ``/depth?limit=snapshot_limit`` snapshot is fetched in the REST worker thread, so the loop keeps
  reading and buffering meanwhile. A failed fetch (after the REST client's own retries) is counted
  and retried with backoff, and so is a snapshot that the buffered events do not bridge. A
  snapshot fetched for a connection that has since dropped is discarded.
- **Stale books.** ``check_stale`` runs every ``stale_check_every_s`` while connected.
- **Reconnects.** On a disconnect or any websocket error every book is resynced (reason
  ``reconnect``: continuity is lost), then the collector reconnects with exponential backoff and
  jitter; a connection that stayed up ``reconnect_max_s`` resets the backoff.
- **Flushes** every ``flush_every_s``, at each UTC midnight (the first event of a new UTC day on
  the exchange clock, or the wall clock's midnight, plus ``midnight_grace_s`` for the other
  symbols' first events) and at stop. A flush drains the new rows of every symbol, splits them by
  UTC date (``ts`` / ``event_time``) and adds one immutable part per ``(table, symbol, date)`` with
  ``Lake.append_part``, label ``c<first ms>-<last ms>`` (13-digit zero-padded, so names sort by
  time). Writes run in the IO worker thread. Rows leave the collector only after their part is
  written: a failed write keeps them for the next flush (and the final flush is tried
  ``final_flush_attempts`` times; what still fails is reported as ``rows_unwritten``).
- **Stop.** SIGINT/SIGTERM (handlers installed by ``run`` in the main thread), ``stop()`` on the
  loop, ``request_stop()`` from any thread, ``stop_after_s`` or ``stop_after_messages``: the
  collector stops reading, closes the socket, flushes everything it holds and returns the summary.

Why not ``BookRecorder``: it keeps every row for its lifetime and has no way to hand rows over, so
a collector running for days would grow without bound and re-pack all rows at every flush.
``SymbolRecorder`` wires the same parts (synchronizer, sampler, updates recorder, bookTicker
check) through the synchronizer's public observer API and swaps in a fresh sampler and recorder at
each flush, continuing the sampler's grid exactly (see ``SymbolRecorder.take``).

Rows are never written twice: a resync that replays updates already taken (a REST snapshot older
than the last applied event) would repeat ``final_update_id`` values and sample times; those rows
are dropped (counted in ``duplicates_dropped``) so the grain of both tables holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from dagster_project.errors import InvalidRequestError, UnknownSymbolError
from dagster_project.ingest.binance_rest import BinanceRestClient, BinanceRestConfig
from dagster_project.ingest.orderbook import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_STALE_AFTER_S,
    MARKETS,
    BookSampler,
    BookSynchronizer,
    BookTickerCheck,
    BookTickerReport,
    DepthDataError,
    DepthEvent,
    DepthSnapshot,
    DepthUpdateRecorder,
    OrderBook,
    SyncStats,
    decode_book_ticker_payload,
    decode_depth_event_payload,
)
from dagster_project.lake import Lake
from dagster_project.schemas import RAW_TABLES

log = logging.getLogger(__name__)

SOURCE = "binance_stream"
LAYER = "raw"
TABLES = ("depth_snapshots", "depth_updates")
WS_BASE_URLS = {
    "spot": "wss://stream.binance.com:9443",
    "futures_um": "wss://fstream.binance.com",
}
MAX_STREAMS = 1024  # Binance's limit of streams on one connection (spot and USD-M futures)
RECONNECT_RESYNC = "reconnect"  # resync reason when the connection is lost
MALFORMED_RESYNC = "malformed_event"  # resync reason when a depth event cannot be decoded

_DAY_MS = 86_400_000
_ENVELOPE = b'{"stream":"'
_DEPTH, _TICKER = "depth", "book_ticker"


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectorConfig:
    """What to collect, from where, and how often to land it. Defaults suit production spot."""

    # Symbols to collect (upper case); each adds two streams to the one connection.
    symbols: tuple[str, ...] = ("BTCUSDT",)
    # "spot" or "futures_um" (USD-M futures: events carry `pu`, bridging differs slightly).
    market: str = "spot"
    # Websocket base URL; None: Binance's for the market (WS_BASE_URLS). A local server in tests.
    ws_base_url: str | None = None
    # REST client settings for snapshots; None: BinanceRestConfig.preset(market).
    rest: BinanceRestConfig | None = None
    # Sampling cadence of raw/depth_snapshots on the exchange clock, seconds (whole ms).
    cadence_s: float = 1.0
    # Levels per side in a sampled row (at most snapshot_limit).
    levels: int = 50
    # Levels per side of a REST snapshot. Weight: spot 50 (up to 1000; 5000 would cost 250),
    # USD-M futures 20. Fetched once per (re)sync, so a flapping connection costs little.
    snapshot_limit: int = 1000
    # Seconds between flushes to the lake (also at stop and at each UTC midnight).
    flush_every_s: float = 60.0
    # After a symbol's first event of a new UTC day (or the wall clock's midnight), wait this
    # long for the other symbols' first events before the midnight flush.
    midnight_grace_s: float = 2.0
    # No depth event for this long while connected: the book is stale and is resynced.
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    # How often the stale check runs, seconds.
    stale_check_every_s: float = 1.0
    # Reconnect backoff: first wait and ceiling (doubling, +-20% jitter); a connection that stayed
    # up at least reconnect_max_s starts the next backoff from reconnect_initial_s again.
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    # Snapshot retry backoff once the REST client's own retries are exhausted.
    snapshot_retry_initial_s: float = 1.0
    snapshot_retry_max_s: float = 60.0
    # Depth events held per symbol while waiting for a snapshot (oldest dropped first).
    max_buffer: int = DEFAULT_MAX_BUFFER
    # Websocket opening-handshake timeout; keepalive pings (None: off). Binance pings clients
    # too (spot every 20 s, futures every 3 min) and websockets answers them.
    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    # Attempts of the final flush at stop, `final_flush_retry_s` apart, before rows still
    # unwritten are reported in the summary (rows_unwritten) and logged as lost.
    final_flush_attempts: int = 3
    final_flush_retry_s: float = 1.0
    # Stop after this many seconds / websocket messages (tests, benchmarks, bounded runs);
    # None: run until a signal or stop().
    stop_after_s: float | None = None
    stop_after_messages: int | None = None
    # Install SIGINT/SIGTERM handlers while run() runs (only possible in the main thread).
    handle_signals: bool = True
    # The `source` column of every landed row.
    source: str = SOURCE

    def __post_init__(self) -> None:
        symbols = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        object.__setattr__(self, "symbols", tuple(s.upper() for s in symbols))
        if not self.symbols or any(not s.isalnum() for s in self.symbols):
            raise InvalidRequestError(
                f"symbols={self.symbols!r}; expected one or more names like 'BTCUSDT'"
            )
        if len(set(self.symbols)) != len(self.symbols):
            raise InvalidRequestError(f"symbols={self.symbols!r} repeats a symbol")
        if self.market not in MARKETS:
            raise InvalidRequestError(f"unknown market {self.market!r}; expected one of {MARKETS}")
        if 2 * len(self.symbols) > MAX_STREAMS:
            raise InvalidRequestError(
                f"{len(self.symbols)} symbols need {2 * len(self.symbols)} streams; Binance "
                f"allows {MAX_STREAMS} on one connection"
            )
        if self.ws_base_url is not None and not self.ws_base_url.startswith(("ws://", "wss://")):
            raise InvalidRequestError(
                f"ws_base_url={self.ws_base_url!r}; expected a ws:// or wss:// URL"
            )
        if self.rest is not None and self.rest.market != self.market:
            raise InvalidRequestError(
                f"rest config is for market {self.rest.market!r}; expected {self.market!r}"
            )
        if not 1 <= self.levels <= self.snapshot_limit:
            raise InvalidRequestError(
                f"levels={self.levels}; expected 1..snapshot_limit ({self.snapshot_limit})"
            )
        for name in ("flush_every_s", "stale_check_every_s", "reconnect_initial_s"):
            if not getattr(self, name) > 0:
                raise InvalidRequestError(f"{name}={getattr(self, name)}; expected > 0 seconds")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise InvalidRequestError(
                f"reconnect_max_s={self.reconnect_max_s}; expected >= reconnect_initial_s"
            )
        if self.final_flush_attempts < 1:
            raise InvalidRequestError(
                f"final_flush_attempts={self.final_flush_attempts}; expected >= 1"
            )

    def streams(self) -> list[str]:
        """The combined-stream names: ``<sym>@depth@100ms`` and ``<sym>@bookTicker`` per symbol."""
        kinds = ("depth@100ms", "bookTicker")
        return [f"{symbol.lower()}@{kind}" for symbol in self.symbols for kind in kinds]

    def stream_url(self) -> str:
        base = (self.ws_base_url or WS_BASE_URLS[self.market]).rstrip("/")
        return f"{base}/stream?streams={'/'.join(self.streams())}"

    def rest_config(self) -> BinanceRestConfig:
        return self.rest or BinanceRestConfig.preset(self.market)


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


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def collect_depth(
    lake: Lake,
    config: CollectorConfig | None = None,
    *,
    on_flush: Callable[[FlushReport], None] | None = None,
) -> CollectorSummary:
    """Collect until SIGINT/SIGTERM or a configured stop; the synchronous entry for the CLI."""
    return DepthCollector(lake, config, on_flush=on_flush).run_forever()


class DepthCollector:
    """Streams order books into ``raw/depth_snapshots`` and ``raw/depth_updates``; runs once."""

    def __init__(
        self,
        lake: Lake,
        config: CollectorConfig | None = None,
        *,
        on_flush: Callable[[FlushReport], None] | None = None,
    ) -> None:
        self.lake = lake
        self.config = config or CollectorConfig()
        self.on_flush = on_flush
        with BinanceRestClient(self.config.rest_config()) as probe:
            probe.depth_weight(self.config.snapshot_limit)  # raises for a limit Binance refuses
        self.books = {symbol: SymbolRecorder(symbol, self.config) for symbol in self.config.symbols}
        self._routes: dict[bytes, tuple[str, SymbolRecorder]] = {}
        for symbol, book in self.books.items():
            self._routes[f"{symbol.lower()}@depth@100ms".encode()] = (_DEPTH, book)
            self._routes[f"{symbol.lower()}@bookTicker".encode()] = (_TICKER, book)
        # progress, readable from any thread
        self.messages_received = 0
        self.messages = dict.fromkeys((_DEPTH, _TICKER, "other", "malformed"), 0)
        self.connections = self.disconnects = self.connect_failures = 0
        self.flushes = self.flush_failures = self.parts_written = 0
        self.rows_landed = dict.fromkeys(TABLES, 0)
        self.connected = False
        self.stop_reason: str | None = None
        # state of the run
        self._ran = False
        self._stopping = False
        self._connection_id = 0
        self._pending: dict[tuple[str, str, str], list[pl.DataFrame]] = {}
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()  # wakes the REST client's retry sleeps at shutdown
        self._random = random.Random()
        self._started_at = dt.datetime.now(dt.UTC)

    # -- control -------------------------------------------------------------------------------

    def run_forever(self) -> CollectorSummary:
        """``run()`` on a new event loop (signal handlers included when in the main thread)."""
        return asyncio.run(self.run())

    def stop(self, reason: str = "stop()") -> None:
        """Stop reading, flush and return from ``run()``; call on the collector's loop."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping = True
        if self._loop is not None:
            self._stop_event.set()

    def request_stop(self, reason: str = "request_stop()") -> None:
        """``stop()`` from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.stop(reason)
        else:
            loop.call_soon_threadsafe(self.stop, reason)

    async def flush(self, reason: str = "requested") -> FlushReport:
        """Hand every new row to the lake now (while ``run()`` runs, on its loop); rows whose
        write fails are kept for the next flush."""
        async with self._flush_lock:
            self._collect_rows()
            batches = {key: list(frames) for key, frames in self._pending.items()}
            writing = self._loop.run_in_executor(self._io_pool, self._write, batches)
            try:
                results = await asyncio.shield(writing)
            except asyncio.CancelledError:
                # The parts are being written in the IO thread regardless: wait for them and
                # forget what was written, or the final flush would write those rows again.
                self._settle(reason, await writing)
                raise
            return self._settle(reason, results)

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> CollectorSummary:
        """Collect until stopped; returns the summary after the final flush."""
        if self._ran:
            raise InvalidRequestError("a DepthCollector runs once; create a new one to run again")
        self._ran = True
        loop = self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._midnight = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._rest_pool = ThreadPoolExecutor(1, thread_name_prefix="depth-collector-rest")
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix="depth-collector-io")
        self._client = BinanceRestClient(self.config.rest_config(), sleep=self._rest_sleep)
        self._started_at = dt.datetime.now(dt.UTC)
        if self._stopping:  # request_stop() before run()
            self._stop_event.set()
        restore_signals = self._install_signal_handlers(loop)
        if self.config.stop_after_s is not None:
            loop.call_later(self.config.stop_after_s, self.stop, "stop_after_s")
        log.info(
            "collecting %s %s order books from %s into %s (flush every %g s)",
            self.config.market,
            ", ".join(self.config.symbols),
            self.config.stream_url(),
            self.lake.root,
            self.config.flush_every_s,
        )
        tasks: list[asyncio.Task[Any]] = []
        failure: BaseException | None = None
        try:
            await self._check_symbols()
            tasks = [
                asyncio.create_task(self._read_loop(), name="depth-collector-read"),
                asyncio.create_task(self._flush_loop(), name="depth-collector-flush"),
                asyncio.create_task(self._watch_loop(), name="depth-collector-watch"),
            ]
            stopped = asyncio.create_task(self._stop_event.wait())
            done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
            tasks.append(stopped)
            for task in done:
                if task is not stopped and not task.cancelled() and task.exception() is not None:
                    failure = task.exception()
                    self.stop(f"error: {failure!r}")
                    log.error("the collector failed: %r; flushing what it holds", failure)
        finally:
            await self._shutdown(tasks)
            restore_signals()
        if failure is not None:
            raise failure
        summary = self.summary()
        log.info(
            "collector stopped (%s) after %.1f s: %d events applied, resyncs %s, %d snapshots, "
            "%d reconnects, rows landed %s%s",
            summary.stop_reason,
            summary.duration_s,
            summary.events_applied,
            summary.resyncs,
            summary.snapshots_taken,
            summary.reconnects,
            summary.rows_landed,
            "" if summary.ok else f", ROWS NOT WRITTEN {summary.rows_unwritten}",
        )
        return summary

    async def _check_symbols(self) -> None:
        """Fail fast on a symbol the exchange does not list; other REST trouble is not fatal
        here (snapshot fetches retry it)."""
        for symbol in self.config.symbols:
            try:
                await self._loop.run_in_executor(
                    self._rest_pool, self._client.validate_symbol, symbol
                )
            except UnknownSymbolError:
                raise
            except Exception as exc:  # noqa: BLE001 - REST down at start: snapshots will retry
                log.warning("could not validate %s against exchangeInfo yet: %s", symbol, exc)
                return

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Stop reading (closing the socket), cancel snapshot fetches, flush, release threads."""
        self._stopping = True
        if self.stop_reason is None:
            self.stop_reason = "cancelled"
        for task in [*tasks, *self._snapshot_tasks]:
            task.cancel()
        await asyncio.gather(*tasks, *self._snapshot_tasks, return_exceptions=True)
        self.connected = False
        self._closing.set()
        await self._final_flush()
        self._client.close()
        self._rest_pool.shutdown(wait=False, cancel_futures=True)
        self._io_pool.shutdown(wait=True)

    async def _final_flush(self) -> None:
        attempts = self.config.final_flush_attempts
        for attempt in range(1, attempts + 1):
            report = await self.flush("stop")
            if not report.rows_pending:
                return
            if attempt < attempts:
                log.warning(
                    "final flush left %d rows unwritten (attempt %d of %d); retrying in %g s",
                    report.rows_pending,
                    attempt,
                    attempts,
                    self.config.final_flush_retry_s,
                )
                await asyncio.sleep(self.config.final_flush_retry_s)
        log.error(
            "%d rows could not be written to %s after %d attempts and are lost: %s",
            self._pending_rows(),
            self.lake.root,
            attempts,
            {f"{t}/{s}/{d}": sum(f.height for f in fs) for (t, s, d), fs in self._pending.items()},
        )

    # -- reading -------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        url = self.config.stream_url()
        delay = self.config.reconnect_initial_s
        while not self._stopping:
            opened_at: float | None = None
            try:
                async with connect(
                    url,
                    open_timeout=self.config.open_timeout_s,
                    ping_interval=self.config.ping_interval_s,
                    ping_timeout=self.config.ping_timeout_s,
                    close_timeout=2.0,
                    compression=None,
                    max_queue=1024,
                ) as websocket:
                    opened_at = time.monotonic()
                    self._on_connected()
                    await self._read(websocket)
                    why = "stopped reading"
            except (WebSocketException, OSError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if opened_at is None:
                self.connect_failures += 1
                log.warning("could not connect to %s (%s)", url, why)
            else:
                self._on_disconnected(why)
                if time.monotonic() - opened_at >= self.config.reconnect_max_s:
                    delay = self.config.reconnect_initial_s
            if self._stopping:
                return
            wait = delay * self._random.uniform(0.8, 1.2)
            log.info("reconnecting in %.2f s", wait)
            await self._sleep_unless_stopping(wait)
            delay = min(2 * delay, self.config.reconnect_max_s)

    async def _read(self, websocket: ClientConnection) -> None:
        recv = websocket.recv
        handle = self._handle
        while not self._stopping:
            payload = await recv(decode=False)
            handle(payload, time.time_ns())

    def _on_connected(self) -> None:
        self.connections += 1
        self._connection_id += 1
        self.connected = True
        for book in self.books.values():
            book.connection_events = 0
        log.info(
            "connected to the %s stream (%d streams)%s",
            self.config.market,
            2 * len(self.books),
            f"; reconnect {self.connections - 1}" if self.connections > 1 else "",
        )

    def _on_disconnected(self, why: str) -> None:
        self.connected = False
        self._connection_id += 1  # snapshots fetched for the lost connection are discarded
        if not self._stopping:
            self.disconnects += 1
            log.warning("websocket connection lost (%s); resyncing every book", why)
            for book in self.books.values():
                book.sync.request_resync(RECONNECT_RESYNC, f"websocket connection lost ({why})")

    def _handle(self, payload: bytes, received_ns: int) -> None:
        """Route one message by its stream name (no full JSON parse before the typed decode)."""
        self.messages_received += 1
        route = None
        if payload.startswith(_ENVELOPE):
            route = self._routes.get(payload[11 : payload.find(b'"', 11)])
        if route is None:
            self.messages["other"] += 1
            log.debug("ignoring message %r", payload[:120])
        else:
            kind, book = route
            self.messages[kind] += 1
            try:
                if kind is _DEPTH:
                    self._on_event(book, decode_depth_event_payload(payload, received_ns))
                else:
                    book.tickers.on_ticker(decode_book_ticker_payload(payload, received_ns))
            except (DepthDataError, InvalidRequestError) as exc:
                self.messages["malformed"] += 1
                log.error("%s: bad %s message: %s", book.symbol, kind, exc)
                if kind is _DEPTH:
                    book.sync.request_resync(MALFORMED_RESYNC, str(exc))
        limit = self.config.stop_after_messages
        if limit is not None and self.messages_received >= limit:
            self.stop("stop_after_messages")

    def _on_event(self, book: SymbolRecorder, event: DepthEvent) -> None:
        book.connection_events += 1
        sync = book.sync
        sync.on_event(event)
        day = event.event_time_ms // _DAY_MS
        if day != book.day:
            if book.day is not None and day > book.day:
                self._midnight.set()
            book.day = day
        if sync.needs_snapshot:
            self._maybe_fetch(book)

    # -- snapshots -----------------------------------------------------------------------------

    def _maybe_fetch(self, book: SymbolRecorder) -> None:
        if (
            book.fetching
            or self._stopping
            or not self.connected
            or book.connection_events == 0  # Binance: buffer the stream first, then fetch
            or not book.sync.needs_snapshot
        ):
            return
        book.fetching = True
        task = asyncio.create_task(self._fetch_snapshot(book), name=f"snapshot-{book.symbol}")
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _fetch_snapshot(self, book: SymbolRecorder) -> None:
        """Fetch and load snapshots until the book bridges the stream (or the connection that
        asked for it is lost); failures and snapshots that do not bridge back off."""
        connection = self._connection_id
        setbacks = 0
        try:
            while (
                not self._stopping
                and connection == self._connection_id
                and book.sync.needs_snapshot
            ):
                if setbacks:
                    await self._sleep_unless_stopping(self._snapshot_backoff(setbacks))
                    if self._stopping or connection != self._connection_id:
                        return
                try:
                    snapshot = await self._loop.run_in_executor(
                        self._rest_pool, self._rest_snapshot, book.symbol
                    )
                except Exception as exc:  # noqa: BLE001 - any failure: count, back off, retry
                    book.snapshot_failures += 1
                    setbacks += 1
                    log.warning(
                        "%s: depth snapshot failed (%s: %s); retrying in %.2f s",
                        book.symbol,
                        type(exc).__name__,
                        exc,
                        self._snapshot_backoff(setbacks),
                    )
                    continue
                book.snapshots_taken += 1
                if connection != self._connection_id:
                    log.info(
                        "%s: snapshot %d belongs to a lost connection; discarded",
                        book.symbol,
                        snapshot.last_update_id,
                    )
                    return
                book.sync.on_snapshot(snapshot)
                if book.sync.needs_snapshot:
                    setbacks += 1
                    log.info(
                        "%s: snapshot %d did not bridge the buffered stream; fetching another in "
                        "%.2f s",
                        book.symbol,
                        snapshot.last_update_id,
                        self._snapshot_backoff(setbacks),
                    )
        finally:
            book.fetching = False

    def _snapshot_backoff(self, setbacks: int) -> float:
        initial, ceiling = self.config.snapshot_retry_initial_s, self.config.snapshot_retry_max_s
        return min(ceiling, initial * 2 ** (setbacks - 1))

    def _rest_snapshot(self, symbol: str) -> DepthSnapshot:
        """Runs in the REST thread."""
        rest = self._client.depth_snapshot(symbol, self.config.snapshot_limit)
        return DepthSnapshot(rest.last_update_id, rest.bids, rest.asks, time.time_ns())

    def _rest_sleep(self, seconds: float) -> None:
        """The REST client's sleep: cut short when the collector shuts down."""
        self._closing.wait(seconds)

    # -- timers --------------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        """The stale check: a book whose depth stream went silent while connected is resynced."""
        while True:
            await asyncio.sleep(self.config.stale_check_every_s)
            if not self.connected:
                continue
            now_ns = time.time_ns()
            for book in self.books.values():
                book.sync.check_stale(now_ns)

    async def _flush_loop(self) -> None:
        period, grace = self.config.flush_every_s, self.config.midnight_grace_s
        loop = self._loop
        next_flush = loop.time() + period
        while True:
            to_midnight = _seconds_to_utc_midnight(time.time()) + grace
            timeout = max(0.0, min(next_flush - loop.time(), to_midnight))
            try:
                await asyncio.wait_for(self._midnight.wait(), timeout)
                reason = "utc_midnight"
                await asyncio.sleep(grace)  # the other symbols' first events of the new day
            except TimeoutError:
                reason = "utc_midnight" if timeout == to_midnight else "periodic"
            self._midnight.clear()
            await self.flush(reason)
            next_flush = loop.time() + period

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    # -- flushing ------------------------------------------------------------------------------

    def _collect_rows(self) -> None:
        """Move every book's new rows into ``_pending``, split by table, symbol and UTC date."""
        for symbol, book in self.books.items():
            for table, frame in book.take(self.config.source).items():
                if frame.height == 0:
                    continue
                time_column = RAW_TABLES[table][1]
                dated = frame.with_columns(pl.col(time_column).dt.date().alias("_date"))
                for (day,), part in dated.partition_by(
                    "_date", as_dict=True, maintain_order=True
                ).items():
                    key = (table, symbol, day.isoformat())
                    self._pending.setdefault(key, []).append(part.drop("_date"))

    def _write(
        self, batches: dict[tuple[str, str, str], list[pl.DataFrame]]
    ) -> list[tuple[tuple[str, str, str], Path | None, int]]:
        """Runs in the IO thread: one ``append_part`` per (table, symbol, date)."""
        results: list[tuple[tuple[str, str, str], Path | None, int]] = []
        for key, frames in batches.items():
            table, symbol, day = key
            frame = pl.concat(frames) if len(frames) > 1 else frames[0]
            keys = {"symbol": symbol, "date": day}
            try:
                label = self._part_label(table, keys, frame)
                path = self.lake.append_part(LAYER, table, keys, frame, label)
            except Exception as exc:  # noqa: BLE001 - keep the rows whatever went wrong
                log.error(
                    "could not write %d %s rows of %s %s (%s: %s); keeping them for the next flush",
                    frame.height,
                    table,
                    symbol,
                    day,
                    type(exc).__name__,
                    exc,
                )
                results.append((key, None, frame.height))
            else:
                results.append((key, path, frame.height))
        return results

    def _part_label(self, table: str, keys: dict[str, str], frame: pl.DataFrame) -> str:
        """``c<first ms>-<last ms>``, zero-padded so that names sort by time; ``_<n>`` is added in
        the (practically impossible) case of a part with the same times already there."""
        times = frame[RAW_TABLES[table][1]].cast(pl.Int64) // 1000
        label = f"c{times.min():013d}-{times.max():013d}"
        folder = self.lake.partition_dir(LAYER, table, keys)
        unique, n = label, 0
        while (folder / f"part-{unique}.parquet").exists():
            n += 1
            unique = f"{label}_{n}"
        return unique

    def _settle(
        self, reason: str, results: list[tuple[tuple[str, str, str], Path | None, int]]
    ) -> FlushReport:
        """Back on the loop: forget the rows that were written, keep the rest."""
        self.flushes += 1
        rows = dict.fromkeys(TABLES, 0)
        parts: list[Path] = []
        failed = 0
        for key, path, height in results:
            table, symbol, _ = key
            if path is None:
                failed += 1
                continue
            del self._pending[key]
            parts.append(path)
            rows[table] += height
            self.rows_landed[table] += height
            self.books[symbol].rows_landed[table] += height
        self.parts_written += len(parts)
        self.flush_failures += failed
        report = FlushReport(
            reason, tuple(parts), rows, failed, self._pending_rows(), dict(self.rows_landed)
        )
        if parts or failed:
            log.info(
                "flush (%s): %d parts, %d snapshot rows, %d update rows%s; totals %s; %s",
                reason,
                len(parts),
                rows["depth_snapshots"],
                rows["depth_updates"],
                f", {failed} FAILED ({report.rows_pending} rows kept)" if failed else "",
                self.rows_landed,
                self._progress(),
            )
        if self.on_flush is not None:
            self.on_flush(report)
        return report

    def _pending_rows(self) -> int:
        return sum(frame.height for frames in self._pending.values() for frame in frames)

    def _progress(self) -> str:
        return "; ".join(
            f"{symbol} {book.sync.state.value}, {book.sync.stats.events_applied} events, "
            f"{book.sync.stats.resync_count} resyncs"
            for symbol, book in self.books.items()
        )

    # -- summary -------------------------------------------------------------------------------

    def summary(self) -> CollectorSummary:
        per_symbol = {symbol: book.summary() for symbol, book in self.books.items()}
        resyncs: dict[str, int] = {}
        for book in per_symbol.values():
            for reason, count in book.resyncs.items():
                resyncs[reason] = resyncs.get(reason, 0) + count
        unwritten = dict.fromkeys(TABLES, 0)
        for (table, _, _), frames in self._pending.items():
            unwritten[table] += sum(frame.height for frame in frames)
        client = getattr(self, "_client", None)
        return CollectorSummary(
            symbols=self.config.symbols,
            market=self.config.market,
            started_at=self._started_at,
            stopped_at=dt.datetime.now(dt.UTC),
            stop_reason=self.stop_reason or "running",
            messages=dict(self.messages),
            events_applied=sum(s.events_applied for s in per_symbol.values()),
            resyncs=resyncs,
            snapshots_taken=sum(s.snapshots_taken for s in per_symbol.values()),
            snapshot_failures=sum(s.snapshot_failures for s in per_symbol.values()),
            rest_retries=client.stats.retries if client is not None else 0,
            connections=self.connections,
            disconnects=self.disconnects,
            connect_failures=self.connect_failures,
            flushes=self.flushes,
            flush_failures=self.flush_failures,
            parts_written=self.parts_written,
            rows_landed=dict(self.rows_landed),
            rows_unwritten=unwritten,
            duplicates_dropped=sum(s.duplicates_dropped for s in per_symbol.values()),
            per_symbol=per_symbol,
        )

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """SIGINT/SIGTERM stop the collector cleanly; returns a function restoring the old ones."""
        main = threading.current_thread() is threading.main_thread()
        if not (self.config.handle_signals and main):
            return lambda: None
        installed: list[tuple[signal.Signals, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                log.debug("no %s handler installed: %s", sig.name, exc)
                continue
            installed.append((sig, previous))

        def restore() -> None:
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)

        return restore

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("%s received again; already stopping (flushing)", sig.name)
            return
        log.warning("%s received; stopping, flushing and closing", sig.name)
        self.stop(f"signal {sig.name}")


# --------------------------------------------------------------------------------------------
# One symbol
# --------------------------------------------------------------------------------------------


class SymbolRecorder:
    """One symbol's synchronizer, sampler, updates recorder and bookTicker check (the parts of
    ``orderbook.BookRecorder``), with the rows handed over and forgotten at every ``take``."""

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


def _seconds_to_utc_midnight(now_s: float) -> float:
    return _DAY_MS / 1000 - now_s % (_DAY_MS / 1000)


__all__ = [
    "SOURCE",
    "WS_BASE_URLS",
    "CollectorConfig",
    "CollectorSummary",
    "DepthCollector",
    "FlushReport",
    "SymbolRecorder",
    "SymbolSummary",
    "collect_depth",
]
