"""The rebuilt book against Binance's own ``@bookTicker`` stream, at every shared update id."""

from __future__ import annotations

from dataclasses import dataclass

from dagster_project.ingest.orderbook.book import Level, OrderBook
from dagster_project.ingest.orderbook.messages import BookTicker, DepthEvent


@dataclass(frozen=True)
class BookTickerReport:
    """How the reconstructed book compared with Binance's own bookTicker stream."""

    compared: int  # tickers whose u equals an applied depth event's final update id
    mismatched: int  # of those, best bid/ask price or size differing from the book
    not_comparable: int  # u matched no applied event's final id (inside an event, or in a gap)
    examples: tuple[str, ...]  # the first few mismatches, described

    @property
    def matched(self) -> int:
        return self.compared - self.mismatched


class BookTickerCheck:
    """Compares ``@bookTicker`` messages with the book wherever a ticker's ``u`` equals the final
    update id of an applied depth event: there both describe the book after the same update, so
    best bid and ask, prices and sizes, must be equal.

    A ticker usually arrives before the 100 ms depth event that contains its update, so tickers
    wait (by ``u``) for that event; the best levels after recent events are kept for tickers that
    arrive late.
    """

    KEEP = 1024  # recent events' best levels, and pending tickers, kept for matching

    def __init__(self) -> None:
        self.compared = 0
        self.mismatched = 0
        self.not_comparable = 0
        self.examples: list[str] = []
        self._pending: dict[int, BookTicker] = {}
        self._recent: dict[int, tuple[Level | None, Level | None]] = {}
        self._last_u = -1

    def on_ticker(self, ticker: BookTicker) -> None:
        u = ticker.update_id
        top = self._recent.get(u)
        if top is not None:
            self._compare(ticker, top)
        elif u > self._last_u:
            self._pending[u] = ticker
            if len(self._pending) > self.KEEP:
                self._prune()
        else:
            self.not_comparable += 1

    def after_apply(self, event: DepthEvent, book: OrderBook) -> None:
        u = event.final_update_id
        self._last_u = u
        top = (book.best_bid(), book.best_ask())
        ticker = self._pending.pop(u, None)
        if ticker is not None:
            self._compare(ticker, top)
        recent = self._recent
        recent[u] = top
        if len(recent) > self.KEEP:
            del recent[next(iter(recent))]

    def report(self) -> BookTickerReport:
        waiting = sum(1 for u in self._pending if u <= self._last_u)
        return BookTickerReport(
            self.compared,
            self.mismatched,
            self.not_comparable + waiting,
            tuple(self.examples),
        )

    def _compare(self, ticker: BookTicker, top: tuple[Level | None, Level | None]) -> None:
        self.compared += 1
        expected = ((ticker.bid_price, ticker.bid_qty), (ticker.ask_price, ticker.ask_qty))
        if top != expected:
            self.mismatched += 1
            if len(self.examples) < 10:
                self.examples.append(f"u={ticker.update_id}: book {top}, bookTicker {expected}")

    def _prune(self) -> None:
        """Forget tickers no event can match any more (``u`` passed), then, while no events are
        applied (a resync gap), the oldest, keeping half the room free so pruning stays rare."""
        pending = self._pending
        keep = {u: t for u, t in pending.items() if u > self._last_u}
        if len(keep) > self.KEEP // 2:
            keep = dict(list(keep.items())[-(self.KEEP // 2) :])
        self.not_comparable += len(pending) - len(keep)
        self._pending = keep
