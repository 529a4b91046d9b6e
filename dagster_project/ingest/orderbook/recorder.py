"""``BookRecorder``: one symbol's synchronizer with the sampler, the updates recorder and the
bookTicker check attached."""

from __future__ import annotations

import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.ingest.orderbook.messages import BookTicker, DepthEvent, DepthSnapshot
from dagster_project.ingest.orderbook.sampling import (
    DEFAULT_LEVELS,
    BookSampler,
    DepthUpdateRecorder,
)
from dagster_project.ingest.orderbook.sync import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_STALE_AFTER_S,
    BookSynchronizer,
    SyncOutcome,
)
from dagster_project.ingest.orderbook.ticker_check import BookTickerCheck, BookTickerReport

DEFAULT_CADENCE_S = 1.0  # sampling cadence on the exchange clock


class BookRecorder:
    """One symbol's synchronizer with the sampler, the updates recorder and the bookTicker check
    attached: what a live collector and the replay both run."""

    def __init__(
        self,
        symbol: str,
        market: str = "spot",
        cadence_s: float = DEFAULT_CADENCE_S,
        levels: int = DEFAULT_LEVELS,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        check_book_ticker: bool = True,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        cadence_ms = cadence_s * 1000
        if cadence_ms < 1 or abs(cadence_ms - round(cadence_ms)) > 1e-9:
            raise InvalidRequestError(
                f"cadence_s={cadence_s}; expected a whole number of milliseconds >= 0.001 s"
            )
        self.sampler = BookSampler(round(cadence_ms), levels)
        self.updates = DepthUpdateRecorder()
        self.tickers = BookTickerCheck() if check_book_ticker else None
        observers: list[object] = [self.sampler, self.updates]
        if self.tickers is not None:
            observers.append(self.tickers)
        self.sync = BookSynchronizer(symbol, market, stale_after_s, max_buffer, observers)

    def on_event(self, event: DepthEvent) -> SyncOutcome:
        return self.sync.on_event(event)

    def on_snapshot(self, snapshot: DepthSnapshot) -> SyncOutcome:
        return self.sync.on_snapshot(snapshot)

    def on_ticker(self, ticker: BookTicker) -> None:
        if self.tickers is not None:
            self.tickers.on_ticker(ticker)

    def check_stale(self, now_ns: int) -> bool:
        return self.sync.check_stale(now_ns)

    def snapshots_frame(self, source: str) -> pl.DataFrame:
        return self.sampler.to_frame(source)

    def updates_frame(self, source: str) -> pl.DataFrame:
        return self.updates.to_frame(source)

    def ticker_report(self) -> BookTickerReport:
        if self.tickers is None:
            return BookTickerReport(0, 0, 0, ())
        return self.tickers.report()
