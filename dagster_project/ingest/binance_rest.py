"""Binance REST market-data client: klines, aggregate trades and depth snapshots.

``BinanceRestClient(config)`` is the one entry point (all frames carry ``source="binance_rest"``):

- ``fetch_klines(symbol, interval, time_range)``: the klines of ``[start, end)`` as
  ``klines.RAW_KLINE_SCHEMA``.
- ``fetch_agg_trades(symbol, time_range)``: every aggregate trade with trade time ``T`` in
  ``[start, end)`` as ``schemas.AGG_TRADE_SCHEMA``.
- ``depth_snapshot(symbol, limit)``: one ``/depth`` answer as a ``DepthSnapshot``;
  ``DepthSnapshot.to_frame(levels)`` / ``depth_snapshots_frame`` give ``DEPTH_SNAPSHOT_SCHEMA`` rows
  (top N levels, ``ts`` = local receive time) for REST polling.

How it behaves:

- **Paging by time.** Each request asks for ``startTime``, ``endTime = end - 1 ms`` and
  ``limit = page_limit``; the next page starts one interval after the last row's open time. It stops
  as soon as the range is covered or a page comes back short (Binance returned everything left), so
  N rows take exactly ceil(N / page_limit) requests. Rows outside ``[start, end)`` are dropped.
- **Request weight.** Binance limits each IP by weight per clock minute and reports the window's
  usage in ``X-MBX-USED-WEIGHT-1M`` on every response. The client adopts that number after each
  response and, before a request that would take the window over ``weight_limit_per_minute``, sleeps
  until the window rolls over, so a long backfill is paced instead of receiving 429s. If
  exchangeInfo publishes a lower ``REQUEST_WEIGHT`` limit, the client adopts it.
- **Errors.** 5xx, timeouts, connection errors and truncated or non-JSON bodies are retried with
  exponential backoff and jitter (tenacity), ``max_retries`` times, then ``BinanceAPIError`` names
  the URL, the attempts and the last failure. 429 waits exactly ``Retry-After`` seconds and retries
  (its own budget, ``max_rate_limit_retries``). 418 (IP banned) raises ``BinanceIPBannedError`` at
  once and the client refuses further requests until the ban is over. Other 4xx map Binance's
  ``{"code", "msg"}``: -1121 -> ``UnknownSymbolError``, -1120 -> ``UnsupportedIntervalError``,
  anything else -> ``BinanceAPIError`` with code, msg and URL. A 404 (Binance answers it with an
  empty body) means no such endpoint: the message names the URL and the base URL and market to fix.
  A kline field that is not a number is named with the symbol, row, open time and field.
- **Symbols.** exchangeInfo (weight 20 on spot) is fetched once per client; ``check_symbols``
  names every symbol it does not list. A client may be handed the exchangeInfo body another client
  fetched earlier in the run (``RestSource`` does), so a run asks for it once, not once per symbol.
- **Counters.** ``client.stats`` counts requests, weight, 429s, retries and seconds waited.

- **Aggregate trades, paged by id.** Binance pages ``/aggTrades`` by ``fromId``; a time filter
  needs both ``startTime`` and ``endTime`` less than an hour apart. So the first request asks for
  ``startTime = start`` and ``endTime = min(end, start + 1 h) - 1 ms`` (an empty hour moves the
  window on by an hour, until the range ends), and every later request asks for
  ``fromId = last a + 1`` and ``limit = trades_page_limit`` (1000), until a page reaches a trade
  at or after ``end`` or comes back short (Binance has no newer trades). Pages therefore neither
  overlap nor leave holes; trades outside ``[start, end)`` are dropped; ids must rise strictly
  (else ``SourceDataError``), and a jump in ids between pages is logged (Binance skipped them).
- **Depth snapshots.** ``limit`` is checked before any request (spot 1..5000; USD-M futures one of
  5, 10, 20, 50, 100, 500, 1000) and charged its weight. Levels must be sorted (bids descending,
  asks ascending) and uncrossed, else ``SourceDataError``.

Weights (Binance docs): spot klines 2, spot aggTrades 4, spot depth 5/25/50/250 for ``limit``
1-100/101-500/501-1000/1001-5000, spot exchangeInfo 20; USD-M futures klines 1/2/5/10 by ``limit``
(<100, <500, <=1000, >1000), futures aggTrades 20, futures depth 2/5/10/20 for ``limit``
5-50/100/500/1000, futures exchangeInfo 1. Spot allows 6000 weight per minute, USD-M futures 2400.
The ``1s`` interval exists on spot only; futures klines allow ``limit`` up to 1500 (the client
keeps 1000, the cheapest rows-per-weight there). aggTrades allow ``limit`` up to 1000 on both.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import polars as pl
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from dagster_project.core.errors import (
    BinanceAPIError,
    BinanceIPBannedError,
    InvalidRequestError,
    SourceDataError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import (
    INTERVALS,
    TIMESTAMP,
    UTC,
    TimeRange,
    empty_klines,
    interval_length,
    klines_from_binance_rows,
    normalise_epoch_to_us,
)
from dagster_project.core.schemas import AGG_TRADE_SCHEMA, DEPTH_SNAPSHOT_SCHEMA, conform_to, empty

log = logging.getLogger(__name__)

SOURCE = "binance_rest"

BASE_URLS: dict[str, str] = {
    "spot": "https://api.binance.com",
    "futures_um": "https://fapi.binance.com",
    "binance_us": "https://api.binance.us",
    "spot_testnet": "https://testnet.binance.vision",
}

# Per preset: (market, REQUEST_WEIGHT per minute). Binance.US's limit is not verified here; the
# client lowers its limit to whatever exchangeInfo publishes once it has fetched it.
_PRESETS: dict[str, tuple[str, int]] = {
    "spot": ("spot", 6000),
    "futures_um": ("futures_um", 2400),
    "binance_us": ("spot", 1200),
    "spot_testnet": ("spot", 6000),
}

_API_PREFIX = {"spot": "/api/v3", "futures_um": "/fapi/v1"}
_MAX_PAGE_LIMIT = {"spot": 1000, "futures_um": 1500}
_EXCHANGE_INFO_WEIGHT = {"spot": 20, "futures_um": 1}
_MARKET_INTERVALS = {
    "spot": tuple(INTERVALS),
    "futures_um": tuple(i for i in INTERVALS if i != "1s"),  # futures have no 1s klines
}
_WEIGHT_HEADER = "x-mbx-used-weight-1m"

_AGG_TRADES_WEIGHT = {"spot": 4, "futures_um": 20}
_AGG_TRADES_MAX_LIMIT = 1000  # both markets
# Binance refuses (-1127) an aggTrades request whose endTime - startTime is an hour or more.
_AGG_TRADES_WINDOW_MS = 3_600_000
_SPOT_DEPTH_MAX_LIMIT = 5000
# USD-M futures accept only these depth limits; the value is the request weight.
_FUTURES_DEPTH_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


@dataclass(frozen=True)
class BinanceRestConfig:
    """How to reach Binance and how politely. Defaults are for production spot."""

    # Scheme and host of the API; see BASE_URLS (a local server in tests).
    base_url: str = BASE_URLS["spot"]
    # "spot" (paths /api/v3/...) or "futures_um" (USD-M futures, /fapi/v1/...).
    market: str = "spot"
    # Seconds before a connect/read/write/pool wait is abandoned (and retried).
    timeout_s: float = 10.0
    # Retries after the first attempt for 5xx, timeouts, resets and truncated or non-JSON bodies.
    max_retries: int = 5
    # How many 429s in a row one request may absorb (each waits exactly Retry-After).
    max_rate_limit_retries: int = 5
    # Binance's REQUEST_WEIGHT limit per window and IP (spot 6000/min; futures 2400/min).
    weight_limit_per_minute: int = 6000
    # Length of Binance's weight window: the clock minute. Tests shrink it.
    weight_window_s: float = 60.0
    # Clock skew allowance: after a window rollover, the old window must also have room for this
    # long, and a throttled request sleeps this much past the rollover.
    window_guard_s: float = 0.5
    # First retry backoff in seconds; doubles each retry, plus up to this much jitter.
    backoff_base_s: float = 0.5
    # Ceiling of one backoff sleep in seconds.
    backoff_max_s: float = 30.0
    # Rows per klines request (Binance max: spot 1000; futures 1500, but 1000 is cheaper per row).
    page_limit: int = 1000
    # Trades per aggTrades request (Binance max 1000 on both markets; the weight is per request).
    trades_page_limit: int = 1000

    def __post_init__(self) -> None:
        if self.market not in _API_PREFIX:
            raise InvalidRequestError(
                f"unknown market {self.market!r}; expected one of {', '.join(_API_PREFIX)}"
            )
        if not 1 <= self.page_limit <= _MAX_PAGE_LIMIT[self.market]:
            raise InvalidRequestError(
                f"page_limit {self.page_limit} is out of range for {self.market}; expected "
                f"1..{_MAX_PAGE_LIMIT[self.market]}"
            )
        if not 1 <= self.trades_page_limit <= _AGG_TRADES_MAX_LIMIT:
            raise InvalidRequestError(
                f"trades_page_limit {self.trades_page_limit} is out of range; expected "
                f"1..{_AGG_TRADES_MAX_LIMIT}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BinanceRestConfig:
        """The config for a named endpoint in ``BASE_URLS`` (spot, futures_um, binance_us, ...)."""
        if name not in _PRESETS:
            raise InvalidRequestError(
                f"unknown Binance preset {name!r}; expected one of {', '.join(_PRESETS)}"
            )
        market, weight_limit = _PRESETS[name]
        settings: dict[str, Any] = {
            "base_url": BASE_URLS[name],
            "market": market,
            "weight_limit_per_minute": weight_limit,
        }
        return cls(**{**settings, **overrides})


def config_from_preset(name: str, **overrides: Any) -> BinanceRestConfig:
    """``BinanceRestConfig.preset`` as a function (for resources and CLIs)."""
    return BinanceRestConfig.preset(name, **overrides)


@dataclass
class RequestStats:
    """What a client has done so far; the benchmark reports these."""

    requests: int = 0  # HTTP requests sent, including failed attempts
    weight_used: int = 0  # sum of the weights of the requests sent
    rate_limited: int = 0  # 429 responses received
    retries: int = 0  # attempts repeated after a transient failure
    throttle_wait_s: float = 0.0  # slept to let the weight window roll over
    backoff_wait_s: float = 0.0  # slept between retries of transient failures
    rate_limit_wait_s: float = 0.0  # slept on Retry-After after 429s

    @property
    def waited_s(self) -> float:
        return self.throttle_wait_s + self.backoff_wait_s + self.rate_limit_wait_s


Level = tuple[float, float]  # (price, quantity)


@dataclass(frozen=True)
class DepthSnapshot:
    """One ``/depth`` answer: the order book as of ``last_update_id``, best levels first."""

    symbol: str
    last_update_id: int  # Binance's "lastUpdateId": syncs the book with the diff-depth stream
    bids: list[Level]  # highest price first
    asks: list[Level]  # lowest price first
    received_at: dt.datetime  # local UTC time the response was decoded
    transaction_time: dt.datetime | None = None  # USD-M futures "T" (matching engine); spot: None

    def to_frame(self, levels: int | None = None, source: str = SOURCE) -> pl.DataFrame:
        """This snapshot as one ``DEPTH_SNAPSHOT_SCHEMA`` row (see ``depth_snapshots_frame``)."""
        return depth_snapshots_frame([self], levels, source)


def depth_snapshots_frame(
    snapshots: Iterable[DepthSnapshot], levels: int | None = None, source: str = SOURCE
) -> pl.DataFrame:
    """One ``DEPTH_SNAPSHOT_SCHEMA`` row per snapshot, in the order given: ``ts`` is the local
    receive time and each side keeps its best ``levels`` levels (all of them when None)."""
    if levels is not None and levels < 1:
        raise InvalidRequestError(f"levels={levels}; expected a positive number of levels or None")
    rows = [
        {
            "ts": snapshot.received_at,
            "last_update_id": snapshot.last_update_id,
            "bid_prices": [price for price, _ in snapshot.bids[:levels]],
            "bid_sizes": [qty for _, qty in snapshot.bids[:levels]],
            "ask_prices": [price for price, _ in snapshot.asks[:levels]],
            "ask_sizes": [qty for _, qty in snapshot.asks[:levels]],
            "source": source,
        }
        for snapshot in snapshots
    ]
    return (
        pl.DataFrame(rows, schema=DEPTH_SNAPSHOT_SCHEMA) if rows else empty(DEPTH_SNAPSHOT_SCHEMA)
    )


class BinanceRestClient:
    """A synchronous Binance REST market-data client; use as a context manager or ``close()``."""

    def __init__(
        self,
        config: BinanceRestConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        exchange_info: Mapping[str, Any] | None = None,
    ):
        """``exchange_info``: a body already fetched this run, used instead of asking again."""
        self.config = config or BinanceRestConfig()
        self.stats = RequestStats()
        self._clock, self._sleep = clock, sleep
        self._http = httpx.Client(
            base_url=self.config.base_url,
            timeout=httpx.Timeout(self.config.timeout_s),
            headers={"User-Agent": "candlelake/0.1"},
        )
        self._weight_limit = self.config.weight_limit_per_minute
        self._used_by_window: dict[int, int] = {}  # weight window index -> weight used in it
        self._banned_until = 0.0
        self._exchange_info: dict[str, Any] | None = None
        if exchange_info is not None:
            self._exchange_info = dict(exchange_info)
            self._adopt_published_limit(self._exchange_info)

    def __enter__(self) -> BinanceRestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- public API ------------------------------------------------------------------------------

    @property
    def weight_limit(self) -> int:
        """The weight limit per window in force (lowered to exchangeInfo's if that is lower)."""
        return self._weight_limit

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame:
        """Every kline of ``symbol``/``interval`` opening in ``[start, end)``, validated first."""
        self.validate(symbol, interval)
        pages = list(self.iter_kline_pages(symbol, interval, time_range))
        return pl.concat(pages) if pages else empty_klines()

    def iter_kline_pages(
        self, symbol: str, interval: str, time_range: TimeRange
    ) -> Iterator[pl.DataFrame]:
        """One contract frame per klines request, oldest first (see the module docstring)."""
        self.check_interval(interval)
        step_ms = int(interval_length(interval).total_seconds() * 1000)
        start_ms, end_ms = time_range.start_ms, time_range.end_ms
        while start_ms < end_ms:
            rows = self._klines_page(symbol, interval, start_ms, end_ms - 1)
            if not rows:
                return
            yield _klines_page_frame(_rows_in_range(rows, start_ms, end_ms), symbol, interval)
            if len(rows) < self.config.page_limit:  # Binance had nothing more in the range
                return
            start_ms = int(rows[-1][0]) + step_ms

    def fetch_agg_trades(self, symbol: str, time_range: TimeRange) -> pl.DataFrame:
        """Every aggregate trade of ``symbol`` with trade time in ``[start, end)``, by id, validated
        first (see the module docstring for the paging)."""
        self.validate_symbol(symbol)
        pages = list(self.iter_agg_trade_pages(symbol, time_range))
        return pl.concat(pages) if pages else empty(AGG_TRADE_SCHEMA)

    def iter_agg_trade_pages(self, symbol: str, time_range: TimeRange) -> Iterator[pl.DataFrame]:
        """One ``AGG_TRADE_SCHEMA`` frame per aggTrades request that returned trades in range,
        oldest first; the first by time window, the rest by ``fromId``."""
        start, end = time_range.start, time_range.end
        start_ms, end_ms = _floor_ms(start), _ceil_ms(end)  # every ms holding part of the range
        limit = self.config.trades_page_limit
        rows, covered_to_ms = self._first_agg_trades(symbol, start_ms, end_ms)
        last_id: int | None = None
        while rows:
            last_id = _check_agg_trade_ids(rows, last_id, symbol)
            page = agg_trades_from_binance_rows(rows, SOURCE)
            in_range = page.filter(pl.col("ts") >= start, pl.col("ts") < end)
            if in_range.height:
                yield in_range
            if page["ts"][-1] >= end:
                return
            if len(rows) < limit and covered_to_ms >= end_ms - 1:
                return  # nothing more in the range (or, after a fromId page, nothing newer)
            rows = self._agg_trades_page(symbol, {"fromId": last_id + 1, "limit": limit})
            covered_to_ms = end_ms

    def depth_snapshot(self, symbol: str, limit: int = 1000) -> DepthSnapshot:
        """The order book of ``symbol`` (``limit`` levels a side at most), validated first."""
        weight = self.depth_weight(limit)
        self.validate_symbol(symbol)
        body = self._get_json("depth", {"symbol": symbol, "limit": limit}, weight)
        received_at = dt.datetime.fromtimestamp(self._clock(), UTC)
        return depth_snapshot_from_binance(body, symbol, received_at)

    def depth_weight(self, limit: int) -> int:
        """The request weight of ``/depth?limit=limit``; raises for a limit Binance refuses."""
        if self.config.market == "spot":
            if not 1 <= limit <= _SPOT_DEPTH_MAX_LIMIT:
                raise InvalidRequestError(
                    f"depth limit {limit} is out of range for spot; expected "
                    f"1..{_SPOT_DEPTH_MAX_LIMIT}"
                )
            return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
        if limit not in _FUTURES_DEPTH_WEIGHTS:
            raise InvalidRequestError(
                f"depth limit {limit} is not offered on Binance {self.config.market}; expected "
                f"one of {', '.join(map(str, _FUTURES_DEPTH_WEIGHTS))}"
            )
        return _FUTURES_DEPTH_WEIGHTS[limit]

    def exchange_info(self) -> dict[str, Any]:
        """The market's exchangeInfo body, fetched once per client."""
        if self._exchange_info is None:
            weight = _EXCHANGE_INFO_WEIGHT[self.config.market]
            self._exchange_info = self._get_json("exchangeInfo", {}, weight)
            self._adopt_published_limit(self._exchange_info)
        return self._exchange_info

    @property
    def fetched_exchange_info(self) -> dict[str, Any] | None:
        """The exchangeInfo body if this client has it already (never sends a request)."""
        return self._exchange_info

    def check_symbols(self, symbols: Sequence[str]) -> None:
        """Raise ``UnknownSymbolError`` naming every symbol exchangeInfo does not list (one
        request at most); warn for each listed one that is not TRADING."""
        unknown = [symbol for symbol in symbols if not self._is_listed(symbol)]
        if unknown:
            listing = self._listing()
            raise UnknownSymbolError(_unknown_symbols_message(unknown, self.config, listing))

    def validate(self, symbol: str, interval: str) -> None:
        """Raise unless ``interval`` is offered and ``symbol`` listed; warn if it is not TRADING."""
        self.check_interval(interval)
        self.validate_symbol(symbol)

    def validate_symbol(self, symbol: str) -> None:
        """Raise unless exchangeInfo lists ``symbol``; warn if it is not TRADING."""
        if not self._is_listed(symbol):
            listing = self._listing()
            raise UnknownSymbolError(_unknown_symbol_message(symbol, self.config, listing))

    def _listing(self) -> dict[str, Mapping[str, Any]]:
        return {s["symbol"]: s for s in self.exchange_info().get("symbols", [])}

    def _is_listed(self, symbol: str) -> bool:
        """Whether exchangeInfo lists ``symbol``; a listed symbol not TRADING is logged."""
        entry = self._listing().get(symbol)
        if entry is None:
            return False
        status = entry.get("status", "TRADING")
        if status != "TRADING":
            log.warning(
                "%s on %s has status %s (not TRADING); its data may stop early or be missing",
                symbol,
                self.config.market,
                status,
            )
        return True

    def check_interval(self, interval: str) -> None:
        """Raise ``UnsupportedIntervalError`` unless candlelake and this market support it."""
        interval_length(interval)
        supported = _MARKET_INTERVALS[self.config.market]
        if interval not in supported:
            raise UnsupportedIntervalError(
                f"interval {interval!r} is not offered on Binance {self.config.market}; expected "
                f"one of {', '.join(supported)}"
            )

    def server_time_ms(self) -> int:
        """Binance's clock in epoch milliseconds (``/time``, weight 1)."""
        return int(self._get_json("time", {}, 1)["serverTime"])

    def ping(self) -> None:
        self._get_json("ping", {}, 1)

    # -- one klines page -------------------------------------------------------------------------

    def _klines_page(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[list[Any]]:
        limit = self.config.page_limit
        params = {
            "symbol": symbol,
            "interval": interval,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": limit,
        }
        body = self._get_json("klines", params, _klines_weight(self.config.market, limit))
        if not isinstance(body, list):
            raise SourceDataError(
                f"klines response for {symbol} {interval} is a {type(body).__name__}; "
                f"expected a JSON array of kline arrays: {str(body)[:200]}"
            )
        return body

    # -- aggTrades pages --------------------------------------------------------------------------

    def _first_agg_trades(
        self, symbol: str, start_ms: int, end_ms: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The first non-empty page of trades from ``start_ms``, asked for by time window (less
        than an hour each, as Binance requires), and the last ms that window covered."""
        window_start = start_ms
        while window_start < end_ms:
            window_end = min(end_ms, window_start + _AGG_TRADES_WINDOW_MS) - 1
            params = {
                "startTime": window_start,
                "endTime": window_end,
                "limit": self.config.trades_page_limit,
            }
            rows = self._agg_trades_page(symbol, params)
            if rows:
                return rows, window_end
            window_start = window_end + 1
        return [], end_ms

    def _agg_trades_page(self, symbol: str, params: Mapping[str, int]) -> list[dict[str, Any]]:
        weight = _AGG_TRADES_WEIGHT[self.config.market]
        body = self._get_json("aggTrades", {"symbol": symbol, **params}, weight)
        if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
            raise SourceDataError(
                f"aggTrades response for {symbol} is a {type(body).__name__}; expected a JSON "
                f"array of aggregate-trade objects: {str(body)[:200]}"
            )
        return body

    # -- HTTP with weight accounting and retries -------------------------------------------------

    def _get_json(self, endpoint: str, params: Mapping[str, Any], weight: int) -> Any:
        """GET ``endpoint`` and decode JSON, handling weight, 429s, bans and transient failures."""
        path = f"{_API_PREFIX[self.config.market]}/{endpoint}"
        url = str(self._http.build_request("GET", path, params=params).url)
        attempts = self.config.max_rate_limit_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._get_with_retries(path, params, weight, url)
            except _RateLimited as limited:
                self.stats.rate_limited += 1
                if attempt == attempts:
                    break
                log.warning("429 from %s; waiting Retry-After %.1f s", url, limited.wait_s)
                self._wait(limited.wait_s, "rate_limit_wait_s")
        raise BinanceAPIError(
            f"GET {url} was rate limited (429) {attempts} times in a row "
            f"(max_rate_limit_retries={self.config.max_rate_limit_retries}); expected the limit "
            "to clear after Retry-After"
        )

    def _get_with_retries(self, path: str, params: Mapping[str, Any], weight: int, url: str) -> Any:
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=wait_exponential_jitter(
                multiplier=self.config.backoff_base_s,
                max=self.config.backoff_max_s,
                jitter=self.config.backoff_base_s,
            ),
            sleep=lambda seconds: self._wait(seconds, "backoff_wait_s"),
            before_sleep=self._log_retry,
        )
        try:
            return retrying(self._attempt, path, params, weight, url)
        except RetryError as exhausted:
            attempt = exhausted.last_attempt
            raise BinanceAPIError(
                f"GET {url} failed after {attempt.attempt_number} attempts "
                f"(max_retries={self.config.max_retries}); last failure: {attempt.exception()}"
            ) from attempt.exception()

    def _attempt(self, path: str, params: Mapping[str, Any], weight: int, url: str) -> Any:
        self._check_not_banned(url)
        self._reserve_weight(weight)
        self.stats.requests += 1
        self.stats.weight_used += weight
        try:
            response = self._http.get(path, params=params)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        self._record_used_weight(response)
        return self._decode(response, url)

    def _decode(self, response: httpx.Response, url: str) -> Any:
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise _Transient(
                    f"invalid JSON body ({len(response.content)} bytes): {exc}"
                ) from exc
        if status == 429:
            raise _RateLimited(self._retry_after_s(response))
        if status == 418:
            self._banned_until = self._clock() + self._retry_after_s(response)
            raise BinanceIPBannedError(
                f"Binance answered 418 (IP banned) to GET {url}; Retry-After "
                f"{response.headers.get('Retry-After', 'absent')} s; "
                f"{_error_text(response)}; expected no requests until the ban is over"
            )
        if status >= 500:
            raise _Transient(f"HTTP {status}: {_error_text(response)}")
        raise _client_error(response, url, self.config)

    # -- request weight --------------------------------------------------------------------------

    def _reserve_weight(self, weight: int) -> None:
        """Sleep until ``weight`` more fits the exchange's current window, then count it."""
        if weight > self._weight_limit:
            raise InvalidRequestError(
                f"a request of weight {weight} can never fit the weight limit "
                f"{self._weight_limit} per window; expected a limit >= {weight}"
            )
        wait = self._seconds_until_weight_fits(weight)
        while wait > 0:
            log.info(
                "weight %d + %d would pass the limit %d; waiting %.2f s for the next window",
                self._used_in(self._window_at(self._clock())),
                weight,
                self._weight_limit,
                wait,
            )
            self._wait(wait, "throttle_wait_s")
            wait = self._seconds_until_weight_fits(weight)
        index = self._window_at(self._clock())
        self._used_by_window[index] = self._used_in(index) + weight

    def _seconds_until_weight_fits(self, weight: int) -> float:
        """0 if ``weight`` fits now; else the seconds until the window (plus guard) rolls over.

        During the first ``window_guard_s`` of a window the exchange's clock may still be in the
        previous one, so that window's budget must also have room.
        """
        now = self._clock()
        index = self._window_at(now)
        window_s, guard_s = self.config.weight_window_s, self.config.window_guard_s
        if self._used_in(index) + weight > self._weight_limit:
            return (index + 1) * window_s + guard_s - now
        in_guard = now - index * window_s < guard_s
        if in_guard and self._used_in(index - 1) + weight > self._weight_limit:
            return index * window_s + guard_s - now
        return 0.0

    def _record_used_weight(self, response: httpx.Response) -> None:
        """Adopt the exchange's count for the current window (it includes other users of the IP)."""
        header = response.headers.get(_WEIGHT_HEADER)
        if header is None or not header.strip().isdigit():
            return
        index = self._window_at(self._clock())
        self._used_by_window = {i: w for i, w in self._used_by_window.items() if i >= index - 1}
        self._used_by_window[index] = int(header)

    def _window_at(self, now: float) -> int:
        """The index of Binance's weight window (the clock minute by default) holding ``now``."""
        return math.floor(now / self.config.weight_window_s)

    def _used_in(self, index: int) -> int:
        return self._used_by_window.get(index, 0)

    def _adopt_published_limit(self, info: Mapping[str, Any]) -> None:
        for limit in info.get("rateLimits", []):
            if (limit.get("rateLimitType"), limit.get("interval"), limit.get("intervalNum")) != (
                "REQUEST_WEIGHT",
                "MINUTE",
                1,
            ):
                continue
            published = int(limit.get("limit", self._weight_limit))
            if published < self._weight_limit:
                log.info(
                    "exchangeInfo publishes REQUEST_WEIGHT %d per minute; lowering the client's "
                    "limit from %d",
                    published,
                    self._weight_limit,
                )
                self._weight_limit = published

    # -- helpers ---------------------------------------------------------------------------------

    def _check_not_banned(self, url: str) -> None:
        remaining = self._banned_until - self._clock()
        if remaining > 0:
            raise BinanceIPBannedError(
                f"not sending GET {url}: Binance banned this IP (418) for {remaining:.0f} s more; "
                "expected no requests until the ban is over"
            )

    def _retry_after_s(self, response: httpx.Response) -> float:
        value = response.headers.get("Retry-After", "")
        try:
            return max(0.0, float(value))
        except ValueError:  # absent or an HTTP date: wait for the next window
            index = self._window_at(self._clock())
            next_start = (index + 1) * self.config.weight_window_s + self.config.window_guard_s
            return max(0.0, next_start - self._clock())

    def _wait(self, seconds: float, counter: str) -> None:
        if seconds <= 0:
            return
        setattr(self.stats, counter, getattr(self.stats, counter) + seconds)
        self._sleep(seconds)

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        outcome = state.outcome
        log.warning(
            "attempt %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            outcome.exception() if outcome is not None else "unknown",
            state.upcoming_sleep,
        )


class _Transient(Exception):
    """A failure worth retrying: 5xx, timeout, reset, truncated or non-JSON body."""


class _RateLimited(Exception):
    """A 429: wait ``wait_s`` (Retry-After) and try again."""

    def __init__(self, wait_s: float):
        super().__init__(f"429, Retry-After {wait_s} s")
        self.wait_s = wait_s


def _klines_weight(market: str, limit: int) -> int:
    if market == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


def agg_trades_from_binance_rows(
    rows: Sequence[Mapping[str, Any]], source: str = SOURCE
) -> pl.DataFrame:
    """Binance aggregate-trade objects (``a p q f l T m``; ``M`` ignored) as ``AGG_TRADE_SCHEMA``.

    Prices and quantities may be strings (as Binance sends them) or numbers; times ms or µs.
    """
    columns: dict[str, list[Any]] = {name: [] for name in _AGG_TRADE_FIELDS}
    for index, row in enumerate(rows):
        try:
            values = [parse(row[key]) for key, (_, parse) in _AGG_TRADE_FIELDS.items()]
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceDataError(
                f"aggregate trade {index} is malformed ({type(exc).__name__}: {exc}): "
                f"{dict(row)!r}; expected keys a, p, q, f, l, T (numbers) and m (boolean)"
            ) from None
        for name, value in zip(_AGG_TRADE_FIELDS, values, strict=True):
            columns[name].append(value)
    frame = pl.DataFrame(
        {column: columns[key] for key, (column, _) in _AGG_TRADE_FIELDS.items()},
        schema={
            "agg_trade_id": pl.Int64,
            "price": pl.Float64,
            "qty": pl.Float64,
            "first_trade_id": pl.Int64,
            "last_trade_id": pl.Int64,
            "ts": pl.Int64,
            "is_buyer_maker": pl.Boolean,
        },
    )
    frame = frame.with_columns(
        normalise_epoch_to_us(pl.col("ts")).cast(TIMESTAMP), pl.lit(source).alias("source")
    )
    return conform_to(frame, AGG_TRADE_SCHEMA, "agg_trades")


def depth_snapshot_from_binance(body: Any, symbol: str, received_at: dt.datetime) -> DepthSnapshot:
    """A ``/depth`` body (``lastUpdateId``, ``bids``, ``asks``; futures add ``E`` and ``T``) as a
    ``DepthSnapshot``, checked: levels are [price, qty] pairs, sorted best first, not crossed."""
    if not isinstance(body, dict) or not {"lastUpdateId", "bids", "asks"} <= body.keys():
        raise SourceDataError(
            f"depth response for {symbol} is {str(body)[:200]!r}; expected an object with "
            "lastUpdateId, bids and asks"
        )
    try:
        last_update_id = int(body["lastUpdateId"])
        bids = [(float(price), float(qty)) for price, qty in body["bids"]]
        asks = [(float(price), float(qty)) for price, qty in body["asks"]]
    except (TypeError, ValueError) as exc:
        raise SourceDataError(
            f"depth response for {symbol} holds a malformed value ({exc}); expected an integer "
            "lastUpdateId and levels as [price, qty] pairs of numbers"
        ) from None
    _check_sorted(bids, descending=True, side="bids", symbol=symbol)
    _check_sorted(asks, descending=False, side="asks", symbol=symbol)
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise SourceDataError(
            f"depth response for {symbol} is crossed: best bid {bids[0][0]} >= best ask "
            f"{asks[0][0]}; expected best bid < best ask"
        )
    engine_ms = body.get("T")
    transaction_time = (
        dt.datetime.fromtimestamp(int(engine_ms) / 1000, UTC) if engine_ms is not None else None
    )
    return DepthSnapshot(symbol, last_update_id, bids, asks, received_at, transaction_time)


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"m is {value!r}, not a boolean")
    return value


# Wire key -> (contract column, parser). bool() would accept anything, so "m" must be a boolean.
_AGG_TRADE_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "a": ("agg_trade_id", int),
    "p": ("price", float),
    "q": ("qty", float),
    "f": ("first_trade_id", int),
    "l": ("last_trade_id", int),
    "T": ("ts", int),
    "m": ("is_buyer_maker", _strict_bool),
}


def _check_sorted(levels: list[Level], descending: bool, side: str, symbol: str) -> None:
    prices = [price for price, _ in levels]
    pairs = zip(prices, prices[1:], strict=False)
    bad = next((i for i, (a, b) in enumerate(pairs) if (a <= b if descending else a >= b)), None)
    if bad is not None:
        order = "descending" if descending else "ascending"
        raise SourceDataError(
            f"depth response for {symbol}: {side} level {bad + 1} price {prices[bad + 1]} follows "
            f"{prices[bad]}; expected strictly {order} prices, best first"
        )


def _check_agg_trade_ids(rows: list[dict[str, Any]], previous: int | None, symbol: str) -> int:
    """The page's last id, after checking ids rise strictly within it and from ``previous``."""
    try:
        ids = [int(row["a"]) for row in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceDataError(
            f"aggTrades page for {symbol} has a row without an integer id 'a' ({exc})"
        ) from None
    if previous is not None and ids[0] != previous + 1:
        if ids[0] <= previous:
            raise SourceDataError(
                f"aggTrades page for {symbol} asked from id {previous + 1} starts at {ids[0]}; "
                "expected ids after the previous page"
            )
        log.warning(
            "%s aggregate trade ids jump from %d to %d: Binance has no trades %d..%d",
            symbol, previous, ids[0], previous + 1, ids[0] - 1,
        )  # fmt: skip
    bad = next((i for i in range(1, len(ids)) if ids[i] <= ids[i - 1]), None)
    if bad is not None:
        raise SourceDataError(
            f"aggTrades page for {symbol} has id {ids[bad]} after {ids[bad - 1]}; expected "
            "strictly rising aggregate trade ids"
        )
    return ids[-1]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_MS = dt.timedelta(milliseconds=1)


def _floor_ms(value: dt.datetime) -> int:
    """Epoch ms of ``value``, rounded down (exact integer arithmetic, no float error)."""
    return (value - _EPOCH) // _MS


def _ceil_ms(value: dt.datetime) -> int:
    return -((_EPOCH - value) // _MS)


def _rows_in_range(rows: list[list[Any]], start_ms: int, end_ms: int) -> list[list[Any]]:
    """``rows`` opening in ``[start_ms, end_ms)``; a page wholly outside it is a broken source."""
    kept = [row for row in rows if start_ms <= int(row[0]) < end_ms]
    if not kept:
        raise SourceDataError(
            f"klines page for [{start_ms}, {end_ms}) ms holds {len(rows)} rows, none in range "
            f"(first open time {rows[0][0]}); expected rows opening inside the requested range"
        )
    return kept


def _client_error(response: httpx.Response, url: str, config: BinanceRestConfig) -> Exception:
    code, msg = _binance_error(response)
    if response.status_code == 404 and code is None:
        return BinanceAPIError(
            f"GET {url} answered HTTP 404 ({msg or 'empty body'}): no such endpoint at "
            f"base_url {config.base_url} for market {config.market!r}; expected Binance's "
            f"{config.market} API there (paths {_API_PREFIX[config.market]}/...): check base_url "
            "and market (spot: https://api.binance.com, USD-M futures: https://fapi.binance.com "
            "with market 'futures_um')"
        )
    if code == -1121:
        return UnknownSymbolError(f"Binance does not list the symbol in GET {url}: {code} {msg}")
    if code == -1120:
        return UnsupportedIntervalError(f"Binance rejected the interval in GET {url}: {code} {msg}")
    if code is None:
        return BinanceAPIError(
            f"Binance rejected GET {url} with HTTP {response.status_code}: {msg or 'empty body'}"
        )
    return BinanceAPIError(
        f"Binance rejected GET {url} with HTTP {response.status_code}, code {code}: {msg}"
    )


def _binance_error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict):
        return body.get("code"), str(body.get("msg", ""))
    return None, str(body)[:200]


def _error_text(response: httpx.Response) -> str:
    code, msg = _binance_error(response)
    return msg if code is None else f"code {code}: {msg}"


def _unknown_symbol_message(
    symbol: str, config: BinanceRestConfig, listing: Mapping[str, Any]
) -> str:
    close = _close_matches(symbol, listing)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"symbol {symbol!r} is not listed on Binance {config.market} ({config.base_url}); "
        f"expected one of its {len(listing)} exchangeInfo symbols{hint}"
    )


def _unknown_symbols_message(
    symbols: Sequence[str], config: BinanceRestConfig, listing: Mapping[str, Any]
) -> str:
    hints = [
        f"{symbol} (did you mean {', '.join(close)}?)"
        for symbol in symbols
        if (close := _close_matches(symbol, listing))
    ]
    verb = "is" if len(symbols) == 1 else "are"
    return (
        f"{', '.join(symbols)} {verb} not listed on Binance {config.market} ({config.base_url})"
        f"{': ' + '; '.join(hints) if hints else ''}; expected symbols among its {len(listing)} "
        "exchangeInfo symbols"
    )


def _close_matches(symbol: str, listing: Mapping[str, Any]) -> list[str]:
    return difflib.get_close_matches(symbol.upper(), list(listing), n=3, cutoff=0.75)


# The 11 kline fields the contract keeps, in Binance's order; the 12th ("ignore") is dropped.
_KLINE_FIELDS: tuple[tuple[str, type], ...] = (
    ("open_time", int), ("open", float), ("high", float), ("low", float), ("close", float),
    ("volume", float), ("close_time", int), ("quote_volume", float), ("trades", int),
    ("taker_buy_base_volume", float), ("taker_buy_quote_volume", float),
)  # fmt: skip


def _klines_page_frame(rows: list[list[Any]], symbol: str, interval: str) -> pl.DataFrame:
    """``rows`` as the contract; a malformed row is named with its symbol, index, open time and
    field (a slow pass, run only once the fast conversion has failed)."""
    try:
        return klines_from_binance_rows(rows, SOURCE)
    except SourceDataError as exc:
        named = _malformed_kline(rows, symbol, interval)
        if named is None:
            raise
        raise named from exc


def _malformed_kline(rows: list[list[Any]], symbol: str, interval: str) -> SourceDataError | None:
    for index, row in enumerate(rows):
        problem = _kline_row_problem(row)
        if problem is None:
            continue
        opened = _open_time_text(row[0] if row else None)
        return SourceDataError(
            f"Binance {symbol} {interval} kline row {index} of the page (open time {opened}): "
            f"{problem}: {str(row)[:200]}; expected 12 fields, numbers or numeric strings"
        )
    return None


def _kline_row_problem(row: Any) -> str | None:
    if not isinstance(row, list | tuple) or len(row) < len(_KLINE_FIELDS):
        return f"{len(row) if isinstance(row, list | tuple) else 0} fields"
    for (name, kind), value in zip(_KLINE_FIELDS, row, strict=False):
        try:
            kind(value)
        except (TypeError, ValueError):
            return f"{name} is {value!r}, not {'an integer' if kind is int else 'a number'}"
    return None


def _open_time_text(value: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, UTC).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return f"{value!r} (not epoch milliseconds)"


__all__ = [
    "BASE_URLS",
    "BinanceRestClient",
    "BinanceRestConfig",
    "DepthSnapshot",
    "RequestStats",
    "agg_trades_from_binance_rows",
    "config_from_preset",
    "depth_snapshot_from_binance",
    "depth_snapshots_frame",
]
