"""What the live collector collects, from where, and how often it lands it."""

from __future__ import annotations

from dataclasses import dataclass

from dagster_project.core.errors import InvalidRequestError
from dagster_project.ingest.binance_rest import BinanceRestConfig
from dagster_project.ingest.orderbook.sync import DEFAULT_MAX_BUFFER, DEFAULT_STALE_AFTER_S, MARKETS

SOURCE = "binance_stream"
WS_BASE_URLS = {
    "spot": "wss://stream.binance.com:9443",
    "futures_um": "wss://fstream.binance.com",
}
MAX_STREAMS = 1024  # Binance's limit of streams on one connection (spot and USD-M futures)


@dataclass(frozen=True)
class CollectorConfig:
    """What to collect, from where, and how often to land it. Defaults suit production spot."""

    # Symbols to collect (upper case); each adds two streams to the one connection.
    symbols: tuple[str, ...] = ("BTCUSDT",)
    # "spot" or "futures_um" (USD-M futures: events carry `pu`, bridging differs slightly).
    market: str = "spot"
    # Websocket base URL; None: Binance's for the market (WS_BASE_URLS). A local server in tests.
    ws_base_url: str | None = None
    # REST client settings for snapshots; None: BinanceRestConfig.preset(market).
    rest: BinanceRestConfig | None = None
    # Sampling cadence of raw/depth_snapshots on the exchange clock, seconds (whole ms).
    cadence_s: float = 1.0
    # Levels per side in a sampled row (at most snapshot_limit).
    levels: int = 50
    # Levels per side of a REST snapshot. Weight: spot 50 (up to 1000; 5000 would cost 250),
    # USD-M futures 20. Fetched once per (re)sync, so a flapping connection costs little.
    snapshot_limit: int = 1000
    # Seconds between flushes to the lake (also at stop and at each UTC midnight).
    flush_every_s: float = 60.0
    # After a symbol's first event of a new UTC day (or the wall clock's midnight), wait this
    # long for the other symbols' first events before the midnight flush.
    midnight_grace_s: float = 2.0
    # No depth event for this long while connected: the book is stale and is resynced.
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    # How often the stale check runs, seconds.
    stale_check_every_s: float = 1.0
    # Reconnect backoff: first wait and ceiling (doubling, +-20% jitter); a connection that stayed
    # up at least reconnect_max_s starts the next backoff from reconnect_initial_s again.
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    # Snapshot retry backoff once the REST client's own retries are exhausted.
    snapshot_retry_initial_s: float = 1.0
    snapshot_retry_max_s: float = 60.0
    # Depth events held per symbol while waiting for a snapshot (oldest dropped first).
    max_buffer: int = DEFAULT_MAX_BUFFER
    # Websocket opening-handshake timeout; keepalive pings (None: off). Binance pings clients
    # too (spot every 20 s, futures every 3 min) and websockets answers them.
    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    # Attempts of the final flush at stop, `final_flush_retry_s` apart, before rows still
    # unwritten are reported in the summary (rows_unwritten) and logged as lost.
    final_flush_attempts: int = 3
    final_flush_retry_s: float = 1.0
    # Stop after this many seconds / websocket messages (tests, benchmarks, bounded runs);
    # None: run until a signal or stop().
    stop_after_s: float | None = None
    stop_after_messages: int | None = None
    # Install SIGINT/SIGTERM handlers while run() runs (only possible in the main thread).
    handle_signals: bool = True
    # The `source` column of every landed row.
    source: str = SOURCE

    def __post_init__(self) -> None:
        symbols = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        object.__setattr__(self, "symbols", tuple(s.upper() for s in symbols))
        if not self.symbols or any(not s.isalnum() for s in self.symbols):
            raise InvalidRequestError(
                f"symbols={self.symbols!r}; expected one or more names like 'BTCUSDT'"
            )
        if len(set(self.symbols)) != len(self.symbols):
            raise InvalidRequestError(f"symbols={self.symbols!r} repeats a symbol")
        if self.market not in MARKETS:
            raise InvalidRequestError(f"unknown market {self.market!r}; expected one of {MARKETS}")
        if 2 * len(self.symbols) > MAX_STREAMS:
            raise InvalidRequestError(
                f"{len(self.symbols)} symbols need {2 * len(self.symbols)} streams; Binance "
                f"allows {MAX_STREAMS} on one connection"
            )
        if self.ws_base_url is not None and not self.ws_base_url.startswith(("ws://", "wss://")):
            raise InvalidRequestError(
                f"ws_base_url={self.ws_base_url!r}; expected a ws:// or wss:// URL"
            )
        if self.rest is not None and self.rest.market != self.market:
            raise InvalidRequestError(
                f"rest config is for market {self.rest.market!r}; expected {self.market!r}"
            )
        if not 1 <= self.levels <= self.snapshot_limit:
            raise InvalidRequestError(
                f"levels={self.levels}; expected 1..snapshot_limit ({self.snapshot_limit})"
            )
        for name in ("flush_every_s", "stale_check_every_s", "reconnect_initial_s"):
            if not getattr(self, name) > 0:
                raise InvalidRequestError(f"{name}={getattr(self, name)}; expected > 0 seconds")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise InvalidRequestError(
                f"reconnect_max_s={self.reconnect_max_s}; expected >= reconnect_initial_s"
            )
        if self.final_flush_attempts < 1:
            raise InvalidRequestError(
                f"final_flush_attempts={self.final_flush_attempts}; expected >= 1"
            )

    def streams(self) -> list[str]:
        """The combined-stream names: ``<sym>@depth@100ms`` and ``<sym>@bookTicker`` per symbol."""
        kinds = ("depth@100ms", "bookTicker")
        return [f"{symbol.lower()}@{kind}" for symbol in self.symbols for kind in kinds]

    def stream_url(self) -> str:
        base = (self.ws_base_url or WS_BASE_URLS[self.market]).rstrip("/")
        return f"{base}/stream?streams={'/'.join(self.streams())}"

    def rest_config(self) -> BinanceRestConfig:
        return self.rest or BinanceRestConfig.preset(self.market)
