"""The local order book: price → quantity per side, best levels kept sorted. Pure logic, no IO."""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from typing import Any

from dagster_project.core.errors import InvalidRequestError

Level = tuple[float, float]  # (price, quantity)

DEFAULT_WINDOW = 128  # best levels per side the book keeps sorted (see OrderBook)

_INF = float("inf")


class OrderBook:
    """Price → quantity for each side, with the best ``window`` levels of each side kept sorted.

    Each side is a dict. Its best levels also sit in a sorted list, arranged so that the best level
    is last on both sides (bids ascending; asks as negated prices, ascending), because the top of
    the book is where levels come and go and the end of a list is where inserting and deleting are
    cheap. Levels worse than the window's edge live only in the dict (one float comparison each);
    when the window runs low (the price swept ``window / 2`` levels) it is refilled from the dict.
    Measured on the real BTCUSDT recording (46 level updates an event): updates about 15% slower
    than dicts with lazy-deletion heaps, but ``top(50)`` in 6 µs instead of 340 µs (the heaps
    must scan every level), and 3x faster than ``sortedcontainers.SortedDict``; a 128-level window
    beat 256 and 512 (fewer sorted inserts) and, unlike 64, rarely needs a refill for ``top(50)``.

    Levels are ``(price, quantity)`` floats (the parsers below convert Binance's strings); a string
    raises ``TypeError`` rather than being stored.
    """

    __slots__ = (
        "last_update_id",
        "_bids",
        "_asks",
        "_bid_keys",
        "_ask_keys",
        "_bid_edge",
        "_ask_edge",
        "_window",
        "_low",
        "_high",
    )

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 2:
            raise InvalidRequestError(f"order book window {window} is too small; expected >= 2")
        self.last_update_id: int | None = None
        self._window = window
        self._low = window // 2  # refill from the dict below this many sorted levels
        self._high = 4 * window  # trim the sorted list back to `window` above this
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # bid prices >= _bid_edge, ascending (best last)
        self._ask_keys: list[float] = []  # -ask prices >= _ask_edge, ascending (best last)
        self._bid_edge = -_INF
        self._ask_edge = -_INF

    def load_snapshot(
        self,
        last_update_id: int,
        bids: Iterable[Sequence[Any]],
        asks: Iterable[Sequence[Any]],
    ) -> None:
        """Replace the whole book with a REST snapshot; prices and quantities may be strings."""
        self._bids = {float(p): float(q) for p, q, *_ in bids if float(q) > 0.0}
        self._asks = {float(p): float(q) for p, q, *_ in asks if float(q) > 0.0}
        self._refill_bids(self._window)
        self._refill_asks(self._window)
        self.last_update_id = last_update_id

    def clear(self) -> None:
        self._bids, self._asks = {}, {}
        self._bid_keys, self._ask_keys = [], []
        self._bid_edge = self._ask_edge = -_INF
        self.last_update_id = None

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Set each ``(price, quantity)`` level; quantity 0 (or less) removes the level.

        Returns ``is_crossed()`` afterwards (the synchronizer checks it after every event).
        """
        levels, keys, edge = self._bids, self._bid_keys, self._bid_edge
        for price, qty in bids:
            if qty > 0.0:
                if price not in levels and price >= edge:
                    insort(keys, price)
                levels[price] = qty
            elif price in levels:
                del levels[price]
                if price >= edge:
                    del keys[bisect_left(keys, price)]
        if len(keys) < self._low:
            if len(levels) > len(keys):
                self._refill_bids(self._window)
        elif len(keys) > self._high:
            del keys[: -self._window]
            self._bid_edge = keys[0]

        levels, keys, edge = self._asks, self._ask_keys, self._ask_edge
        for price, qty in asks:
            if qty > 0.0:
                if price not in levels and -price >= edge:
                    insort(keys, -price)
                levels[price] = qty
            elif price in levels:
                del levels[price]
                if -price >= edge:
                    del keys[bisect_left(keys, -price)]
        if len(keys) < self._low:
            if len(levels) > len(keys):
                self._refill_asks(self._window)
        elif len(keys) > self._high:
            del keys[: -self._window]
            self._ask_edge = keys[0]
        bid_keys = self._bid_keys  # is_crossed(), inlined: this runs after every event
        return bool(bid_keys) and bool(keys) and bid_keys[-1] >= -keys[-1]

    def best_bid(self) -> Level | None:
        if not self._bid_keys:
            return None
        price = self._bid_keys[-1]
        return price, self._bids[price]

    def best_ask(self) -> Level | None:
        if not self._ask_keys:
            return None
        price = -self._ask_keys[-1]
        return price, self._asks[price]

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask (an impossible, out-of-sync book)."""
        return bool(self._bid_keys and self._ask_keys) and (
            self._bid_keys[-1] >= -self._ask_keys[-1]
        )

    def top(self, n: int) -> tuple[list[float], list[float], list[float], list[float]]:
        """``(bid_prices, bid_sizes, ask_prices, ask_sizes)`` of the best ``n`` levels."""
        if n < 0:
            raise InvalidRequestError(f"top({n}): expected a level count >= 0")
        if n > len(self._bid_keys) and len(self._bids) > len(self._bid_keys):
            self._refill_bids(max(n, self._window))
        if n > len(self._ask_keys) and len(self._asks) > len(self._ask_keys):
            self._refill_asks(max(n, self._window))
        bid_prices = self._bid_keys[: -n - 1 : -1] if n else []
        ask_prices = [-k for k in self._ask_keys[: -n - 1 : -1]] if n else []
        return (
            bid_prices,
            list(map(self._bids.__getitem__, bid_prices)),
            ask_prices,
            list(map(self._asks.__getitem__, ask_prices)),
        )

    def levels(self) -> tuple[list[Level], list[Level]]:
        """The whole book: bids best (highest) first, asks best (lowest) first."""
        return sorted(self._bids.items(), reverse=True), sorted(self._asks.items())

    @property
    def depth(self) -> tuple[int, int]:
        """Number of bid and ask levels held."""
        return len(self._bids), len(self._asks)

    def _refill_bids(self, size: int) -> None:
        if len(self._bids) <= size:
            self._bid_keys, self._bid_edge = sorted(self._bids), -_INF
        else:
            keys = heapq.nlargest(size, self._bids)
            keys.reverse()
            self._bid_keys, self._bid_edge = keys, keys[0]

    def _refill_asks(self, size: int) -> None:
        if len(self._asks) <= size:
            self._ask_keys, self._ask_edge = sorted(-p for p in self._asks), -_INF
        else:
            keys = [-p for p in heapq.nsmallest(size, self._asks)]
            keys.reverse()
            self._ask_keys, self._ask_edge = keys, keys[0]
