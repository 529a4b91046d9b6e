"""A local stand-in for Binance's public REST market-data API, for tests and benchmarks.

``FakeBinance`` listens on 127.0.0.1 (port 0, so the OS picks a free one), serves in a background
thread and speaks Binance's wire format byte for byte where it matters:

- ``/api/v3/{klines,aggTrades,depth,exchangeInfo,ping,time}`` (spot rules) and ``/fapi/v1/...``
  (USD-M futures rules: klines ``limit`` up to 1500 and weight by ``limit``, no ``1s`` interval,
  aggTrades weight 20 and no ``M`` field, depth ``limit`` only 5/10/20/50/100/500/1000 and the
  body carries ``E`` and ``T``).
- Klines come from a dict ``(symbol, interval) -> rows`` of Binance's 12-field arrays (times as int
  ms, prices and volumes as strings, trades as int, a final ``"0"``), either real rows
  (``load_real_klines``) or ``SyntheticKlines`` generated on demand in the same format. Selection
  follows Binance: ascending, ``startTime <= open_time <= endTime``, at most ``limit`` rows
  (default 500); the most recent rows when no ``startTime`` is sent.
- Aggregate trades come from ``symbol -> trades``: real objects (``load_real_agg_trades``) or
  ``SyntheticAggTrades`` (deterministic, consecutive ids, ``l + 1 == next f``). Selection follows
  Binance: ascending by id; ``fromId`` (inclusive), ``startTime``/``endTime`` (inclusive, less than
  an hour apart or ``-1127``), at most ``limit`` (default 500, max 1000); the most recent trades
  when neither ``fromId`` nor ``startTime`` is sent. Only ``startTime`` (unverified on the real
  API): every trade from then on.
- Depth comes from ``symbol -> body`` (``load_real_depths``, ``synthetic_depth_body``), cut to
  ``limit`` levels a side (spot: default 100, 1..5000, more is cut to 5000; futures: default 500);
  weights 5/25/50/250 (spot) and 2/5/10/20 (futures) by ``limit``.
- Errors are Binance's ``{"code": .., "msg": ..}`` bodies with HTTP 400: ``-1121`` unknown symbol,
  ``-1120`` bad interval, ``-1130`` bad ``limit``, ``-1102`` missing parameter, ``-1127`` a
  ``startTime``/``endTime`` window of an hour or more. A path Binance does not serve gets 404 with
  an empty body (``Content-Length: 0``), as api.binance.com's nginx answers it.
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


FUTURES_DEPTH_WEIGHTS: dict[int, int] = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
SPOT_DEPTH_MAX_LEVELS = 5000


@dataclass(frozen=True)
class MarketRules:
    """What differs between Binance's spot (``/api/v3``) and USD-M futures (``/fapi/v1``) APIs."""

    prefix: str
    intervals: Mapping[str, int]
    max_limit: int
    exchange_info_weight: int
    agg_trades_weight: int
    default_depth_limit: int

    @property
    def is_spot(self) -> bool:
        return self.prefix == "/api/v3"

    def klines_weight(self, limit: int) -> int:
        if self.is_spot:
            return 2
        if limit < 100:
            return 1
        if limit < 500:
            return 2
        return 5 if limit <= 1000 else 10

    def depth_limit_ok(self, limit: int) -> bool:
        return limit >= 1 if self.is_spot else limit in FUTURES_DEPTH_WEIGHTS

    def depth_weight(self, limit: int) -> int:
        """The weight charged; a futures limit Binance refuses is charged as its default."""
        if not self.is_spot:
            return FUTURES_DEPTH_WEIGHTS.get(limit, FUTURES_DEPTH_WEIGHTS[self.default_depth_limit])
        if limit <= 100:
            return 5
        return 25 if limit <= 500 else 50 if limit <= 1000 else 250


