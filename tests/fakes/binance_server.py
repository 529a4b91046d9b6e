"""A local stand-in for Binance's public REST market-data API, for tests and benchmarks.

``FakeBinance`` listens on 127.0.0.1 (port 0, so the OS picks a free one), serves in a background
thread and speaks Binance's wire format byte for byte where it matters:

- ``/api/v3/{klines,exchangeInfo,ping,time}`` (spot rules) and ``/fapi/v1/...`` (USD-M futures
  rules: ``limit`` up to 1500, weight by ``limit``, no ``1s`` interval).
- Klines come from a dict ``(symbol, interval) -> rows`` of Binance's 12-field arrays (times as int
  ms, prices and volumes as strings, trades as int, a final ``"0"``), either real rows
  (``load_real_klines``) or ``SyntheticKlines`` generated on demand in the same format. Selection
  follows Binance: ascending, ``startTime <= open_time <= endTime``, at most ``limit`` rows
  (default 500); the most recent rows when no ``startTime`` is sent.
- Errors are Binance's ``{"code": .., "msg": ..}`` bodies with HTTP 400: ``-1121`` unknown symbol,
  ``-1120`` bad interval, ``-1130`` bad ``limit``, ``-1102`` missing parameter.
- Every response carries ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-USED-WEIGHT``. With
  ``weight_limit`` set, a request that would take the window's weight over the limit gets 429,
  ``Retry-After`` (whole seconds to the window's end) and Binance's ``-1003`` body. Windows are
  aligned to the epoch like Binance's clock minute (``window_s`` shrinks them for tests).
- ``script(*faults)`` queues faults for the next matching requests: 429, 418, 5xx, a delay, a
  truncated body, a body that is not JSON, a connection reset.
- ``requests`` is a log of every request (path, params, time, status, fault) for assertions.

Nothing here contacts the real Binance.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from tests.fakes.local_server import LocalServer

KlineRow = list[Any]

SPOT_INTERVALS_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 2_592_000_000,  # nominal; the fake never steps by months
}
FUTURES_INTERVALS_MS: dict[str, int] = {k: v for k, v in SPOT_INTERVALS_MS.items() if k != "1s"}


@dataclass(frozen=True)
class MarketRules:
    """What differs between Binance's spot (``/api/v3``) and USD-M futures (``/fapi/v1``) APIs."""

    prefix: str
    intervals: Mapping[str, int]
    max_limit: int
    exchange_info_weight: int

    def klines_weight(self, limit: int) -> int:
        if self.prefix == "/api/v3":
            return 2
        if limit < 100:
            return 1
        if limit < 500:
            return 2
        return 5 if limit <= 1000 else 10


SPOT = MarketRules("/api/v3", SPOT_INTERVALS_MS, max_limit=1000, exchange_info_weight=20)
FUTURES_UM = MarketRules("/fapi/v1", FUTURES_INTERVALS_MS, max_limit=1500, exchange_info_weight=1)
MARKETS: dict[str, MarketRules] = {SPOT.prefix: SPOT, FUTURES_UM.prefix: FUTURES_UM}
DEFAULT_KLINES_LIMIT = 500  # Binance's default when no limit is sent


# ------------------------------------------------------------------------------------------------
# Kline data: real rows or synthetic rows generated on demand
# ------------------------------------------------------------------------------------------------


class KlineSeries(Protocol):
    """Rows of one (symbol, interval), ascending by open time."""

    def select(self, start_ms: int | None, end_ms: int | None, limit: int) -> list[KlineRow]: ...


