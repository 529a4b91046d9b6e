"""Binance's snapshot + diff-stream rules for one symbol (``BookSynchronizer``); see the package
docstring for the rules. Pure logic, no IO."""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from dagster_project.core.errors import InvalidRequestError
from dagster_project.ingest.orderbook.book import DEFAULT_WINDOW, OrderBook
from dagster_project.ingest.orderbook.messages import DepthDataError, DepthEvent, DepthSnapshot

log = logging.getLogger(__name__)

MARKETS = ("spot", "futures_um")

DEFAULT_STALE_AFTER_S = 10.0  # no depth event for this long while connected: the book is stale
DEFAULT_MAX_BUFFER = 10_000  # events held while waiting for a snapshot (oldest dropped first)


class SyncState(enum.Enum):
    WAITING_SNAPSHOT = "waiting_snapshot"  # buffering events; needs a snapshot
    BRIDGING = "bridging"  # snapshot loaded, waiting for the event that bridges it
    SYNCED = "synced"  # every event since the snapshot applied in sequence


class SyncOutcome(enum.Enum):
    APPLIED = "applied"  # the event was applied (on_snapshot: the snapshot was loaded)
    DROPPED = "dropped"  # older than the book (or, on_snapshot: a snapshot nobody needed)
    BUFFERED = "buffered"  # held until a snapshot arrives
    RESYNC = "resync"  # out of sync: the book was discarded and a new snapshot is needed


class ResyncReason(enum.StrEnum):
    SEQUENCE_GAP = "sequence_gap"  # U != previous u + 1 (futures: pu != previous u)
    SNAPSHOT_BEHIND_STREAM = "snapshot_behind_stream"  # first event after the snapshot U > L + 1
    CROSSED_BOOK = "crossed_book"  # best bid >= best ask after an event
    STALE_STREAM = "stale_stream"  # no depth event for longer than stale_after_s


_WAITING, _BRIDGING, _SYNCED = SyncState  # module constants: cheaper than enum lookups per event
_APPLIED, _DROPPED, _BUFFERED, _RESYNC = SyncOutcome


@dataclass
class SyncStats:
    """Counters of one synchronizer; ``resyncs`` counts out-of-sync episodes by reason."""

    events_seen: int = 0
    events_applied: int = 0
    events_dropped: int = 0  # older than the book (u <= lastUpdateId or a duplicate)
    events_buffered: int = 0  # held while waiting for a snapshot (later applied or dropped)
    buffer_overflow: int = 0  # buffered events discarded because the buffer was full
    snapshots_used: int = 0  # snapshots loaded into the book
    snapshots_ignored: int = 0  # snapshots that arrived while none was needed
    resyncs: dict[str, int] = field(default_factory=dict)

    @property
    def resync_count(self) -> int:
        return sum(self.resyncs.values())


class BookObserver(Protocol):
    """Follows a synchronizer's book; every method is optional (see ``BookSynchronizer``)."""

    def before_apply(self, event: DepthEvent, book: OrderBook) -> None:
        """Called with the book as of the previous event, just before ``event`` is applied."""

    def after_apply(self, event: DepthEvent, book: OrderBook) -> None:
        """Called once ``event`` is applied and the book found consistent."""

    def on_desync(self, reason: str) -> None:
        """Called when the book is discarded as out of sync."""


