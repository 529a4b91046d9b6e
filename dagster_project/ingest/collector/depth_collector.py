"""``DepthCollector``: the live collector's event loop (connection, snapshots, timers, flushes,
signals); see the package docstring for how it works."""

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
from pathlib import Path
from typing import Any

import polars as pl
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from dagster_project.core.errors import InvalidRequestError, UnknownSymbolError
from dagster_project.core.lake import Lake
from dagster_project.ingest.binance_rest import BinanceRestClient
from dagster_project.ingest.collector.config import CollectorConfig
from dagster_project.ingest.collector.parts import (
    TABLES,
    PartKey,
    Written,
    add_pending,
    write_parts,
)
from dagster_project.ingest.collector.summary import CollectorSummary, FlushReport
from dagster_project.ingest.collector.symbol import SymbolRecorder
from dagster_project.ingest.orderbook.messages import (
    DepthDataError,
    DepthEvent,
    DepthSnapshot,
    decode_book_ticker_payload,
    decode_depth_event_payload,
)

log = logging.getLogger(__name__)

RECONNECT_RESYNC = "reconnect"  # resync reason when the connection is lost
MALFORMED_RESYNC = "malformed_event"  # resync reason when a depth event cannot be decoded

_DAY_MS = 86_400_000
_ENVELOPE = b'{"stream":"'
_DEPTH, _TICKER = "depth", "book_ticker"


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
        self._pending: dict[PartKey, list[pl.DataFrame]] = {}
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
            writing = self._loop.run_in_executor(self._io_pool, write_parts, self.lake, batches)
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
            add_pending(self._pending, symbol, book.take(self.config.source))

    def _settle(self, reason: str, results: list[Written]) -> FlushReport:
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


def _seconds_to_utc_midnight(now_s: float) -> float:
    return _DAY_MS / 1000 - now_s % (_DAY_MS / 1000)