class RowKlines:
    """A series held as a list of Binance rows (real captures, or small synthetic lists)."""

    def __init__(self, rows: Sequence[KlineRow]):
        self.rows = sorted(rows, key=lambda row: int(row[0]))
        self.open_times = [int(row[0]) for row in self.rows]

    def select(self, start_ms: int | None, end_ms: int | None, limit: int) -> list[KlineRow]:
        lo = 0 if start_ms is None else bisect.bisect_left(self.open_times, start_ms)
        hi = len(self.rows) if end_ms is None else bisect.bisect_right(self.open_times, end_ms)
        if start_ms is None:  # Binance: the most recent `limit` rows up to endTime
            lo = max(lo, hi - limit)
        return self.rows[lo : min(hi, lo + limit)]


@dataclass(frozen=True)
class SyntheticKlines:
    """``count`` synthetic bars from ``start_ms``, computed per index so huge series cost nothing.

    Prices follow a smooth deterministic path plus hashed noise; OHLC, volumes and trades are
    consistent (low <= open, close <= high; taker volume <= volume). Not market-realistic: it exists
    to exercise wire formats and paging.
    """

    start_ms: int
    interval_ms: int
    count: int
    base_price: float = 30_000.0
    seed: int = 0

    def select(self, start_ms: int | None, end_ms: int | None, limit: int) -> list[KlineRow]:
        hi = self.count if end_ms is None else min(self.count, self._index_at_or_before(end_ms) + 1)
        lo = 0 if start_ms is None else max(0, self._index_at_or_after(start_ms))
        if start_ms is None:
            lo = max(lo, hi - limit)
        return self.rows_between(lo, min(hi, lo + limit))

    def rows(self) -> list[KlineRow]:
        return self.rows_between(0, self.count)

    def rows_between(self, lo: int, hi: int) -> list[KlineRow]:
        """Rows ``lo <= i < hi``, computed with numpy (a 1000-row page in about a millisecond)."""
        if hi <= lo:
            return []
        i = np.arange(lo, hi, dtype=np.uint64)
        open_, close = self._prices(i), self._prices(i + np.uint64(1))
        high = np.maximum(open_, close) * (1 + 0.0005 * _units(self.seed, i, 1))
        low = np.minimum(open_, close) * (1 - 0.0005 * _units(self.seed, i, 2))
        volume = 1 + 20 * _units(self.seed, i, 3)
        taker_base = volume * _units(self.seed, i, 4)
        mid = (open_ + close) / 2
        trades = 1 + (900 * _units(self.seed, i, 5)).astype(np.int64)
        open_times = self.start_ms + np.arange(lo, hi, dtype=np.int64) * self.interval_ms
        columns = zip(
            open_times.tolist(), open_.tolist(), high.tolist(), low.tolist(), close.tolist(),
            volume.tolist(), (volume * mid).tolist(), trades.tolist(), taker_base.tolist(),
            (taker_base * mid).tolist(), strict=True,
        )  # fmt: skip
        last = self.interval_ms - 1
        return [
            [t, f"{o:.8f}", f"{h:.8f}", f"{lo_:.8f}", f"{c:.8f}", f"{v:.8f}", t + last,
             f"{q:.8f}", n, f"{tb:.8f}", f"{tq:.8f}", "0"]
            for t, o, h, lo_, c, v, q, n, tb, tq in columns
        ]  # fmt: skip

    def _prices(self, i: np.ndarray) -> np.ndarray:
        x = i.astype(np.float64)
        drift = 0.08 * np.sin(x / 5000) + 0.01 * np.sin(x / 97)
        noise = 0.002 * (_units(self.seed, i, 0) - 0.5)
        return np.round(self.base_price * (1 + drift + noise), 2)

    def _index_at_or_after(self, ms: int) -> int:
        return -((self.start_ms - ms) // self.interval_ms)  # ceil division

    def _index_at_or_before(self, ms: int) -> int:
        return (ms - self.start_ms) // self.interval_ms


def synthetic_kline_rows(
    symbol: str, interval: str, start: dt.datetime | int, count: int, seed: int = 0
) -> list[KlineRow]:
    """``count`` synthetic rows in Binance's wire format for ``symbol``/``interval`` from ``start``.

    ``start`` is a UTC datetime or epoch ms. The symbol only perturbs the seed so different symbols
    get different (deterministic) prices.
    """
    return synthetic_series(symbol, interval, start, count, seed).rows()


def synthetic_series(
    symbol: str, interval: str, start: dt.datetime | int, count: int, seed: int = 0
) -> SyntheticKlines:
    start_ms = start if isinstance(start, int) else int(start.timestamp() * 1000)
    symbol_seed = seed ^ sum(ord(c) << (i % 24) for i, c in enumerate(symbol))
    return SyntheticKlines(start_ms, SPOT_INTERVALS_MS[interval], count, seed=symbol_seed)


def _units(seed: int, i: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) per index (splitmix64 of seed, i, salt)."""
    mask = (1 << 64) - 1
    key = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0x94D049BB133111EB) & mask)
    x = key + i * np.uint64(0xBF58476D1CE4E5B9)  # uint64 arithmetic wraps, as splitmix64 wants
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


# ------------------------------------------------------------------------------------------------
# Real bodies from ../shared/data and synthetic exchangeInfo
# ------------------------------------------------------------------------------------------------

_RECORDED_LINE = re.compile(r"^(?P<url>\S+) -> (?P<time>[0-9.]+): (?P<body>.*)$", re.DOTALL)


def load_real_klines(binance_dir: Path) -> dict[tuple[str, str], list[KlineRow]]:
    """The real ``/api/v3/klines`` body in ``rest/http_spot_market_klines.json`` (BTCUSDT 1m)."""
    rows = json.loads((binance_dir / "rest" / "http_spot_market_klines.json").read_text())
    return {("BTCUSDT", "1m"): rows}


def load_real_exchange_info(binance_dir: Path, complete: bool = False) -> dict[str, Any]:
    """A real spot ``/api/v3/exchangeInfo`` body.

    ``complete=False``: the capture trimmed to BTCUSDT and ETHUSDT. ``complete=True``: every symbol
    (2021-10-12), from line 1 of ``cryptofeed_BINANCE_exchangeinfo_config.0``
    (``<url> -> <unix time>: <json>``).
    """
    rest = binance_dir / "rest"
    if not complete:
        return json.loads((rest / "http_spot_market_exchange_info.json").read_text())
    with (rest / "cryptofeed_BINANCE_exchangeinfo_config.0").open() as handle:
        first_line = handle.readline()
    match = _RECORDED_LINE.match(first_line.rstrip("\n"))
    if match is None:
        raise ValueError(
            f"line 1 of the exchangeInfo capture is not '<url> -> <time>: <json>': "
            f"{first_line[:80]!r}"
        )
    return json.loads(match["body"])


def synthetic_exchange_info(
    symbols: Iterable[str],
    weight_limit: int = 6000,
    statuses: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An exchangeInfo body in Binance's shape listing ``symbols`` (status TRADING unless given)."""
    statuses = statuses or {}
    return {
        "timezone": "UTC",
        "serverTime": int(time.time() * 1000),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ],
        "exchangeFilters": [],
        "symbols": [_symbol_entry(symbol, statuses.get(symbol, "TRADING")) for symbol in symbols],
    }


