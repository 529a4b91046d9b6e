"""Replay recorded Binance websocket streams through the live order-book code.

A recording is one message a line, ``<local receive time, epoch ns> <json>``, gzip-compressed or
plain; several files given in order form one continuous stream (a day's file continues the
previous one). Lines are combined-stream envelopes ``{"stream": "btcusdt@depth@100ms", "data":
{...}}`` for ``@depth`` (diff depth), ``@bookTicker`` and ``@trade``/``@aggTrade``, plus bare REST
``/depth`` snapshots ``{"lastUpdateId": ..., "bids": ..., "asks": ...}`` (for the recorded symbol).

Every depth event goes through ``orderbook.BookRecorder``, the same synchronizer, book, sampler
and recorder a live collector runs; the recording's receive times drive the stale-stream check.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl

from dagster_project.errors import SourceDataError
from dagster_project.ingest.orderbook import (
    DEFAULT_STALE_AFTER_S,
    BookRecorder,
    BookSynchronizer,
    BookTickerReport,
    DepthDataError,
    DepthEvent,
    DepthSnapshot,
    SyncStats,
    decode_book_ticker_payload,
    decode_depth_event_payload,
)

log = logging.getLogger(__name__)

SOURCE = "binance_replay"

# Called after a depth event was buffered while the synchronizer needs a snapshot: return one to
# load (what a live collector would fetch from REST), or None to keep waiting.
SnapshotSource = Callable[[BookSynchronizer, DepthEvent], DepthSnapshot | None]

_ENVELOPE = b'{"stream":"'
_SNAPSHOT = b'{"lastUpdateId"'
_DEPTH, _TICKER, _TRADE = "depth", "book_ticker", "trade"


@dataclass(frozen=True)
class ReplayResult:
    snapshots: pl.DataFrame  # DEPTH_SNAPSHOT_SCHEMA, source "binance_replay"
    updates: pl.DataFrame  # DEPTH_UPDATE_SCHEMA: every applied event, received_at from the line
    book_tickers: BookTickerReport  # the book against Binance's own best bid/ask
    stats: SyncStats  # the synchronizer's counters
    messages: dict[str, int]  # lines by kind: depth, book_ticker, trade, snapshot, other


def replay(
    paths: Iterable[str | Path],
    symbol: str,
    cadence_s: float = 1.0,
    levels: int = 50,
    market: str = "spot",
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    snapshot_source: SnapshotSource | None = None,
    check_book_ticker: bool = True,
) -> ReplayResult:
    """Rebuild ``symbol``'s book from recorded streams; sample it and keep every applied event."""
    return replay_messages(
        read_recording(paths),
        symbol,
        cadence_s,
        levels,
        market,
        stale_after_s=stale_after_s,
        snapshot_source=snapshot_source,
        check_book_ticker=check_book_ticker,
    )


def replay_messages(
    messages: Iterable[tuple[int, bytes]],
    symbol: str,
    cadence_s: float = 1.0,
    levels: int = 50,
    market: str = "spot",
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    snapshot_source: SnapshotSource | None = None,
    check_book_ticker: bool = True,
) -> ReplayResult:
    """``replay`` over ``(receive ns, json bytes)`` messages, e.g. a filtered ``read_recording``."""
    recorder = BookRecorder(
        symbol,
        market,
        cadence_s,
        levels,
        stale_after_s=stale_after_s,
        check_book_ticker=check_book_ticker,
    )
    sync = recorder.sync
    route = _router(symbol)
    counts = dict.fromkeys((_DEPTH, _TICKER, _TRADE, "snapshot", "other"), 0)
    for received_ns, payload in messages:
        kind = route(payload)
        counts[kind] += 1
        sync.check_stale(received_ns)
        if kind == _DEPTH:
            event = decode_depth_event_payload(payload, received_ns)
            sync.on_event(event)
            if snapshot_source is not None and sync.needs_snapshot:
                snapshot = snapshot_source(sync, event)
                if snapshot is not None:
                    sync.on_snapshot(snapshot)
        elif kind == _TICKER:
            if check_book_ticker:
                recorder.on_ticker(decode_book_ticker_payload(payload, received_ns))
        elif kind == "snapshot":
            sync.on_snapshot(DepthSnapshot.from_binance(payload, received_ns))
    stats = sync.stats
    log.info(
        "replayed %s: %s; %d events applied, %d resyncs %s, %d snapshot rows",
        sync.symbol,
        counts,
        stats.events_applied,
        stats.resync_count,
        stats.resyncs,
        len(recorder.sampler),
    )
    return ReplayResult(
        snapshots=recorder.snapshots_frame(SOURCE),
        updates=recorder.updates_frame(SOURCE),
        book_tickers=recorder.ticker_report(),
        stats=stats,
        messages=counts,
    )


def read_recording(paths: Iterable[str | Path]) -> Iterator[tuple[int, bytes]]:
    """``(receive ns, json bytes)`` for every line of the files, in order (``.gz`` or plain)."""
    for path in map(Path, paths):
        for number, line in enumerate(_lines(path), 1):
            received, sep, payload = line.partition(b" ")
            if not sep or not received.isdigit():
                if not line.strip():
                    continue
                raise SourceDataError(
                    f"{path}:{number}: expected '<receive time ns> <json>', got {line[:80]!r}"
                )
            yield int(received), payload


def _lines(path: Path, chunk_bytes: int = 1 << 22) -> Iterator[bytes]:
    """The file's lines, read in large chunks (twice as fast as GzipFile's own line iterator)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        rest = b""
        while chunk := file.read(chunk_bytes):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def _router(symbol: str) -> Callable[[bytes], str]:
    """Classifies a message by its stream name without decoding the JSON."""
    prefix = symbol.lower().encode()
    kinds = {
        prefix + b"@depth": _DEPTH,
        prefix + b"@depth@100ms": _DEPTH,
        prefix + b"@depth@250ms": _DEPTH,
        prefix + b"@depth@500ms": _DEPTH,
        prefix + b"@bookTicker": _TICKER,
        prefix + b"@trade": _TRADE,
        prefix + b"@aggTrade": _TRADE,
    }
    start = len(_ENVELOPE)

    def route(payload: bytes) -> str:
        if payload.startswith(_ENVELOPE):
            return kinds.get(payload[start : payload.find(b'"', start)], "other")
        if payload.startswith(_SNAPSHOT):
            return "snapshot"
        return _bare_kind(payload, symbol.upper())

    return route


def _bare_kind(payload: bytes, symbol: str) -> str:
    """A message without an envelope (or in another key order): decode it to classify it."""
    try:
        message = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise DepthDataError(f"cannot parse recorded message {payload[:120]!r}: {exc}") from exc
    if not isinstance(message, dict):
        return "other"
    if "lastUpdateId" in message:
        return "snapshot"
    if message.get("e") == "depthUpdate" and message.get("s") == symbol:
        return _DEPTH
    return "other"
