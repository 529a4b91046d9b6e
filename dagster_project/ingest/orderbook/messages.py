"""Binance's depth events, REST depth snapshots and bookTicker messages, parsed.

Decoded by msgspec straight from the wire (bare JSON, a decoded dict, or a combined-stream
envelope); a malformed message raises ``DepthDataError`` naming what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from dagster_project.core.errors import SourceDataError
from dagster_project.ingest.orderbook.book import Level


class DepthDataError(SourceDataError):
    """A depth event, depth snapshot or bookTicker message is malformed or incomplete."""


@dataclass(slots=True)
class DepthEvent:
    """One diff-depth event (``depthUpdate``); levels are ``(price, quantity)`` floats as sent.

    Not frozen (a frozen dataclass costs three times as much to build, and a day brings 864,000 of
    them); treat it as immutable.
    """

    event_time_ms: int  # "E", exchange clock
    first_update_id: int  # "U"
    final_update_id: int  # "u"
    prev_final_update_id: int | None  # "pu" (USD-M futures only)
    bids: Sequence[Level]  # "b"; quantity 0 removes the level
    asks: Sequence[Level]  # "a"
    received_ns: int | None = None  # local receive time, epoch ns (None when unknown)
    symbol: str | None = None  # "s"

    @classmethod
    def from_binance(
        cls, message: bytes | str | Mapping[str, Any], received_ns: int | None = None
    ) -> DepthEvent:
        """Parse a ``depthUpdate`` event: raw JSON or a decoded dict, bare or in a combined-stream
        envelope (``{"stream": ..., "data": {...}}``)."""
        wire = _decode(message, _WireDepth, _DepthEnvelope, "depth event")
        if wire.e != "depthUpdate":
            raise DepthDataError(f"depth event has e={wire.e!r}; expected 'depthUpdate'")
        return cls(wire.E, wire.U, wire.u, wire.pu, wire.b, wire.a, received_ns, wire.s)


@dataclass(slots=True)
class DepthSnapshot:
    """A REST ``/depth`` snapshot."""

    last_update_id: int  # "lastUpdateId"
    bids: Sequence[Level]  # best first, as Binance sends them
    asks: Sequence[Level]
    received_ns: int | None = None  # local receive time, epoch ns

    @classmethod
    def from_binance(
        cls, message: bytes | str | Mapping[str, Any], received_ns: int | None = None
    ) -> DepthSnapshot:
        """Parse a ``/depth`` body, bare or in an envelope naming its request path
        (``{"stream": "/api/v3/depth?symbol=...", "data": {...}}``, as recordings keep it)."""
        wire = _decode(message, _WireSnapshot, _SnapshotEnvelope, "depth snapshot")
        return cls(wire.lastUpdateId, wire.bids, wire.asks, received_ns)


@dataclass(slots=True)
class BookTicker:
    """A ``<symbol>@bookTicker`` message: the best bid and ask after order-book update ``u``."""

    update_id: int  # "u"
    bid_price: float  # "b"
    bid_qty: float  # "B"
    ask_price: float  # "a"
    ask_qty: float  # "A"
    symbol: str | None = None  # "s"
    received_ns: int | None = None

    @classmethod
    def from_binance(
        cls, message: bytes | str | Mapping[str, Any], received_ns: int | None = None
    ) -> BookTicker:
        w = _decode(message, _WireTicker, _TickerEnvelope, "bookTicker")
        return cls(w.u, w.b, w.B, w.a, w.A, w.s, received_ns)


# Binance's wire format, decoded by msgspec straight into typed values: strict=False turns the
# price and quantity strings into floats inside the C decoder (twice as fast as orjson + float()).
# gc=False: these short-lived structs hold no cycles, so the garbage collector need not track them.
class _WireDepth(msgspec.Struct, gc=False):
    E: int
    U: int
    u: int
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]
    pu: int | None = None
    e: str = "depthUpdate"
    s: str | None = None


class _DepthEnvelope(msgspec.Struct, gc=False):
    data: _WireDepth


class _WireSnapshot(msgspec.Struct, gc=False):
    lastUpdateId: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class _SnapshotEnvelope(msgspec.Struct, gc=False):
    data: _WireSnapshot


class _WireTicker(msgspec.Struct, gc=False):
    u: int
    b: float
    B: float
    a: float
    A: float
    s: str | None = None


class _TickerEnvelope(msgspec.Struct, gc=False):
    data: _WireTicker


_DECODERS: dict[type, msgspec.json.Decoder] = {
    kind: msgspec.json.Decoder(kind, strict=False)
    for kind in (
        _WireDepth,
        _DepthEnvelope,
        _WireSnapshot,
        _SnapshotEnvelope,
        _WireTicker,
        _TickerEnvelope,
    )
}
_decoder = _DECODERS.__getitem__


def _decode(
    message: bytes | str | Mapping[str, Any],
    bare: type,
    envelope: type | None,
    what: str,
) -> Any:
    try:
        if isinstance(message, Mapping):
            if envelope is not None and "data" in message and "stream" in message:
                message = message["data"]
            return msgspec.convert(message, bare, strict=False)
        if envelope is not None and message[:10] in (b'{"stream":', '{"stream":'):
            return _decoder(envelope).decode(message).data
        return _decoder(bare).decode(message)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        head = message if isinstance(message, Mapping) else message[:120]
        raise DepthDataError(
            f"cannot parse {what}: {exc}; expected Binance's {what} JSON, got {head!r}"
        ) from exc


def decode_depth_event_payload(payload: bytes, received_ns: int | None) -> DepthEvent:
    """``DepthEvent.from_binance`` for raw JSON, enveloped or bare (the replay's hot loop)."""
    wire = _decode_payload(payload, _DepthEnvelope, _WireDepth, "depth event", "depthUpdate")
    if wire.e != "depthUpdate":
        raise DepthDataError(f"depth event has e={wire.e!r}; expected 'depthUpdate'")
    return DepthEvent(wire.E, wire.U, wire.u, wire.pu, wire.b, wire.a, received_ns, wire.s)


def decode_book_ticker_payload(payload: bytes, received_ns: int | None) -> BookTicker:
    """``BookTicker.from_binance`` for raw JSON, enveloped or bare (the replay's hot loop)."""
    w = _decode_payload(payload, _TickerEnvelope, _WireTicker, "bookTicker", "bookTicker")
    return BookTicker(w.u, w.b, w.B, w.a, w.A, w.s, received_ns)


def _decode_payload(payload: bytes, envelope: type, bare: type, what: str, binance_name: str):
    """A message's wire struct, from a combined-stream envelope (``{"stream": …, "data": …}``)
    or bare; a ``DepthDataError`` naming ``what`` when it does not parse."""
    try:
        if payload.startswith(b'{"stream":'):
            return _decoder(envelope).decode(payload).data
        return _decoder(bare).decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DepthDataError(
            f"cannot parse {what}: {exc}; expected Binance's {binance_name} JSON, "
            f"got {payload[:120]!r}"
        ) from exc