def _symbol_entry(symbol: str, status: str) -> dict[str, Any]:
    quote = next(
        (q for q in ("USDT", "BUSD", "USDC", "BTC", "ETH", "BNB") if symbol.endswith(q)),
        symbol[-3:],
    )
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": symbol[: -len(quote)],
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [],
        "permissions": ["SPOT"],
    }


# ------------------------------------------------------------------------------------------------
# Faults and the request log
# ------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour, applied to the next request whose path contains ``path``.

    ``skip`` lets that many matching requests through first (e.g. ``skip=1`` hits page 2).
    Kinds: ``429``, ``418``, ``5xx`` (``status`` 500/502/503), ``delay`` (sleep ``delay_s`` then
    answer normally), ``truncate`` (Content-Length larger than the bytes sent, then close),
    ``bad_json`` (a 200 whose body is cut JSON with a matching Content-Length), ``reset`` (TCP RST),
    ``error`` (HTTP ``status`` with Binance's ``{"code": code, "msg": msg}``).
    """

    kind: str
    path: str = ""
    status: int = 500
    retry_after: int = 1
    delay_s: float = 0.0
    skip: int = 0
    code: int = 0
    msg: str = ""

    @classmethod
    def rate_limited(cls, retry_after: int = 1, path: str = "", skip: int = 0) -> Fault:
        return cls("429", path, status=429, retry_after=retry_after, skip=skip)

    @classmethod
    def banned(cls, retry_after: int = 120, path: str = "", skip: int = 0) -> Fault:
        return cls("418", path, status=418, retry_after=retry_after, skip=skip)

    @classmethod
    def server_error(cls, status: int = 500, path: str = "", skip: int = 0) -> Fault:
        return cls("5xx", path, status=status, skip=skip)

    @classmethod
    def delay(cls, delay_s: float, path: str = "", skip: int = 0) -> Fault:
        return cls("delay", path, delay_s=delay_s, skip=skip)

    @classmethod
    def truncate(cls, path: str = "", skip: int = 0) -> Fault:
        return cls("truncate", path, skip=skip)

    @classmethod
    def bad_json(cls, path: str = "", skip: int = 0) -> Fault:
        return cls("bad_json", path, skip=skip)

    @classmethod
    def reset(cls, path: str = "", skip: int = 0) -> Fault:
        return cls("reset", path, skip=skip)

    @classmethod
    def api_error(
        cls, code: int, msg: str, status: int = 400, path: str = "", skip: int = 0
    ) -> Fault:
        return cls("error", path, status=status, code=code, msg=msg, skip=skip)


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    params: dict[str, str]
    time: float  # when the request arrived (epoch seconds)
    status: int  # 0 when the connection was reset or cut before a status line
    fault: str | None = None


# ------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------


@dataclass
class _WeightWindow:
    window_s: float
    limit: int | None
    index: int = -1
    used: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, weight: int) -> tuple[bool, int, int]:
        """(accepted, used weight after this request, seconds to the window's end)."""
        with self.lock:
            now = time.time()
            index = int(now // self.window_s)
            if index != self.index:
                self.index, self.used = index, 0
            retry_after = max(1, math.ceil((index + 1) * self.window_s - now))
            if self.limit is not None and self.used + weight > self.limit:
                return False, self.used, retry_after
            self.used += weight
            return True, self.used, retry_after

    def current(self) -> int:
        with self.lock:
            return self.used if int(time.time() // self.window_s) == self.index else 0


class FakeBinance(LocalServer):
    """A threaded local Binance REST server; use as a context manager (``with FakeBinance() as b``).

    ``klines``: ``(symbol, interval) -> rows`` (a list of Binance rows or a ``KlineSeries``).
    ``exchange_info``: the exchangeInfo body (default: synthetic, listing the klines' symbols).
    ``weight_limit``/``window_s``: request-weight enforcement (None: count and report only).
    """

    def __init__(
        self,
        klines: Mapping[tuple[str, str], Sequence[KlineRow] | KlineSeries] | None = None,
        exchange_info: Mapping[str, Any] | None = None,
        weight_limit: int | None = None,
        window_s: float = 60.0,
    ):
        self.series: dict[tuple[str, str], KlineSeries] = {
            key: _as_series(rows) for key, rows in (klines or {}).items()
        }
        symbols = sorted({symbol for symbol, _ in self.series})
        self.exchange_info: dict[str, Any] = dict(
            exchange_info or synthetic_exchange_info(symbols, weight_limit or 6000)
        )
        self.weight = _WeightWindow(window_s, weight_limit)
        self.requests: list[LoggedRequest] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        super().__init__()

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    # -- scripting and assertions ----------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults; each applies once to the next request matching its path."""
        with self._lock:
            self._faults.extend(faults)

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def add_klines(
        self, symbol: str, interval: str, rows: Sequence[KlineRow] | KlineSeries
    ) -> None:
        self.series[(symbol, interval)] = _as_series(rows)

    def requests_to(self, endpoint: str) -> list[LoggedRequest]:
        """Logged requests whose path ends with ``endpoint`` (e.g. ``"klines"``)."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith(endpoint)]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- used by the handler ---------------------------------------------------------------------

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path in path:
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    self._faults.remove(fault)
                    return fault
        return None

    def _log(
        self, path: str, params: dict[str, str], arrived: float, status: int, fault: str | None
    ) -> None:
        with self._lock:
            self.requests.append(LoggedRequest(path, params, arrived, status, fault))


def _as_series(rows: Sequence[KlineRow] | KlineSeries) -> KlineSeries:
    return rows if hasattr(rows, "select") else RowKlines(rows)  # type: ignore[return-value]


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class _Handler(BaseHTTPRequestHandler):
    owner: FakeBinance
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server_version = "nginx"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        arrived = time.time()
        split = urlsplit(self.path)
        path, params = split.path, dict(parse_qsl(split.query))
        fault = self.owner._next_fault(path)
        try:
            if fault is not None and fault.kind != "delay":
                status = self._apply_fault(fault, path, params)
            else:
                if fault is not None:
                    time.sleep(fault.delay_s)
                status, body, used = self._route(path, params)
                self._send(status, body, used)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
            self.close_connection = True
            status = 0
        self.owner._log(path, params, arrived, status, fault.kind if fault else None)

    # -- normal answers --------------------------------------------------------------------------

    def _route(self, path: str, params: dict[str, str]) -> tuple[int, Any, int]:
        prefix, _, endpoint = path.rpartition("/")
        rules = MARKETS.get(prefix)
        if rules is None or endpoint not in ("klines", "exchangeInfo", "ping", "time"):
            return 404, {"code": -1000, "msg": f"Unknown path {path}."}, self.owner.weight.current()
        weight = self._weight(rules, endpoint, params)
        accepted, used, retry_after = self.owner.weight.charge(weight)
        if not accepted:
            self._retry_after = retry_after
            return 429, _too_much_weight(self.owner.weight.limit, self.owner.weight.window_s), used
        try:
            return 200, self._answer(rules, endpoint, params), used
        except _ApiError as error:
            return error.status, {"code": error.code, "msg": error.msg}, used

    @staticmethod
    def _weight(rules: MarketRules, endpoint: str, params: dict[str, str]) -> int:
        if endpoint == "exchangeInfo":
            return rules.exchange_info_weight
        if endpoint == "klines":
            limit = params.get("limit", "")
            return rules.klines_weight(int(limit) if limit.isdigit() else DEFAULT_KLINES_LIMIT)
        return 1

    def _answer(self, rules: MarketRules, endpoint: str, params: dict[str, str]) -> Any:
        if endpoint == "ping":
            return {}
        if endpoint == "time":
            return {"serverTime": int(time.time() * 1000)}
        if endpoint == "exchangeInfo":
            return self.owner.exchange_info
        return self._klines(rules, params)

    def _klines(self, rules: MarketRules, params: dict[str, str]) -> list[KlineRow]:
        symbol, interval = params.get("symbol", ""), params.get("interval", "")
        for name, value in (("symbol", symbol), ("interval", interval)):
            if not value:
                raise _ApiError(
                    400,
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        if not self._listed(symbol):
            raise _ApiError(400, -1121, "Invalid symbol.")
        if interval not in rules.intervals:
            raise _ApiError(400, -1120, "Invalid interval.")
        limit = _int_param(params, "limit", DEFAULT_KLINES_LIMIT)
        if not 1 <= limit <= rules.max_limit:
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(params, "startTime", None), _int_param(params, "endTime", None)
        if start is not None and end is not None and start > end:
            raise _ApiError(400, -1023, "Start time is greater than end time.")
        series = self.owner.series.get((symbol, interval))
        return [] if series is None else series.select(start, end, limit)

    def _listed(self, symbol: str) -> bool:
        listed = {s["symbol"] for s in self.owner.exchange_info.get("symbols", [])}
        return symbol in listed or any(symbol == s for s, _ in self.owner.series)

    # -- faults ----------------------------------------------------------------------------------

    def _apply_fault(self, fault: Fault, path: str, params: dict[str, str]) -> int:
        """Misbehave as ``fault`` says; the HTTP status sent (0: none, the connection was cut)."""
        used = self.owner.weight.current()
        if fault.kind == "429":
            self._retry_after = fault.retry_after
            self._send(
                429, _too_much_weight(self.owner.weight.limit, self.owner.weight.window_s), used
            )
        elif fault.kind == "418":
            self._retry_after = fault.retry_after
            until = int((time.time() + fault.retry_after) * 1000)
            self._send(
                418,
                {
                    "code": -1003,
                    "msg": f"Way too much request weight used; IP banned "
                    f"until {until}. Please use WebSocket Streams for live updates to "
                    "avoid bans.",
                },
                used,
            )
        elif fault.kind == "5xx":
            self._send_5xx(fault.status, used)
        elif fault.kind == "truncate":
            self._send_truncated(self._route(path, params)[1], used)
        elif fault.kind == "bad_json":
            text = json.dumps(self._route(path, params)[1], separators=(",", ":"))
            self._send_raw(200, text[: max(1, len(text) // 2)].encode(), used)
        elif fault.kind == "reset":
            self._reset_connection()
        elif fault.kind == "error":
            self._send(fault.status, {"code": fault.code, "msg": fault.msg}, used)
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        if fault.kind == "reset":
            return 0
        return 200 if fault.kind in ("bad_json", "truncate") else fault.status

    def _send_5xx(self, status: int, used: int) -> None:
        if status == 500:
            self._send(
                500,
                {"code": -1000, "msg": "An unknown error occurred while processing the request."},
                used,
            )
            return
        reason = {502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Server Error")
        html = f"<html><head><title>{status} {reason}</title></head><body>{reason}</body></html>"
        self._send_raw(status, html.encode(), used, content_type="text/html")

    def _send_truncated(self, body: Any, used: int) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(200)
        self._headers(len(data), used, "application/json;charset=UTF-8")
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _reset_connection(self) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    # -- writing ---------------------------------------------------------------------------------

    _retry_after: int | None = None

    def _send(self, status: int, body: Any, used: int) -> None:
        self._send_raw(status, json.dumps(body, separators=(",", ":")).encode(), used)

    def _send_raw(
        self,
        status: int,
        data: bytes,
        used: int,
        content_type: str = "application/json;charset=UTF-8",
    ) -> None:
        self.send_response(status)
        self._headers(len(data), used, content_type)
        self.end_headers()
        self.wfile.write(data)

    def _headers(self, length: int, used: int, content_type: str) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-MBX-USED-WEIGHT-1M", str(used))
        self.send_header("X-MBX-USED-WEIGHT", str(used))
        if self._retry_after is not None:
            self.send_header("Retry-After", str(self._retry_after))
            self._retry_after = None


def _too_much_weight(limit: int | None, window_s: float) -> dict[str, Any]:
    per = "1 MINUTE" if window_s == 60 else f"{window_s:g} SECOND"
    return {
        "code": -1003,
        "msg": f"Too much request weight used; current limit is {limit} request "
        f"weight per {per}. Please use WebSocket Streams for live updates to avoid polling "
        "the API.",
    }


def _int_param(params: dict[str, str], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise _ApiError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None