SPOT = MarketRules(
    "/api/v3", SPOT_INTERVALS_MS, max_limit=1000, exchange_info_weight=20, agg_trades_weight=4,
    default_depth_limit=100,
)  # fmt: skip
FUTURES_UM = MarketRules(
    "/fapi/v1", FUTURES_INTERVALS_MS, max_limit=1500, exchange_info_weight=1,
    agg_trades_weight=20, default_depth_limit=500,
)  # fmt: skip
MARKETS: dict[str, MarketRules] = {SPOT.prefix: SPOT, FUTURES_UM.prefix: FUTURES_UM}
DEFAULT_KLINES_LIMIT = 500  # Binance's default when no limit is sent
DEFAULT_AGG_TRADES_LIMIT = 500
MAX_AGG_TRADES_LIMIT = 1000
AGG_TRADES_MAX_WINDOW_MS = 3_600_000  # endTime - startTime must be less than this


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
    return SyntheticKlines(
        start_ms, SPOT_INTERVALS_MS[interval], count, seed=seed ^ _symbol_seed(symbol)
    )


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
# Aggregate trades and order books: real bodies or synthetic ones
# ------------------------------------------------------------------------------------------------

AggTradeRow = dict[str, Any]


class AggTradeSeries(Protocol):
    """Aggregate trades of one symbol, ascending by id (and so by time)."""

    ids: np.ndarray  # int64, strictly rising
    times: np.ndarray  # int64 ms, non-decreasing

    def rows_between(self, lo: int, hi: int) -> list[AggTradeRow]: ...


