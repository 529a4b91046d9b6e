"""Replay recorded Binance websocket streams through the live order-book code.

A recording is one message a line, ``<local receive time, epoch ns> <json>``, gzip-compressed or
plain; several files given in order form one continuous stream (a day's file continues the
previous one). Lines are combined-stream envelopes ``{"stream": "btcusdt@depth@100ms", "data":
{...}}`` for ``<sym>@depth`` (diff depth at any speed: ``@depth``, ``@depth@0ms``, ``@100ms``, ...;
not the partial-book ``@depth20``), ``@bookTicker``, ``@trade`` and ``@aggTrade``, plus REST
``/depth`` snapshots.

A snapshot body (``{"lastUpdateId": ..., "bids": ..., "asks": ...}``) names no symbol. Recorded in
an envelope whose ``stream`` is its request path or URL (``/fapi/v1/depth?symbol=ETHUSDT&...``) it
is tied to that symbol, and another symbol's snapshot is skipped. A bare body is taken as the
replayed symbol's only while the recording has shown no other symbol's depth stream: USD-M futures
update ids are shared across symbols, so another symbol's snapshot can bridge this symbol's
stream and silently start its book from the wrong levels. A bare snapshot after another symbol's
depth stream appeared is refused (counted ``untied_snapshot``), and another symbol's depth stream
appearing after a bare snapshot was loaded fails the replay.

Every depth event goes through ``recorder.BookRecorder``, the same synchronizer, book, sampler
and recorder a live collector runs; the recording's receive times drive the stale-stream check.
``@aggTrade`` messages become ``raw/agg_trades`` rows. ``@trade`` messages are counted, not landed:
they are single fills with their own ids, and Binance's aggregate-trade ids cannot be rebuilt from
them, so they would break the ``agg_trade_id`` grain next to REST and Vision rows.

A replay that applies no depth event raises ``ReplayError`` with the counts: nothing to land is
a wrong symbol, a recording without a snapshot or files out of order, never a success.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
import polars as pl

from dagster_project.core.errors import CandlelakeError, SourceDataError
from dagster_project.ingest.binance_rest import agg_trades_from_binance_rows
from dagster_project.ingest.orderbook.messages import (
    DepthDataError,
    DepthEvent,
    DepthSnapshot,
    decode_book_ticker_payload,
    decode_depth_event_payload,
)
from dagster_project.ingest.orderbook.recorder import BookRecorder
from dagster_project.ingest.orderbook.sync import (
    DEFAULT_STALE_AFTER_S,
    BookSynchronizer,
    SyncOutcome,
    SyncStats,
)
from dagster_project.ingest.orderbook.ticker_check import BookTickerReport

log = logging.getLogger(__name__)

SOURCE = "binance_replay"

# Called after a depth event was buffered while the synchronizer needs a snapshot: return one to
# load (what a live collector would fetch from REST), or None to keep waiting.
SnapshotSource = Callable[[BookSynchronizer, DepthEvent], DepthSnapshot | None]

_ENVELOPE = b'{"stream":"'
_SNAPSHOT_BODY = b'{"lastUpdateId"'
# Message kinds; the first seven are the keys of ReplayResult.messages.
_DEPTH, _TICKER, _TRADE, _AGG_TRADE = "depth", "book_ticker", "trade", "agg_trade"
_SNAPSHOT, _UNTIED, _OTHER = "snapshot", "untied_snapshot", "other"
_BARE_SNAPSHOT = "bare_snapshot"  # counted as snapshot or untied_snapshot
_OTHER_DEPTH = "other_depth"  # another symbol's diff-depth stream, counted as other
COUNTED = (_DEPTH, _TICKER, _TRADE, _AGG_TRADE, _SNAPSHOT, _UNTIED, _OTHER)


class ReplayError(CandlelakeError):
    """A recording could not be replayed into a book: nothing applied, or snapshots of unknown
    symbol in a recording of several symbols."""


@dataclass(frozen=True)
class ReplayResult:
    snapshots: pl.DataFrame  # DEPTH_SNAPSHOT_SCHEMA, source "binance_replay"
    updates: pl.DataFrame  # DEPTH_UPDATE_SCHEMA: every applied event, received_at from the line
    agg_trades: pl.DataFrame  # AGG_TRADE_SCHEMA: the @aggTrade messages, by agg_trade_id
    book_tickers: BookTickerReport  # the book against Binance's own best bid/ask
    stats: SyncStats  # the synchronizer's counters
    messages: dict[str, int]  # lines by kind (COUNTED): another symbol's lines count as other

    def counts(self) -> str:
        """One line: events applied, dropped, resyncs and lines by kind."""
        return _counts_line(self.stats, self.messages)


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
    """Rebuild ``symbol``'s book from recorded streams; sample it and keep every applied event.

    Raises ``ReplayError`` when no depth event was applied.
    """
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
    router = _Router(sync.symbol)
    route = router.kind
    counts = dict.fromkeys(COUNTED, 0)
    agg_trades: list[dict] = []
    bare_snapshot_loaded = False
    ambiguous = False  # another symbol's depth stream appeared after a bare snapshot was loaded
    for received_ns, payload in messages:
        kind = route(payload)
        sync.check_stale(received_ns)
        if kind == _DEPTH:
            counts[_DEPTH] += 1
            event = decode_depth_event_payload(payload, received_ns)
            sync.on_event(event)
            if snapshot_source is not None and sync.needs_snapshot:
                snapshot = snapshot_source(sync, event)
                if snapshot is not None:
                    sync.on_snapshot(snapshot)
        elif kind == _TICKER:
            counts[_TICKER] += 1
            if check_book_ticker:
                recorder.on_ticker(decode_book_ticker_payload(payload, received_ns))
        elif kind == _AGG_TRADE:
            counts[_AGG_TRADE] += 1
            agg_trades.append(_agg_trade_body(payload))
        elif kind == _SNAPSHOT:
            counts[_SNAPSHOT] += 1
            sync.on_snapshot(DepthSnapshot.from_binance(payload, received_ns))
        elif kind == _BARE_SNAPSHOT:
            if router.other_depth:
                counts[_UNTIED] += 1
                log.warning(
                    "%s: a /depth snapshot with no symbol in a recording that also holds %s "
                    "depth streams; not used",
                    sync.symbol,
                    ", ".join(sorted(router.other_depth)),
                )
                continue
            counts[_SNAPSHOT] += 1
            outcome = sync.on_snapshot(DepthSnapshot.from_binance(payload, received_ns))
            bare_snapshot_loaded |= outcome is not SyncOutcome.DROPPED
        else:
            counts[kind if kind in counts else _OTHER] += 1
            ambiguous |= kind == _OTHER_DEPTH and bare_snapshot_loaded
    stats = sync.stats
    log.info(
        "replayed %s: %s; %d snapshot rows", sync.symbol, _counts_line(stats, counts),
        len(recorder.sampler),
    )  # fmt: skip
    if stats.events_applied == 0:
        raise ReplayError(_nothing_applied(sync.symbol, stats, counts, router.other_depth))
    if ambiguous:
        raise ReplayError(
            f"{', '.join(sorted(router.other_depth))} depth events after a snapshot not tied to a "
            f"symbol was loaded as {sync.symbol}'s: the recording holds several symbols, so that "
            "snapshot may be another's; record /depth snapshots in an envelope whose stream is "
            "the request path (/api/v3/depth?symbol=...)"
        )
    return ReplayResult(
        snapshots=recorder.snapshots_frame(SOURCE),
        updates=recorder.updates_frame(SOURCE),
        agg_trades=_agg_trades_frame(agg_trades, sync.symbol),
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


class _Router:
    """Classifies a recorded message by its stream name without decoding the JSON; a stream
    name is classified once and remembered."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol.upper()
        self.other_depth: set[str] = set()  # symbols of the other diff-depth streams seen
        self._name = symbol.lower().encode()
        self._kinds: dict[bytes, str] = {}
        self._start = len(_ENVELOPE)

    def kind(self, payload: bytes) -> str:
        if payload.startswith(_ENVELOPE):
            stream = payload[self._start : payload.find(b'"', self._start)]
            kind = self._kinds.get(stream)
            if kind is None:
                kind = self._kinds[stream] = self._stream_kind(stream)
            return kind
        if payload.startswith(_SNAPSHOT_BODY):
            return _BARE_SNAPSHOT
        return self._bare_kind(payload)

    def _stream_kind(self, stream: bytes) -> str:
        if b"/depth" in stream:  # a REST snapshot recorded with its request path or URL
            return self._snapshot_kind(stream.decode(errors="replace"))
        name, _, channel = stream.partition(b"@")
        diff_depth = channel == b"depth" or channel.startswith(b"depth@")  # not @depth20
        if name != self._name:
            if diff_depth:
                self.other_depth.add(name.decode(errors="replace").upper())
                return _OTHER_DEPTH
            return _OTHER
        if diff_depth:
            return _DEPTH
        return {b"bookTicker": _TICKER, b"trade": _TRADE, b"aggTrade": _AGG_TRADE}.get(
            channel, _OTHER
        )

    def _snapshot_kind(self, request: str) -> str:
        symbols = parse_qs(urlsplit(request).query).get("symbol", [])
        if not symbols:
            raise DepthDataError(
                f"recorded /depth snapshot request {request!r} names no symbol; expected "
                "'.../depth?symbol=<SYMBOL>&...'"
            )
        return _SNAPSHOT if symbols[0].upper() == self.symbol else _OTHER

    def _bare_kind(self, payload: bytes) -> str:
        """A message without an envelope (or in another key order): decode it to classify it."""
        try:
            message = msgspec.json.decode(payload)
        except msgspec.DecodeError as exc:
            raise DepthDataError(f"cannot parse recorded message {payload[:120]!r}: {exc}") from exc
        if not isinstance(message, dict):
            return _OTHER
        if "lastUpdateId" in message:
            return _BARE_SNAPSHOT
        event, symbol = message.get("e"), message.get("s")
        if event == "depthUpdate":
            if symbol == self.symbol:
                return _DEPTH
            self.other_depth.add(str(symbol))
            return _OTHER_DEPTH
        if symbol == self.symbol:
            return {"aggTrade": _AGG_TRADE, "trade": _TRADE}.get(event, _OTHER)
        return _OTHER