class BookSynchronizer:
    """Binance's snapshot + diff-stream rules for one symbol, as a state machine.

    Feed it every depth event of the symbol (``on_event``) and a REST snapshot whenever
    ``needs_snapshot`` is true (``on_snapshot``); call ``check_stale(now_ns)`` on a timer (or, in a
    replay, with every received message's time) so that a silent stream is noticed. Observers see
    each applied event with the book before and after it, and each resync.
    """

    def __init__(
        self,
        symbol: str,
        market: str = "spot",
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        observers: Iterable[object] = (),
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if market not in MARKETS:
            raise InvalidRequestError(f"unknown market {market!r}; expected one of {MARKETS}")
        if not stale_after_s > 0:
            raise InvalidRequestError(f"stale_after_s={stale_after_s}; expected > 0 seconds")
        if max_buffer < 1:
            raise InvalidRequestError(f"max_buffer={max_buffer}; expected >= 1 events")
        self.symbol = symbol.upper()
        self.market = market
        self.book = OrderBook(window)
        self.stats = SyncStats()
        self._futures = market == "futures_um"
        self._stale_ns = int(stale_after_s * 1e9)
        self._buffer: deque[DepthEvent] = deque()
        self._max_buffer = max_buffer
        self._state = _WAITING
        self._last_u: int | None = None  # the book's update id: the snapshot's, then each u
        self._last_seen_ns: int | None = None  # receive time of the latest depth event
        self._before: list[Callable[[DepthEvent, OrderBook], None]] = []
        self._after: list[Callable[[DepthEvent, OrderBook], None]] = []
        self._desync: list[Callable[[str], None]] = []
        for observer in observers:
            self.add_observer(observer)

    def add_observer(self, observer: object) -> None:
        """Attach an object with any of ``before_apply``, ``after_apply``, ``on_desync``."""
        for name, hooks in (
            ("before_apply", self._before),
            ("after_apply", self._after),
            ("on_desync", self._desync),
        ):
            hook = getattr(observer, name, None)
            if hook is not None:
                hooks.append(hook)

    @property
    def state(self) -> SyncState:
        return self._state

    @property
    def needs_snapshot(self) -> bool:
        return self._state is _WAITING

    @property
    def synced(self) -> bool:
        return self._state is _SYNCED

    @property
    def last_update_id(self) -> int | None:
        return self._last_u

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def on_snapshot(self, snapshot: DepthSnapshot) -> SyncOutcome:
        """Load a REST snapshot and replay the buffered events over it."""
        if self._state is not _WAITING:
            self.stats.snapshots_ignored += 1
            log.debug(
                "%s: snapshot %d ignored; none was needed", self.symbol, snapshot.last_update_id
            )
            return _DROPPED
        self.book.load_snapshot(snapshot.last_update_id, snapshot.bids, snapshot.asks)
        self.stats.snapshots_used += 1
        self._last_u = snapshot.last_update_id
        self._state = _BRIDGING
        if snapshot.received_ns is not None:
            self._last_seen_ns = snapshot.received_ns
        pending, self._buffer = self._buffer, deque()
        log.info(
            "%s %s: snapshot lastUpdateId=%d loaded (%d bids, %d asks); replaying %d buffered "
            "events",
            self.market,
            self.symbol,
            snapshot.last_update_id,
            *self.book.depth,
            len(pending),
        )
        if self.book.is_crossed():
            self._resync(ResyncReason.CROSSED_BOOK, f"snapshot {snapshot.last_update_id} crossed")
            self._buffer = pending
            return _RESYNC
        while pending:
            if self._process(pending.popleft()) is _RESYNC:
                self._buffer.extend(pending)  # after the event that broke the sequence
                return _RESYNC
        return _APPLIED

    def on_event(self, event: DepthEvent) -> SyncOutcome:
        """Buffer, drop or apply one depth event; see the module docstring for the rules."""
        self.stats.events_seen += 1
        if event.symbol is not None and event.symbol != self.symbol:
            raise InvalidRequestError(
                f"depth event for {event.symbol} fed to the {self.symbol} synchronizer"
            )
        if self._futures and event.prev_final_update_id is None:
            raise DepthDataError(
                f"{self.symbol} USD-M futures depth event u={event.final_update_id} has no pu; "
                "expected the previous event's final update id"
            )
        stale = False
        received = event.received_ns
        if received is not None:
            last_seen = self._last_seen_ns
            if last_seen is not None and received - last_seen > self._stale_ns:
                stale = self.check_stale(received)
            self._last_seen_ns = received
        state = self._state
        if state is _WAITING:
            self._hold(event)
            return _RESYNC if stale else _BUFFERED
        if state is _SYNCED:
            return self._continue(event)
        return self._bridge(event)

    def check_stale(self, now_ns: int) -> bool:
        """Resync if no depth event arrived within ``stale_after_s`` before ``now_ns``.

        ``now_ns`` is on the clock of ``DepthEvent.received_ns`` (epoch ns). Returns True when
        this call found the stream stale.
        """
        last = self._last_seen_ns
        if last is None or now_ns - last <= self._stale_ns or self._state is _WAITING:
            return False
        self._resync(
            ResyncReason.STALE_STREAM,
            f"no depth event for {(now_ns - last) / 1e9:.1f} s (limit {self._stale_ns / 1e9:g} s)",
        )
        return True

    def request_resync(self, reason: str, detail: str = "requested by the caller") -> None:
        """Discard the book (for example on a reconnect) and wait for a new snapshot."""
        if self._state is not _WAITING:
            self._resync(reason, detail)

    def _process(self, event: DepthEvent) -> SyncOutcome:
        return self._continue(event) if self._state is _SYNCED else self._bridge(event)

    def _continue(self, event: DepthEvent) -> SyncOutcome:
        """SYNCED: the event must follow the previous one."""
        u = event.final_update_id
        last: int = self._last_u  # type: ignore[assignment]
        if u <= last:
            self.stats.events_dropped += 1
            return _DROPPED
        if self._futures:
            pu = event.prev_final_update_id
            if pu != last:
                return self._break(
                    event, ResyncReason.SEQUENCE_GAP, f"pu={pu}, expected previous u={last}"
                )
        elif event.first_update_id != last + 1:
            return self._break(
                event,
                ResyncReason.SEQUENCE_GAP,
                f"U={event.first_update_id} (u={u}), expected U={last + 1}",
            )
        return self._apply(event, u)

    def _bridge(self, event: DepthEvent) -> SyncOutcome:
        """BRIDGING: the first event after the snapshot must straddle it."""
        u = event.final_update_id
        last: int = self._last_u  # type: ignore[assignment]
        bridge = last if self._futures else last + 1
        if u < bridge:
            self.stats.events_dropped += 1
            return _DROPPED
        if event.first_update_id > bridge:
            return self._break(
                event,
                ResyncReason.SNAPSHOT_BEHIND_STREAM,
                f"first event after snapshot lastUpdateId={last} has U={event.first_update_id}; "
                f"expected U <= {bridge} <= u",
            )
        return self._apply(event, u)

    def _apply(self, event: DepthEvent, u: int) -> SyncOutcome:
        book = self.book
        for hook in self._before:
            hook(event, book)
        crossed = book.apply(event.bids, event.asks)
        book.last_update_id = self._last_u = u
        if crossed:
            return self._break(
                event,
                ResyncReason.CROSSED_BOOK,
                f"best bid {book.best_bid()} >= best ask {book.best_ask()} after u={u}",
            )
        self._state = _SYNCED
        self.stats.events_applied += 1
        for hook in self._after:
            hook(event, book)
        return _APPLIED

    def _break(self, event: DepthEvent, reason: str, detail: str) -> SyncOutcome:
        self._resync(reason, detail)
        self._hold(event)  # the stream goes on from here; a new snapshot may bridge it
        return _RESYNC

    def _hold(self, event: DepthEvent) -> None:
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self.stats.buffer_overflow += 1
        self._buffer.append(event)
        self.stats.events_buffered += 1

    def _resync(self, reason: str, detail: str) -> None:
        reason = str(reason)
        self.stats.resyncs[reason] = self.stats.resyncs.get(reason, 0) + 1
        log.warning(
            "%s %s order book out of sync (%s): %s; discarding the book, requesting a new snapshot",
            self.market,
            self.symbol,
            reason,
            detail,
        )
        self.book.clear()
        self._state = _WAITING
        self._last_u = None
        for hook in self._desync:
            hook(reason)