def select_agg_trades(
    series: AggTradeSeries,
    from_id: int | None,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[AggTradeRow]:
    """Binance's selection: ids >= ``from_id``, times in ``[start_ms, end_ms]``, at most ``limit``
    from the oldest match; the most recent ``limit`` when neither ``from_id`` nor ``start_ms``."""
    lo, hi = 0, len(series.ids)
    if from_id is not None:
        lo = int(np.searchsorted(series.ids, from_id, side="left"))
    if start_ms is not None:
        lo = max(lo, int(np.searchsorted(series.times, start_ms, side="left")))
    if end_ms is not None:
        hi = int(np.searchsorted(series.times, end_ms, side="right"))
    if from_id is None and start_ms is None:
        lo = max(lo, hi - limit)
    return series.rows_between(lo, min(hi, lo + limit)) if hi > lo else []


class RowAggTrades:
    """A series held as Binance's trade objects (real captures), served exactly as given."""

    def __init__(self, rows: Sequence[AggTradeRow]):
        self.rows = sorted(rows, key=lambda row: int(row["a"]))
        self.ids = np.array([int(row["a"]) for row in self.rows], dtype=np.int64)
        self.times = np.array([int(row["T"]) for row in self.rows], dtype=np.int64)

    def rows_between(self, lo: int, hi: int) -> list[AggTradeRow]:
        return [dict(row) for row in self.rows[lo:hi]]


class SyntheticAggTrades:
    """``count`` deterministic aggregate trades from ``start_ms`` (numpy arrays, rows on demand).

    Ids are consecutive from ``first_id``; each aggregates 1-3 trades whose ids continue the
    previous one's (``l + 1 == next f``); gaps between trades are 0..2 x ``mean_gap_ms`` (so some
    trades share a millisecond), plus ``pauses`` (trade index -> extra ms before it) for quiet
    hours. Prices walk on a 0.01 tick. Not market-realistic: it exercises wire format and paging.
    """

    def __init__(
        self,
        start_ms: int,
        count: int,
        *,
        first_id: int = 1_000_000,
        first_trade_id: int = 5_000_000,
        mean_gap_ms: int = 500,
        base_price: float = 30_000.0,
        seed: int = 0,
        pauses: Mapping[int, int] | None = None,
    ):
        i = np.arange(count, dtype=np.uint64)
        gaps = np.floor(_units(seed, i, 10) * 2 * mean_gap_ms).astype(np.int64)
        if count:
            gaps[0] = 0
        for index, pause_ms in (pauses or {}).items():
            gaps[index] += pause_ms
        self.times = start_ms + np.cumsum(gaps)
        self.ids = first_id + np.arange(count, dtype=np.int64)
        per_trade = 1 + np.floor(_units(seed, i, 11) * 3).astype(np.int64)
        self.last_trade_ids = first_trade_id - 1 + np.cumsum(per_trade)
        self.first_trade_ids = self.last_trade_ids - per_trade + 1
        steps = np.floor(_units(seed, i, 12) * 5).astype(np.int64) - 2
        self.prices = np.round(base_price + 0.01 * np.cumsum(steps), 2)
        self.quantities = np.round(0.00001 + 0.5 * _units(seed, i, 13), 5)
        self.buyer_maker = _units(seed, i, 14) < 0.5

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> list[AggTradeRow]:
        return self.rows_between(0, len(self.ids))

    def rows_between(self, lo: int, hi: int) -> list[AggTradeRow]:
        columns = zip(
            self.ids[lo:hi].tolist(), self.prices[lo:hi].tolist(),
            self.quantities[lo:hi].tolist(), self.first_trade_ids[lo:hi].tolist(),
            self.last_trade_ids[lo:hi].tolist(), self.times[lo:hi].tolist(),
            self.buyer_maker[lo:hi].tolist(), strict=True,
        )  # fmt: skip
        return [
            {"a": a, "p": f"{p:.8f}", "q": f"{q:.8f}", "f": f, "l": last, "T": t, "m": m, "M": True}
            for a, p, q, f, last, t, m in columns
        ]


def synthetic_agg_trades(
    symbol: str, start: dt.datetime | int, count: int, seed: int = 0, **options: Any
) -> SyntheticAggTrades:
    """``SyntheticAggTrades`` for ``symbol`` from ``start`` (UTC datetime or epoch ms); the symbol
    perturbs the seed. ``options``: ``first_id``, ``mean_gap_ms``, ``pauses``, ..."""
    start_ms = start if isinstance(start, int) else int(start.timestamp() * 1000)
    return SyntheticAggTrades(start_ms, count, seed=seed ^ _symbol_seed(symbol), **options)


def synthetic_depth_body(
    levels: int = 1000,
    *,
    mid: float = 30_000.0,
    tick: float = 0.01,
    last_update_id: int = 40_000_000_000,
    seed: int = 0,
) -> dict[str, Any]:
    """A spot ``/depth`` body with ``levels`` levels a side around ``mid``: prices on ``tick``,
    1-3 ticks apart, best first; quantities and prices as 8-decimal strings like Binance's."""
    i = np.arange(levels, dtype=np.uint64)
    sides = {}
    for side, sign, salt in (("bids", -1, 20), ("asks", 1, 22)):
        ticks = np.cumsum(1 + np.floor(_units(seed, i, salt) * 3).astype(np.int64))
        prices = np.round(mid + sign * tick * ticks, 8)
        quantities = np.round(0.0001 + 2 * _units(seed, i, salt + 1), 5)
        sides[side] = [
            [f"{p:.8f}", f"{q:.8f}"]
            for p, q in zip(prices.tolist(), quantities.tolist(), strict=True)
        ]
    return {"lastUpdateId": last_update_id, "bids": sides["bids"], "asks": sides["asks"]}


def _symbol_seed(symbol: str) -> int:
    return sum(ord(c) << (i % 24) for i, c in enumerate(symbol))


# ------------------------------------------------------------------------------------------------
# Real bodies from ../shared/data and synthetic exchangeInfo
# ------------------------------------------------------------------------------------------------

_RECORDED_LINE = re.compile(r"^(?P<url>\S+) -> (?P<time>[0-9.]+): (?P<body>.*)$", re.DOTALL)


def load_real_klines(binance_dir: Path) -> dict[tuple[str, str], list[KlineRow]]:
    """The real ``/api/v3/klines`` body in ``rest/http_spot_market_klines.json`` (BTCUSDT 1m)."""
    rows = json.loads((binance_dir / "rest" / "http_spot_market_klines.json").read_text())
    return {("BTCUSDT", "1m"): rows}


def load_real_agg_trades(binance_dir: Path) -> dict[str, list[AggTradeRow]]:
    """The real ``/api/v3/aggTrades`` body (BTCUSDT), ``rest/http_spot_market_agg_trades.json``."""
    rows = json.loads((binance_dir / "rest" / "http_spot_market_agg_trades.json").read_text())
    return {"BTCUSDT": rows}


def load_real_depths(binance_dir: Path) -> dict[str, dict[str, Any]]:
    """Real spot ``/api/v3/depth`` bodies by symbol: BTCUSDT (``http_spot_market_depth.json``, 10
    levels) and the four ``limit=1000`` captures in ``cryptofeed_BINANCE_depth_responses.txt``
    (``<url> -> <unix time>: <json>`` a line)."""
    rest = binance_dir / "rest"
    bodies = {"BTCUSDT": json.loads((rest / "http_spot_market_depth.json").read_text())}
    for line in (rest / "cryptofeed_BINANCE_depth_responses.txt").read_text().splitlines():
        match = _RECORDED_LINE.match(line)
        if match is None:
            continue
        symbol = dict(parse_qsl(urlsplit(match["url"]).query))["symbol"]
        bodies[symbol] = json.loads(match["body"])
    return bodies


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
    ``exchange_info``: the exchangeInfo body (default: synthetic, listing every symbol given).
    ``weight_limit``/``window_s``: request-weight enforcement (None: count and report only).
    ``agg_trades``: ``symbol -> trades`` (a list of Binance trade objects or an
    ``AggTradeSeries``). ``depth``: ``symbol -> /depth body`` (all levels; cut per request).
    """

    def __init__(
        self,
        klines: Mapping[tuple[str, str], Sequence[KlineRow] | KlineSeries] | None = None,
        exchange_info: Mapping[str, Any] | None = None,
        weight_limit: int | None = None,
        window_s: float = 60.0,
        agg_trades: Mapping[str, Sequence[AggTradeRow] | AggTradeSeries] | None = None,
        depth: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.series: dict[tuple[str, str], KlineSeries] = {
            key: _as_series(rows) for key, rows in (klines or {}).items()
        }
        self.agg_trades: dict[str, AggTradeSeries] = {
            symbol: _as_trades(rows) for symbol, rows in (agg_trades or {}).items()
        }
        self.depth: dict[str, Mapping[str, Any]] = dict(depth or {})
        symbols = sorted(
            {symbol for symbol, _ in self.series} | set(self.agg_trades) | set(self.depth)
        )
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

    def add_agg_trades(self, symbol: str, rows: Sequence[AggTradeRow] | AggTradeSeries) -> None:
        self.agg_trades[symbol] = _as_trades(rows)

    def add_depth(self, symbol: str, body: Mapping[str, Any]) -> None:
        self.depth[symbol] = body

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


def _as_trades(rows: Sequence[AggTradeRow] | AggTradeSeries) -> AggTradeSeries:
    return rows if hasattr(rows, "rows_between") else RowAggTrades(rows)  # type: ignore[return-value]


_ENDPOINTS = ("klines", "aggTrades", "depth", "exchangeInfo", "ping", "time")


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
        self._unlogged = (path, params, arrived, fault.kind if fault else None)
        try:
            if fault is not None and fault.kind != "delay":
                self._apply_fault(fault, path, params)
            else:
                if fault is not None:
                    time.sleep(fault.delay_s)
                status, body, used = self._route(path, params)
                self._send(status, body, used)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
            self.close_connection = True
        self._log_once(0)  # no status line was sent

    _unlogged: tuple[str, dict[str, str], float, str | None] | None = None

    def _log_once(self, status: int) -> None:
        """Log this request with ``status`` before answering, so the log is complete by the time
        the client has its reply (tests read it right after the client returns)."""
        if self._unlogged is not None:
            path, params, arrived, fault = self._unlogged
            self._unlogged = None
            self.owner._log(path, params, arrived, status, fault)

    # -- normal answers --------------------------------------------------------------------------

    def _route(self, path: str, params: dict[str, str]) -> tuple[int, Any, int]:
        prefix, _, endpoint = path.rpartition("/")
        rules = MARKETS.get(prefix)
        if rules is None or endpoint not in _ENDPOINTS:
            return 404, None, self.owner.weight.current()  # Binance's nginx: 404, empty body
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
        limit = params.get("limit", "")
        if endpoint == "klines":
            return rules.klines_weight(int(limit) if limit.isdigit() else DEFAULT_KLINES_LIMIT)
        if endpoint == "aggTrades":
            return rules.agg_trades_weight
        if endpoint == "depth":
            return rules.depth_weight(int(limit) if limit.isdigit() else rules.default_depth_limit)
        return 1

    def _answer(self, rules: MarketRules, endpoint: str, params: dict[str, str]) -> Any:
        if endpoint == "ping":
            return {}
        if endpoint == "time":
            return {"serverTime": int(time.time() * 1000)}
        if endpoint == "exchangeInfo":
            return self.owner.exchange_info
        if endpoint == "aggTrades":
            return self._agg_trades(rules, params)
        if endpoint == "depth":
            return self._depth(rules, params)
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

    def _agg_trades(self, rules: MarketRules, params: dict[str, str]) -> list[AggTradeRow]:
        symbol = self._listed_symbol(params)
        limit = _int_param(params, "limit", DEFAULT_AGG_TRADES_LIMIT)
        if not 1 <= limit <= MAX_AGG_TRADES_LIMIT:
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        from_id = _int_param(params, "fromId", None)
        start, end = _int_param(params, "startTime", None), _int_param(params, "endTime", None)
        if start is not None and end is not None:
            if start > end:
                raise _ApiError(400, -1023, "Start time is greater than end time.")
            if end - start >= AGG_TRADES_MAX_WINDOW_MS:
                raise _ApiError(400, -1127, "More than 1 hours between startTime and endTime.")
        series = self.owner.agg_trades.get(symbol)
        rows = [] if series is None else select_agg_trades(series, from_id, start, end, limit)
        if not rules.is_spot:  # USD-M futures trades carry no "M" (best price match)
            rows = [{key: value for key, value in row.items() if key != "M"} for row in rows]
        return rows

    def _depth(self, rules: MarketRules, params: dict[str, str]) -> dict[str, Any]:
        symbol = self._listed_symbol(params)
        limit = _int_param(params, "limit", rules.default_depth_limit)
        if not rules.depth_limit_ok(limit):
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        book = self.owner.depth.get(symbol, {"lastUpdateId": 0, "bids": [], "asks": []})
        levels = min(limit, SPOT_DEPTH_MAX_LEVELS)
        body: dict[str, Any] = {"lastUpdateId": book["lastUpdateId"]}
        if not rules.is_spot:  # futures: message time and matching-engine time
            now_ms = int(time.time() * 1000)
            body.update({"E": now_ms, "T": now_ms})
        body.update({"bids": list(book["bids"][:levels]), "asks": list(book["asks"][:levels])})
        return body

    def _listed_symbol(self, params: dict[str, str]) -> str:
        symbol = params.get("symbol", "")
        if not symbol:
            raise _ApiError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        if not self._listed(symbol):
            raise _ApiError(400, -1121, "Invalid symbol.")
        return symbol

    def _listed(self, symbol: str) -> bool:
        listed = {s["symbol"] for s in self.owner.exchange_info.get("symbols", [])}
        return (
            symbol in listed
            or any(symbol == s for s, _ in self.owner.series)
            or symbol in self.owner.agg_trades
            or symbol in self.owner.depth
        )

    # -- faults ----------------------------------------------------------------------------------

    def _apply_fault(self, fault: Fault, path: str, params: dict[str, str]) -> None:
        """Misbehave as ``fault`` says (the request is logged with the status it was sent, 0 when
        the connection was cut before one)."""
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
        self._log_once(200)
        self.send_response(200)
        self._headers(len(data), used, "application/json;charset=UTF-8")
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _reset_connection(self) -> None:
        self._log_once(0)
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    # -- writing ---------------------------------------------------------------------------------

    _retry_after: int | None = None

    def _send(self, status: int, body: Any, used: int) -> None:
        """``body`` as compact JSON; None sends an empty body."""
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self._send_raw(status, data, used)

    def _send_raw(
        self,
        status: int,
        data: bytes,
        used: int,
        content_type: str = "application/json;charset=UTF-8",
    ) -> None:
        self._log_once(status)
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
