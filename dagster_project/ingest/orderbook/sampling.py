"""Observers that turn a synchronizer's applied events into rows: ``BookSampler`` for
``raw/depth_snapshots`` (the book on a fixed exchange-clock grid, no look-ahead) and
``DepthUpdateRecorder`` for ``raw/depth_updates`` (every applied event)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.schemas import (
    DEPTH_SNAPSHOT_SCHEMA,
    DEPTH_UPDATE_SCHEMA,
    conform_to,
)
from dagster_project.ingest.orderbook.book import Level, OrderBook
from dagster_project.ingest.orderbook.messages import DepthEvent

DEFAULT_LEVELS = 50  # top N levels per side in a sampled row


class BookSampler:
    """Samples the book every ``cadence_ms`` of exchange time into ``raw/depth_snapshots`` rows.

    The row at ``ts = k * cadence_ms`` (epoch ms) holds the top ``levels`` of the book as of the
    last applied event with ``event_time <= ts``: rows up to an event's time are written just
    before that event is applied, so an event at exactly ``ts`` is in the row and one at
    ``ts + 1 ms`` is not. After a (re)sync the first row is the first grid time at or after the
    first applied event; during a resync gap no rows are written. Rows after the last event are
    not written (a later event could still fall before them).
    """

    CHUNK = 128  # rows kept as Python lists before being packed into arrays (small: GC-cheap)

    def __init__(self, cadence_ms: int = 1000, levels: int = DEFAULT_LEVELS) -> None:
        if cadence_ms < 1 or int(cadence_ms) != cadence_ms:
            raise InvalidRequestError(f"cadence {cadence_ms} ms; expected a whole number >= 1")
        if levels < 1:
            raise InvalidRequestError(f"levels={levels}; expected >= 1")
        self.cadence_ms = int(cadence_ms)
        self.levels = levels
        self._next_ms: int | None = None  # next grid time to write; None while out of sync
        self._ts: list[int] = []
        self._update_ids: list[int] = []
        self._rows: list[tuple[list[float], list[float], list[float], list[float]]] = []
        self._bids, self._asks = _LevelColumns(), _LevelColumns()

    def __len__(self) -> int:
        return len(self._ts)

    def before_apply(self, event: DepthEvent, book: OrderBook) -> None:
        next_ms = self._next_ms
        event_ms = event.event_time_ms
        if next_ms is None or event_ms <= next_ms:
            return
        top = book.top(self.levels)
        update_id = book.last_update_id
        while next_ms < event_ms:
            self._ts.append(next_ms)
            self._update_ids.append(update_id)  # type: ignore[arg-type]
            self._rows.append(top)
            next_ms += self.cadence_ms
        self._next_ms = next_ms
        if len(self._rows) >= self.CHUNK:
            self._pack()

    def after_apply(self, event: DepthEvent, book: OrderBook) -> None:
        if self._next_ms is None:  # first event after a (re)sync: start at the next grid time
            self._next_ms = -(-event.event_time_ms // self.cadence_ms) * self.cadence_ms

    def on_desync(self, reason: str) -> None:
        self._next_ms = None

    def to_frame(self, source: str) -> pl.DataFrame:
        """The rows so far as ``DEPTH_SNAPSHOT_SCHEMA``."""
        self._pack()
        ts_us = np.asarray(self._ts, dtype=np.int64) * 1000
        bid_prices, bid_sizes = self._bids.to_arrow()
        ask_prices, ask_sizes = self._asks.to_arrow()
        table = pa.table(
            {
                "ts": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
                "last_update_id": pa.array(self._update_ids, type=pa.int64()),
                "bid_prices": bid_prices,
                "bid_sizes": bid_sizes,
                "ask_prices": ask_prices,
                "ask_sizes": ask_sizes,
                "source": pa.array([source] * len(self._ts), type=pa.large_string()),
            }
        )
        return conform_to(pl.from_arrow(table), DEPTH_SNAPSHOT_SCHEMA, "raw/depth_snapshots")

    def _pack(self) -> None:
        rows, self._rows = self._rows, []
        self._bids.add([r[0] for r in rows], [r[1] for r in rows])
        self._asks.add([r[2] for r in rows], [r[3] for r in rows])


class DepthUpdateRecorder:
    """Keeps every applied event for ``raw/depth_updates``, packed into arrays in chunks."""

    CHUNK = 256  # events kept as objects before their levels are packed into arrays; small,
    # because every object held longer costs the garbage collector (measured: 8192 → 256 saved
    # about 20% of a replay)

    def __init__(self) -> None:
        self._event_ms: list[int] = []
        self._first: list[int] = []
        self._final: list[int] = []
        self._prev: list[int | None] = []
        self._received_ns: list[int | None] = []
        self._events: list[DepthEvent] = []
        self._bids, self._asks = _LevelColumns(), _LevelColumns()

    def __len__(self) -> int:
        return len(self._final) + len(self._events)

    def after_apply(self, event: DepthEvent, book: OrderBook) -> None:
        self._events.append(event)
        if len(self._events) >= self.CHUNK:
            self._pack()

    def to_frame(self, source: str) -> pl.DataFrame:
        """The applied events so far as ``DEPTH_UPDATE_SCHEMA``."""
        self._pack()
        received = pa.array(self._received_ns, type=pa.int64())
        received_us = pc.divide(received, 1000).cast(pa.timestamp("us", tz="UTC"))
        event_us = np.asarray(self._event_ms, dtype=np.int64) * 1000
        bid_prices, bid_sizes = self._bids.to_arrow()
        ask_prices, ask_sizes = self._asks.to_arrow()
        table = pa.table(
            {
                "event_time": pa.array(event_us, type=pa.timestamp("us", tz="UTC")),
                "first_update_id": pa.array(self._first, type=pa.int64()),
                "final_update_id": pa.array(self._final, type=pa.int64()),
                "prev_final_update_id": pa.array(self._prev, type=pa.int64()),
                "bid_prices": bid_prices,
                "bid_sizes": bid_sizes,
                "ask_prices": ask_prices,
                "ask_sizes": ask_sizes,
                "received_at": received_us,
                "source": pa.array([source] * len(self._final), type=pa.large_string()),
            }
        )
        return conform_to(pl.from_arrow(table), DEPTH_UPDATE_SCHEMA, "raw/depth_updates")

    def _pack(self) -> None:
        events, self._events = self._events, []
        self._event_ms += [e.event_time_ms for e in events]
        self._first += [e.first_update_id for e in events]
        self._final += [e.final_update_id for e in events]
        self._prev += [e.prev_final_update_id for e in events]
        self._received_ns += [e.received_ns for e in events]
        self._bids.add_pairs([e.bids for e in events])
        self._asks.add_pairs([e.asks for e in events])


class _LevelColumns:
    """Per-row price and size lists, packed chunk by chunk into flat float arrays.

    ``np.fromiter`` over a chain of the rows copies at C speed, about half the cost of
    ``array.extend`` per row, and the chunks keep memory bounded.
    """

    def __init__(self) -> None:
        self._lengths: list[int] = []
        self._prices: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []

    def add(self, prices: list[Sequence[float]], sizes: list[Sequence[float]]) -> None:
        lengths = list(map(len, prices))
        total = sum(lengths)
        self._lengths += lengths
        self._prices.append(np.fromiter(chain.from_iterable(prices), np.float64, total))
        self._sizes.append(np.fromiter(chain.from_iterable(sizes), np.float64, total))

    def add_pairs(self, rows: list[Sequence[Level]]) -> None:
        """Rows of ``(price, size)`` pairs."""
        lengths = list(map(len, rows))
        total = sum(lengths)
        self._lengths += lengths
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(rows)), np.float64, 2 * total)
        self._prices.append(flat[0::2].copy())
        self._sizes.append(flat[1::2].copy())

    def to_arrow(self) -> tuple[pa.Array, pa.Array]:
        offsets = np.zeros(len(self._lengths) + 1, dtype=np.int64)
        np.cumsum(self._lengths, out=offsets[1:])
        empty = [np.empty(0, np.float64)]
        prices = np.concatenate(self._prices or empty)
        sizes = np.concatenate(self._sizes or empty)
        return (
            pa.LargeListArray.from_arrays(offsets, prices),
            pa.LargeListArray.from_arrays(offsets, sizes),
        )