def _agg_trade_body(payload: bytes) -> dict:
    try:
        message = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise DepthDataError(f"cannot parse aggTrade {payload[:120]!r}: {exc}") from exc
    body = message.get("data", message) if isinstance(message, dict) else None
    if not isinstance(body, dict):
        raise DepthDataError(f"aggTrade message {payload[:120]!r}; expected a JSON object")
    return body


def _agg_trades_frame(bodies: list[dict], symbol: str) -> pl.DataFrame:
    """``AGG_TRADE_SCHEMA`` rows by id; an id recorded twice (a reconnect overlap) kept once."""
    frame = agg_trades_from_binance_rows(bodies, SOURCE)
    unique = frame.unique("agg_trade_id", keep="first", maintain_order=True).sort("agg_trade_id")
    if unique.height < frame.height:
        log.info("%s: %d repeated aggTrade messages dropped", symbol, frame.height - unique.height)
    return unique


def _counts_line(stats: SyncStats, counts: dict[str, int]) -> str:
    lines = ", ".join(f"{kind} {n}" for kind, n in counts.items())
    return (
        f"applied {stats.events_applied}, dropped {stats.events_dropped}, "
        f"buffered {stats.events_buffered}, resyncs {stats.resync_count} {stats.resyncs or ''}"
        f"; lines: {lines}"
    )


def _nothing_applied(
    symbol: str, stats: SyncStats, counts: dict[str, int], other_depth: set[str]
) -> str:
    why = []
    if counts[_DEPTH] == 0:
        others = f" (depth streams of {', '.join(sorted(other_depth))})" if other_depth else ""
        why.append(f"the recording holds no {symbol} depth stream{others}")
    if counts[_UNTIED]:
        why.append(
            f"{counts[_UNTIED]} snapshots not tied to a symbol in a recording of several symbols "
            "were not used (record them with their request path)"
        )
    if counts[_SNAPSHOT] == 0 and not counts[_UNTIED]:
        why.append(f"the recording holds no {symbol} REST /depth snapshot")
    elif stats.snapshots_used and counts[_DEPTH]:
        why.append("no event bridged a snapshot (files out of order, or a snapshot too old)")
    return (
        f"no {symbol} depth event applied ({_counts_line(stats, counts)}): "
        f"{'; '.join(why) or 'see the counts'}"
    )
