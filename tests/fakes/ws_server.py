"""A local stand-in for Binance's combined websocket stream, for tests and benchmarks.

``FakeBinanceStream(messages, ...)`` listens on 127.0.0.1 (port 0) in a background thread (use it
as a context manager) and plays ``(receive ns, json bytes)`` messages, a recording read by
``orderbook.replay.read_recording`` or ``synthetic_depth_messages``, to clients of
``/stream?streams=<a>/<b>/...`` the way Binance's combined stream sends them: one text frame per
``{"stream": ..., "data": ...}`` envelope, only the streams asked for, in recording order.

- ``speed``: None plays as fast as the client reads; ``x`` plays ``x`` times real time (the
  receive-time gaps of the recording divided by ``x``, from each connection's first message).
- ``drops``: ``Drop(after=K, skip=M)`` closes the n-th connection after it was sent K messages
  (a close frame 1001, or with ``abrupt=True`` a TCP cut); the next connection resumes M recording
  messages later, so the stream has a gap. Connections are served one at a time, in order; the
  last one is held open once the messages run out (``finished`` is set then), until the client
  leaves or the server stops.
- **REST snapshots that match the stream.** With ``rest=True`` the stream owns a ``FakeBinance``
  (``stream.rest``, started and stopped with it; pass a running ``FakeBinance`` to use that one)
  whose ``/depth`` answers follow the stream. The first request for a symbol gets its first
  snapshot: the recording's own snapshot line (bare ``{"lastUpdateId": ...}`` lines are served
  over REST, never sent) or the ``snapshots`` given. Every later request gets the exchange's book
  as of the last depth event the stream has passed (sent, or skipped in a gap): the first snapshot
  with every later event applied (``OrderBook``), top ``snapshot_levels`` levels a side,
  ``lastUpdateId`` = that event's ``u``. A client that buffers first and then fetches can always
  bridge it (spot: a later event has ``U = lastUpdateId + 1``; USD-M futures: the event with
  ``u = lastUpdateId`` straddles it). ``served`` lists every body answered.
- ``connections`` records what each connection asked for and got; ``plan(streams)`` and
  ``played(streams)`` say in advance which messages a client of those streams receives.

Nothing here contacts Binance.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from dagster_project.ingest.orderbook.book import OrderBook
from dagster_project.ingest.orderbook.messages import DepthDataError, decode_depth_event_payload
from dagster_project.ingest.orderbook.replay import read_recording
from tests.fakes.binance_server import FakeBinance

Message = tuple[int, bytes]  # (local receive time in epoch ns, the JSON line)

_ENVELOPE = b'{"stream":"'
_SNAPSHOT = b'{"lastUpdateId"'


@dataclass(frozen=True)
class Drop:
    """Close a connection after ``after`` messages were sent on it; the next connection resumes
    ``skip`` recording messages later (those are never sent: a gap in the stream)."""

    after: int
    skip: int = 0
    abrupt: bool = False  # cut the TCP connection with no close frame

    def __post_init__(self) -> None:
        if self.after < 1 or self.skip < 0:
            raise ValueError(f"{self}: expected after >= 1 and skip >= 0")


@dataclass
class Connection:
    """What one client connection asked for and was sent."""

    path: str
    streams: tuple[str, ...]
    first_index: int  # index into the messages where playback started
    end_index: int  # index after the last message this connection plays
    opened_at: float = field(default_factory=time.time)
    sent: int = 0
    dropped: bool = False
    closed_at: float | None = None


@dataclass(frozen=True)
class ServedSnapshot:
    """One ``/depth`` body the REST fake answered."""

    time: float
    symbol: str
    body: dict[str, Any]

    @property
    def last_update_id(self) -> int:
        return self.body["lastUpdateId"]


class FakeBinanceStream:
    """A threaded local Binance combined-stream server; see the module docstring."""

    def __init__(
        self,
        messages: Iterable[Message],
        *,
        snapshots: Mapping[str, Mapping[str, Any]] | None = None,
        snapshot_symbol: str | None = None,
        rest: FakeBinance | bool | None = True,
        speed: float | None = None,
        drops: Sequence[Drop] = (),
        snapshot_levels: int = 1000,
    ) -> None:
        self.messages: list[Message] = list(messages)
        self.speed = speed
        self.drops = tuple(drops)
        self.snapshot_levels = snapshot_levels
        self._names: list[str | None] = [_stream_name(payload) for _, payload in self.messages]
        self.initial_snapshots: dict[str, dict[str, Any]] = {
            symbol.upper(): dict(body) for symbol, body in (snapshots or {}).items()
        }
        if snapshot_symbol is not None and snapshot_symbol.upper() not in self.initial_snapshots:
            line = next((p for _, p in self.messages if p.startswith(_SNAPSHOT)), None)
            if line is None:
                raise ValueError(f"no REST snapshot line for {snapshot_symbol} in the messages")
            self.initial_snapshots[snapshot_symbol.upper()] = json.loads(line)
        self._own_rest = rest is True
        self.rest: FakeBinance | None = (
            FakeBinance(depth=self.initial_snapshots) if rest is True else rest or None
        )
        self.connections: list[Connection] = []
        self.served: list[ServedSnapshot] = []
        self.sent_total = 0
        self.finished = threading.Event()  # every planned message was sent
        self._plan: tuple[tuple[str, ...], list[range]] | None = None
        self._play_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        # the exchange's books, following the stream (see _advance_books)
        self._book_lock = threading.Lock()
        self._books: dict[str, OrderBook] = {}
        for symbol, body in self.initial_snapshots.items():
            self._books[symbol] = OrderBook()
            self._books[symbol].load_snapshot(body["lastUpdateId"], body["bids"], body["asks"])
        self._books_at = 0  # messages before this index are applied to the books

    @classmethod
    def from_recording(
        cls, paths: Iterable[str | Path], symbol: str, **options: Any
    ) -> FakeBinanceStream:
        """Play a ``read_recording`` file set; its REST snapshot line belongs to ``symbol``."""
        return cls(read_recording(paths), snapshot_symbol=symbol, **options)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> FakeBinanceStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.rest is not None:
            depths = _LiveDepths(self)
            depths.update(self.rest.depth)
            depths.update(self.initial_snapshots)
            self.rest.depth = depths
            if self._own_rest:
                self.rest.start()
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check_path,
            compression=None,
            ping_interval=None,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._own_rest and self.rest is not None:
            self.rest.stop()

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``: the base URL (the client appends ``/stream?streams=``)."""
        if self._server is None:
            raise RuntimeError("FakeBinanceStream is not running; use it as a context manager")
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}"

    # -- what a client will get ---------------------------------------------------------------

    def plan(self, streams: Iterable[str]) -> list[range]:
        """The message index ranges the successive connections play for ``streams``."""
        wanted = set(streams)
        segments, start, total = [], 0, len(self.messages)
        for drop in self.drops:
            sent, index = 0, start
            while index < total and sent < drop.after:
                sent += self._names[index] in wanted
                index += 1
            segments.append(range(start, index))
            if sent < drop.after:  # the messages ran out before the drop
                return segments
            start = min(total, index + drop.skip)
        segments.append(range(start, total))
        return segments

    def played(self, streams: Iterable[str]) -> list[Message]:
        """Every message a client of ``streams`` receives, over all its connections, in order."""
        wanted = set(streams)
        return [
            self.messages[i]
            for segment in self.plan(wanted)
            for i in segment
            if self._names[i] in wanted
        ]

    def planned_messages(self, streams: Iterable[str]) -> int:
        return len(self.played(streams))

    def served_to(self, symbol: str) -> list[ServedSnapshot]:
        return [s for s in self.served if s.symbol == symbol.upper()]

    # -- the exchange's books -----------------------------------------------------------------

    def depth_body(self, symbol: str) -> dict[str, Any] | None:
        """What ``/depth`` answers now (see the module docstring); recorded in ``served``."""
        symbol = symbol.upper()
        with self._book_lock:
            book = self._books.get(symbol)
            if book is None:
                return None
            if not any(s.symbol == symbol for s in self.served):
                body = self.initial_snapshots[symbol]
            else:
                bids, asks = book.levels()
                n = self.snapshot_levels
                body = {
                    "lastUpdateId": book.last_update_id,
                    "bids": [[f"{p:.8f}", f"{q:.8f}"] for p, q in bids[:n]],
                    "asks": [[f"{p:.8f}", f"{q:.8f}"] for p, q in asks[:n]],
                }
            self.served.append(ServedSnapshot(time.time(), symbol, body))
            return body

    def _advance_books(self, to_index: int) -> None:
        """Apply every depth event before ``to_index`` (sent or skipped) to the books."""
        with self._book_lock:
            for index in range(self._books_at, to_index):
                name = self._names[index]
                if name is None or "@depth" not in name:
                    continue
                book = self._books.get(name.partition("@")[0].upper())
                if book is None:
                    continue
                received_ns, payload = self.messages[index]
                try:
                    event = decode_depth_event_payload(payload, received_ns)
                except DepthDataError:  # a corrupt message a test slipped in: not the exchange's
                    continue
                if event.final_update_id > book.last_update_id:
                    book.apply(event.bids, event.asks)
                    book.last_update_id = event.final_update_id
            self._books_at = max(self._books_at, to_index)

    # -- serving ------------------------------------------------------------------------------

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        if split.path != "/stream" or not dict(parse_qsl(split.query)).get("streams"):
            return connection.respond(HTTPStatus.NOT_FOUND, "expected /stream?streams=a/b/...\n")
        return None

    def _handle(self, websocket: ServerConnection) -> None:
        query = dict(parse_qsl(urlsplit(websocket.request.path).query))
        streams = tuple(query["streams"].split("/"))
        with self._play_lock:  # one connection plays at a time, in order
            number = len(self.connections)
            segments = self._segments(streams)
            total = len(self.messages)
            segment = segments[number] if number < len(segments) else range(total, total)
            connection = Connection(websocket.request.path, streams, segment.start, segment.stop)
            self.connections.append(connection)
            drop = self.drops[number] if number < len(self.drops) else None
            try:
                self._play(websocket, connection, segment, set(streams))
                if drop is not None and connection.sent >= drop.after:
                    connection.dropped = True
                    connection.closed_at = time.time()
                    self._drop(websocket, drop)
                    return
            except ConnectionClosed:
                connection.closed_at = time.time()
                return
            if not self._stopping.is_set():
                self.finished.set()
        try:
            for _ in websocket:  # hold the connection open until the client leaves
                pass
        except ConnectionClosed:
            pass
        connection.closed_at = time.time()

    def _segments(self, streams: tuple[str, ...]) -> list[range]:
        if self._plan is None:
            self._plan = (streams, self.plan(streams))
        elif set(self._plan[0]) != set(streams):
            raise ValueError(
                f"a reconnect asked for {streams}; the first connection for {self._plan[0]}"
            )
        return self._plan[1]

    def _play(
        self, websocket: ServerConnection, connection: Connection, segment: range, wanted: set[str]
    ) -> None:
        anchor: tuple[float, int] | None = None
        for index in segment:
            if self._names[index] not in wanted:
                continue
            received_ns, payload = self.messages[index]
            if self.speed:
                if anchor is None:
                    anchor = (time.monotonic(), received_ns)
                due = anchor[0] + (received_ns - anchor[1]) / 1e9 / self.speed
                delay = due - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    return
            self._advance_books(index + 1)  # the exchange's book includes what it sends
            websocket.send(payload, text=True)
            connection.sent += 1
            self.sent_total += 1

    def _drop(self, websocket: ServerConnection, drop: Drop) -> None:
        if drop.abrupt:
            websocket.socket.shutdown(socket.SHUT_RDWR)
            websocket.socket.close()
        else:
            websocket.close(1001, "fake drop")


class _LiveDepths(dict):
    """``FakeBinance.depth`` whose ``get`` (the one read per ``/depth`` request) answers from the
    stream's books; other symbols keep their static bodies."""

    def __init__(self, stream: FakeBinanceStream) -> None:
        super().__init__()
        self._stream = stream

    def get(self, symbol: str, default: Any = None) -> Any:
        body = self._stream.depth_body(symbol)
        return body if body is not None else super().get(symbol, default)


def _stream_name(payload: bytes) -> str | None:
    if not payload.startswith(_ENVELOPE):
        return None
    start = len(_ENVELOPE)
    return payload[start : payload.find(b'"', start)].decode()


# ------------------------------------------------------------------------------------------------
# Synthetic streams
# ------------------------------------------------------------------------------------------------

DEFAULT_START = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def synthetic_depth_messages(
    symbols: Sequence[str] = ("BTCUSDT",),
    events: int = 500,
    *,
    start: dt.datetime = DEFAULT_START,
    step_ms: int = 100,
    market: str = "spot",
    levels: int = 40,
    snapshot_after: int = 3,
    seed: int = 0,
) -> tuple[list[Message], dict[str, dict[str, Any]]]:
    """Consistent diff-depth events and bookTickers for ``symbols``, and each symbol's first
    ``/depth`` body (the book after its ``snapshot_after``-th event, so a client drops a few
    buffered events before one bridges).

    Every ``step_ms`` each symbol gets one depth event of 1-5 level changes (absolute quantities,
    0 removes a level; bids below and asks above a fixed mid, so the book never crosses), with
    ``U``/``u`` consecutive (futures also ``pu``), then a bookTicker whose ``u`` is the event's and
    whose best bid and ask are the book's after it. Receive times are the event times + 7 ms.
    """
    if market not in ("spot", "futures_um"):
        raise ValueError(f"market {market!r}; expected spot or futures_um")
    rng = random.Random(seed)
    start_ms = int(start.timestamp() * 1000)
    books, last_u, snapshots = {}, {}, {}
    for k, symbol in enumerate(symbols):
        mid = 100.0 * (k + 1)
        bids = {round(mid - 0.01 * (i + 1), 2): _quantity(rng) for i in range(levels)}
        asks = {round(mid + 0.01 * (i + 1), 2): _quantity(rng) for i in range(levels)}
        books[symbol] = (mid, bids, asks)
        last_u[symbol] = 1_000_000 * (k + 1)
    messages: list[Message] = []
    for i in range(events):
        for k, symbol in enumerate(symbols):
            event_ms = start_ms + i * step_ms + k
            mid, bids, asks = books[symbol]
            changes: dict[bool, dict[float, float]] = {True: {}, False: {}}
            count = rng.randint(1, 5)
            for _ in range(count):
                is_bid = rng.random() < 0.5
                side = bids if is_bid else asks
                distance = 0.01 * rng.randint(1, levels + 10)
                price = round(mid - distance if is_bid else mid + distance, 2)
                qty = 0.0 if rng.random() < 0.3 and len(side) > 5 else _quantity(rng)
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
                changes[is_bid][price] = qty
            first, final = last_u[symbol] + 1, last_u[symbol] + count
            data: dict[str, Any] = {"e": "depthUpdate", "E": event_ms}
            if market == "futures_um":
                data["T"] = event_ms
            data.update({"s": symbol, "U": first, "u": final})
            if market == "futures_um":
                data["pu"] = last_u[symbol]
            data["b"] = [[f"{p:.8f}", f"{q:.8f}"] for p, q in changes[True].items()]
            data["a"] = [[f"{p:.8f}", f"{q:.8f}"] for p, q in changes[False].items()]
            last_u[symbol] = final
            received_ns = (event_ms + 7) * 1_000_000
            messages.append((received_ns, _envelope(f"{symbol.lower()}@depth@100ms", data)))
            best_bid, best_ask = max(bids), min(asks)
            ticker: dict[str, Any] = {"u": final, "s": symbol}
            if market == "futures_um":
                ticker = {"e": "bookTicker", **ticker, "E": event_ms, "T": event_ms}
            ticker.update(
                b=f"{best_bid:.8f}", B=f"{bids[best_bid]:.8f}",
                a=f"{best_ask:.8f}", A=f"{asks[best_ask]:.8f}",
            )  # fmt: skip
            messages.append((received_ns + 1000, _envelope(f"{symbol.lower()}@bookTicker", ticker)))
            if i == snapshot_after - 1:
                snapshots[symbol] = {
                    "lastUpdateId": final,
                    "bids": [[f"{p:.8f}", f"{bids[p]:.8f}"] for p in sorted(bids, reverse=True)],
                    "asks": [[f"{p:.8f}", f"{asks[p]:.8f}"] for p in sorted(asks)],
                }
    return messages, snapshots


def _quantity(rng: random.Random) -> float:
    return round(rng.uniform(0.001, 3.0), 5)


def _envelope(stream: str, data: Mapping[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"))
    return f'{{"stream":"{stream}","data":{body}}}'.encode()
