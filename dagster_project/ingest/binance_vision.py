"""Binance Vision (data.binance.vision) kline and aggTrades archives: the fast path for history.

``fetch_klines`` / ``fetch_agg_trades`` plan which archives cover a time range (monthly zips for
whole past months, daily zips for the rest), download each into a local cache (resumable with HTTP
Range, retried with backoff, verified against its published ``.CHECKSUM``), parse the CSV inside
into the contract (``RAW_KLINE_SCHEMA`` / ``AGG_TRADE_SCHEMA``) and return the rows in
``[start, end)`` (by open time / trade time).

Layout of the source (and of the cache, which mirrors it)::

    data/{spot|futures/um}/{monthly|daily}/klines/SYMBOL/INTERVAL/SYMBOL-INTERVAL-YYYY-MM[-DD].zip
    data/{spot|futures/um}/{monthly|daily}/aggTrades/SYMBOL/SYMBOL-aggTrades-YYYY-MM[-DD].zip
    ...and beside each zip ``<zip>.CHECKSUM`` holding ``<sha256>  <zip name>``

A zip in the cache with its ``.CHECKSUM`` beside it has been verified and is not downloaded again,
unless it no longer parses: then it is dropped from the cache and fetched again (logged). An archive
that matches its published checksum yet does not parse is dropped too and the error says it is
broken as published; nothing that fails to parse stays in the cache.

Which symbols exist is read from Binance's S3 bucket listing (``?prefix=data/spot/daily/klines/
SYMBOL/&delimiter=/``, ListObjects XML; ``VisionConfig.listing_url``), one small request per symbol,
whatever the range: a symbol with nothing under its daily and monthly folders is unknown
(``UnknownSymbolError``, from ``check_symbols`` or from a fetch whose archives were all 404). A 404
alone cannot tell an unknown symbol from a listed one without archives in the range (before its
listing, after its delisting), and asking every archive of a long range costs a request per day.

Spot CSVs have no header; futures CSVs have one from 2022 on; spot files from 2025-01-01 carry
microsecond timestamps, everything else milliseconds (decided per value). Kline close times follow
Binance's documented convention (open + interval - 1 ms, as REST sends them) from every file: the
µs files' ``…59.999999`` becomes ``…59.999``; aggTrades keep their µs trade times. aggTrades CSVs
hold ``agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time, is_buyer_maker``
plus ``is_best_match`` on spot (dropped), booleans as ``True``/``False`` (spot) or
``true``/``false`` (futures).
"""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import math
import os
import re
import threading
import xml.etree.ElementTree as ElementTree
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import httpx
import polars as pl
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from dagster_project.core.errors import (
    BinanceAPIError,
    ChecksumMismatchError,
    InvalidRequestError,
    SourceDataError,
    UnknownSymbolError,
)
from dagster_project.core.klines import (
    RAW_KLINE_COLUMNS,
    TIMESTAMP,
    UTC,
    TimeRange,
    empty_klines,
    interval_length,
    normalise_epoch_to_us,
)
from dagster_project.core.schemas import AGG_TRADE_COLUMNS, AGG_TRADE_SCHEMA, empty

logger = logging.getLogger(__name__)

SOURCE = "binance_vision"

# Market name -> the folder under data/ on data.binance.vision.
MARKETS: dict[str, str] = {"spot": "spot", "futures_um": "futures/um"}

OFFICIAL_BASE_URL = "https://data.binance.vision"
# The S3 bucket behind data.binance.vision; its pages list folders from here (ListObjects v1).
BINANCE_BUCKET_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"

Period = Literal["monthly", "daily"]
Dataset = Literal["klines", "aggTrades"]
_T = TypeVar("_T")
_A = TypeVar("_A")


def _default_cache_dir() -> Path:
    return Path(os.environ.get("CANDLELAKE_LAKE", "lake")) / ".cache" / "vision"


@dataclass(frozen=True)
class VisionConfig:
    """Where and how Binance Vision archives are fetched."""

    # Root of the archive tree; a local server in tests.
    base_url: str = OFFICIAL_BASE_URL
    # The bucket listing that says which symbols exist; "": Binance's S3 bucket for the official
    # base_url, else base_url itself (a mirror or local server that lists at its root, as S3 does).
    listing_url: str = ""
    # "spot" or "futures_um" (USD-M futures, published under data/futures/um/).
    market: str = "spot"
    # Downloaded archives live here in Binance's own layout; <lake>/.cache/vision by
    # default (the lake root is CANDLELAKE_LAKE, default ./lake).
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # Seconds allowed to connect and between bytes received.
    timeout_s: float = 30.0
    # Further attempts after the first on 5xx, 429, timeouts and dropped connections.
    max_retries: int = 5
    # Check every archive against its published sha256 before using it.
    verify_checksum: bool = True
    # First wait between attempts (seconds, plus up to as much random jitter); doubles each time.
    backoff_s: float = 1.0
    # Longest wait between attempts, in seconds.
    backoff_max_s: float = 30.0
    # Archives downloaded (and parsed) at once.
    max_workers: int = 4
    # Write buffer, in bytes, while streaming an archive to disk.
    chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.market not in MARKETS:
            raise InvalidRequestError(
                f"unknown Binance Vision market {self.market!r}; expected one of "
                f"{', '.join(MARKETS)}"
            )
        if self.max_retries < 0 or self.max_workers < 1:
            raise InvalidRequestError(
                f"max_retries={self.max_retries}, max_workers={self.max_workers}; expected "
                "max_retries >= 0 and max_workers >= 1"
            )
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @property
    def bucket_listing_url(self) -> str:
        if self.listing_url:
            return self.listing_url.rstrip("/")
        base = self.base_url.rstrip("/")
        return BINANCE_BUCKET_URL if base == OFFICIAL_BASE_URL else base


@dataclass(frozen=True)
class VisionArchive:
    """One published archive: a calendar month or a UTC day of one symbol's klines (of one
    interval) or aggregate trades."""

    market: str
    symbol: str
    interval: str  # the kline interval; "" for aggTrades
    period: Period
    day: dt.date  # the first day of the month for a monthly archive
    dataset: Dataset = "klines"

    @property
    def label(self) -> str:
        """What the archive holds, as Binance names it in file names: ``1m``, ``aggTrades``."""
        return self.interval if self.dataset == "klines" else self.dataset

    @property
    def name(self) -> str:
        stamp = self.day.strftime("%Y-%m" if self.period == "monthly" else "%Y-%m-%d")
        return f"{self.symbol}-{self.label}-{stamp}.zip"

    @property
    def path(self) -> str:
        """The path below the base URL (and below the cache directory)."""
        folder = f"{self.symbol}/{self.interval}" if self.dataset == "klines" else self.symbol
        return f"data/{MARKETS[self.market]}/{self.period}/{self.dataset}/{folder}/{self.name}"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.path}"

    def days(self) -> list[VisionArchive]:
        """The daily archives that together hold what this archive holds."""
        if self.period == "daily":
            return [self]
        count = calendar.monthrange(self.day.year, self.day.month)[1]
        return [
            dataclasses.replace(self, period="daily", day=self.day.replace(day=d))
            for d in range(1, count + 1)
        ]


@dataclass
class VisionStats:
    """What a client did, for logs."""

    files_downloaded: int = 0
    files_reused: int = 0  # verified archives found in the cache
    files_missing: int = 0  # archives Binance does not publish (HTTP 404)
    bytes_downloaded: int = 0
    rows: int = 0

    def __str__(self) -> str:
        return (
            f"{self.files_downloaded} archives downloaded ({self.bytes_downloaded / 1e6:.1f} MB), "
            f"{self.files_reused} reused from the cache, {self.files_missing} not published, "
            f"{self.rows} rows"
        )


def fetch_klines(
    symbol: str,
    interval: str,
    time_range: TimeRange,
    config: VisionConfig | None = None,
    *,
    today: dt.date | None = None,
) -> pl.DataFrame:
    """Klines of ``symbol`` in ``[time_range.start, time_range.end)`` from Binance Vision archives.

    Rows come in the contract schema, sorted by open_time, with source ``binance_vision``. Days
    Binance does not publish (404) are logged and left out, never invented.
    """
    with VisionClient(config) as client:
        return client.fetch_klines(symbol, interval, time_range, today=today)


def fetch_agg_trades(
    symbol: str,
    time_range: TimeRange,
    config: VisionConfig | None = None,
    *,
    today: dt.date | None = None,
) -> pl.DataFrame:
    """Aggregate trades of ``symbol`` with trade time in ``[start, end)`` from Binance Vision.

    Rows come in ``AGG_TRADE_SCHEMA``, sorted by agg_trade_id, with source ``binance_vision``; the
    planning, checksums, resume and cache are those of ``fetch_klines``.
    """
    with VisionClient(config) as client:
        return client.fetch_agg_trades(symbol, time_range, today=today)


def plan_archives(
    symbol: str,
    interval: str,
    time_range: TimeRange,
    today: dt.date | None = None,
    *,
    market: str = "spot",
) -> list[VisionArchive]:
    """The kline archives covering ``time_range``, oldest first.

    A calendar month wholly inside the range that ended before the current month (``today``'s,
    UTC) is one monthly archive; every other day that overlaps the range is a daily archive.
    Days from ``today`` on are not published yet and are left out.
    """
    interval_length(interval)
    template = VisionArchive(_checked_market(market), _checked_symbol(symbol), interval, "daily",
                             time_range.start.date())  # fmt: skip
    return _plan(template, time_range, today)


def plan_agg_trade_archives(
    symbol: str,
    time_range: TimeRange,
    today: dt.date | None = None,
    *,
    market: str = "spot",
) -> list[VisionArchive]:
    """The aggTrades archives covering ``time_range``, oldest first (planned like klines)."""
    template = VisionArchive(
        _checked_market(market), _checked_symbol(symbol), "", "daily", time_range.start.date(),
        dataset="aggTrades",
    )  # fmt: skip
    return _plan(template, time_range, today)


def _plan(template: VisionArchive, time_range: TimeRange, today: dt.date | None) -> list:
    """``plan_archives`` for any dataset: ``template`` names the market, symbol and dataset."""
    monthly = functools.partial(dataclasses.replace, template, period="monthly")
    daily = functools.partial(dataclasses.replace, template, period="daily")
    symbol = template.symbol
    today = today or dt.datetime.now(UTC).date()
    current_month = today.replace(day=1)
    last_day = (time_range.end - dt.timedelta(microseconds=1)).date()
    archives: list[VisionArchive] = []
    day = time_range.start.date()
    while day <= last_day and day < today:
        month, next_month = day.replace(day=1), _next_month(day)
        whole_month_inside = (
            _midnight(month) >= time_range.start and _midnight(next_month) <= time_range.end
        )
        if day == month and whole_month_inside and next_month <= current_month:
            archives.append(monthly(day=month))
            day = next_month
        else:
            archives.append(daily(day=day))
            day += dt.timedelta(days=1)
    if last_day >= today:
        logger.debug("Binance Vision has no archives for %s on or after %s yet", symbol, today)
    return archives


class VisionClient:
    """Downloads, verifies, caches and parses Binance Vision kline and aggTrades archives."""

    def __init__(self, config: VisionConfig | None = None, http: httpx.Client | None = None):
        self.config = config or VisionConfig()
        self.stats = VisionStats()
        self._stats_lock = threading.Lock()
        self._reused: set[Path] = set()  # archives this client took from the cache unchecked
        self._listed: dict[tuple[str, str], bool] = {}  # (symbol, dataset) -> in the listing
        self._owns_http = http is None
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(self.config.timeout_s),
            follow_redirects=True,
            # Ranges must count the bytes of the archive itself, never of a re-encoded body.
            headers={"Accept-Encoding": "identity", "User-Agent": "candlelake"},
        )

    def __enter__(self) -> VisionClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def fetch_klines(
        self,
        symbol: str,
        interval: str,
        time_range: TimeRange,
        *,
        today: dt.date | None = None,
    ) -> pl.DataFrame:
        """See the module-level ``fetch_klines``."""
        plan = plan_archives(symbol, interval, time_range, today, market=self.config.market)
        return self._fetch(plan, time_range, read_vision_zip, empty_klines(), "open_time")

    def fetch_agg_trades(
        self, symbol: str, time_range: TimeRange, *, today: dt.date | None = None
    ) -> pl.DataFrame:
        """See the module-level ``fetch_agg_trades``."""
        plan = plan_agg_trade_archives(symbol, time_range, today, market=self.config.market)
        empty_trades = empty(AGG_TRADE_SCHEMA)
        return self._fetch(
            plan, time_range, read_agg_trades_zip, empty_trades, "ts", "agg_trade_id"
        )

    def _fetch(
        self,
        plan: Sequence[VisionArchive],
        time_range: TimeRange,
        read: Callable[[Path], pl.DataFrame],
        empty_frame: pl.DataFrame,
        time_column: str,
        sort_column: str | None = None,
    ) -> pl.DataFrame:
        """Download ``plan``, parse each archive with ``read``; the rows whose ``time_column`` is in
        ``[start, end)``, sorted by ``sort_column`` (default: the time column)."""
        what = " ".join((self.config.market, plan[0].symbol, plan[0].label)) if plan else "nothing"
        logger.info(
            "Binance Vision %s [%s, %s): %d archives planned",
            what, time_range.start.isoformat(), time_range.end.isoformat(), len(plan),
        )  # fmt: skip
        located = self._locate(plan)
        if plan and not located:
            self.check_symbols([plan[0].symbol], plan[0].dataset)
        frames = self._map(lambda found: self._read_archive(*found, read), located)
        frame = pl.concat(frames, how="vertical") if frames else empty_frame
        frame = frame.filter(
            pl.col(time_column) >= time_range.start, pl.col(time_column) < time_range.end
        ).sort(sort_column or time_column)
        with self._stats_lock:
            self.stats.rows += frame.height
        logger.info("Binance Vision %s: %s", what, self.stats)
        return frame

    def download_all(self, archives: Sequence[VisionArchive]) -> list[Path]:
        """Cached, verified paths of ``archives``; a monthly archive that is not published is
        replaced by its daily archives, and a daily archive that is not published by nothing."""
        return [path for _, path in self._locate(archives)]

    def _locate(self, archives: Sequence[VisionArchive]) -> list[tuple[VisionArchive, Path]]:
        """``download_all``, keeping which archive each path holds."""
        found = self._map(self.download, archives)
        located: list[tuple[VisionArchive, Path]] = []
        fallback: list[VisionArchive] = []
        for archive, path in zip(archives, found, strict=True):
            if path is not None:
                located.append((archive, path))
            elif archive.period == "monthly":
                logger.info(
                    "%s is not published (HTTP 404); using its daily archives", archive.name
                )
                fallback.extend(archive.days())
            else:
                logger.info(
                    "%s is not published (HTTP 404): no %s %s data for %s",
                    archive.name, archive.symbol, archive.label, archive.day.isoformat(),
                )  # fmt: skip
        return located + (self._locate(fallback) if fallback else [])

    def download(self, archive: VisionArchive) -> Path | None:
        """The cached, verified archive, downloading it first if needed; None if not published."""
        final = self.config.cache_dir / archive.path
        if self._is_cached(final):
            self._note_reused(final)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self._lock_path(archive)):
            if self._is_cached(final):  # another process finished it while we waited
                self._note_reused(final)
                return final
            try:
                return self._download_locked(archive, final)
            except _NotPublished:
                logger.debug("%s: HTTP 404", archive.url(self.config.base_url))
                self._count(files_missing=1)
                return None

    # -- parsing, with the cache re-checked on failure ---------------------------------------------

    def _read_archive(
        self, archive: VisionArchive, path: Path, read: Callable[[Path], pl.DataFrame]
    ) -> pl.DataFrame:
        """``read(path)``; an archive that does not parse is dropped from the cache, and one that
        came from the cache is downloaded again (once) before giving up."""
        url = archive.url(self.config.base_url)
        try:
            return read(path)
        except SourceDataError as exc:
            from_cache = self._was_reused(path)
            self._drop(archive, path)
            if not from_cache:
                raise SourceDataError(
                    f"{exc}; the archive fetched from {url} {self._verification()}, so it is "
                    f"broken as published; dropped {path} from the cache, so a rerun fetches it "
                    "again"
                ) from exc
            logger.warning(
                "cached %s does not parse (%s); dropped it from the cache and downloading it again",
                path, exc,
            )  # fmt: skip
        fresh = self.download(archive)
        if fresh is None:
            raise SourceDataError(
                f"cached {path} did not parse and was dropped, and {url} is no longer published "
                "(HTTP 404); expected Binance to publish it again"
            )
        try:
            return read(fresh)
        except SourceDataError as exc:
            self._drop(archive, fresh)
            raise SourceDataError(
                f"{exc}; the cached copy did not parse, so {path} was downloaded again from {url}; "
                f"the new copy {self._verification()} and does not parse either: it is broken as "
                "published; dropped it from the cache"
            ) from exc

    def _verification(self) -> str:
        if self.config.verify_checksum:
            return "matches its published checksum"
        return "was not checked against its checksum (verify_checksum is off)"

    def _drop(self, archive: VisionArchive, path: Path) -> None:
        """Remove a cached archive and its verified mark (under the archive's download lock)."""
        with _exclusive_lock(self._lock_path(archive)):
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".CHECKSUM").unlink(missing_ok=True)
        with self._stats_lock:
            self._reused.discard(path)

    def _note_reused(self, path: Path) -> None:
        with self._stats_lock:
            self.stats.files_reused += 1
            self._reused.add(path)

    def _was_reused(self, path: Path) -> bool:
        with self._stats_lock:
            return path in self._reused

    def _lock_path(self, archive: VisionArchive) -> Path:
        return self.config.cache_dir / ".locks" / (archive.path + ".lock")

    # -- which symbols exist: the bucket listing -----------------------------------------------

    def check_symbols(self, symbols: Sequence[str], dataset: Dataset = "klines") -> None:
        """Raise ``UnknownSymbolError`` naming every symbol Binance Vision publishes no
        ``dataset`` archive of (daily or monthly, in this market), and the listing it read."""
        checked = [_checked_symbol(symbol) for symbol in symbols]
        unknown = [symbol for symbol in checked if not self.is_listed(symbol, dataset)]
        if unknown:
            folders = [p for symbol in unknown for p in self._symbol_folders(symbol, dataset)]
            raise UnknownSymbolError(
                f"Binance Vision publishes no {self.config.market} {dataset} for "
                f"{', '.join(unknown)}: the bucket listing {self.config.bucket_listing_url} "
                f"(?delimiter=/&prefix=...) holds nothing under {', '.join(folders)}; expected "
                "symbols Binance lists, such as BTCUSDT"
            )

    def is_listed(self, symbol: str, dataset: Dataset = "klines") -> bool:
        """Whether the bucket listing holds anything under the symbol's daily or monthly folder
        (asked once per client and symbol; the monthly folder only when the daily one is empty)."""
        key = (_checked_symbol(symbol), dataset)
        if key not in self._listed:
            folders = self._symbol_folders(key[0], dataset)
            self._listed[key] = any(self._lists_anything(folder) for folder in folders)
        return self._listed[key]

    def _symbol_folders(self, symbol: str, dataset: Dataset) -> list[str]:
        market = MARKETS[self.config.market]
        return [f"data/{market}/{period}/{dataset}/{symbol}/" for period in ("daily", "monthly")]

    def _lists_anything(self, prefix: str) -> bool:
        listing = self.config.bucket_listing_url
        params = {"prefix": prefix, "delimiter": "/", "max-keys": "1"}
        url = f"{listing}?prefix={prefix}&delimiter=/&max-keys=1"

        def attempt() -> bytes:
            response = self._http.get(listing, params=params)
            if response.status_code == 404:
                raise BinanceAPIError(
                    f"GET {url}: HTTP 404; expected Binance Vision's S3 bucket listing there; "
                    "set listing_url to a listing of the archive tree"
                )
            _check_status(response, url)
            return response.content

        return _listing_has_entries(self._retrying(f"GET {url}", attempt), url)

    # -- downloading ------------------------------------------------------------------------------

    def _download_locked(self, archive: VisionArchive, final: Path) -> Path:
        url = archive.url(self.config.base_url)
        checksum_text = self._get_text(url + ".CHECKSUM") if self.config.verify_checksum else None
        expected = _parse_checksum(checksum_text, url) if checksum_text is not None else None
        if final.exists():  # complete, but never verified (fetched with verify_checksum=False)
            if expected is None or _sha256(final) == expected:
                self._mark_verified(final, checksum_text)
                self._note_reused(final)
                return final
            logger.warning("cached %s does not match its checksum; downloading it again", final)
            final.unlink()
        part = final.with_name(final.name + ".part")
        resumed = self._fetch_to_part(url, part)
        if expected is not None:
            actual = _sha256(part)
            if actual != expected and resumed:
                # The bytes kept from an earlier attempt may belong to an older upload of the file.
                logger.warning(
                    "resumed %s does not match its checksum; restarting it", archive.name
                )
                part.unlink()
                self._fetch_to_part(url, part)
                actual = _sha256(part)
            if actual != expected:
                part.unlink()
                raise ChecksumMismatchError(
                    f"{archive.name}: sha256 of the download is {actual}, expected {expected} as "
                    f"published in {url}.CHECKSUM; the download was deleted"
                )
        os.replace(part, final)
        self._mark_verified(final, checksum_text)
        self._count(files_downloaded=1)
        logger.debug("downloaded %s (%d bytes)", final, final.stat().st_size)
        return final

    def _fetch_to_part(self, url: str, part: Path) -> bool:
        """Stream ``url`` into ``part``, resuming from what ``part`` holds; True if the final
        bytes were appended to bytes kept from an earlier, interrupted attempt."""
        return self._retrying(f"GET {url}", lambda: self._stream_once(url, part))

    def _stream_once(self, url: str, part: Path) -> bool:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:  # the part is not a prefix of the current file
                part.unlink()
                raise _Retryable(f"GET {url}: range {offset}- not satisfiable; restarting")
            _check_status(response, url)
            appending = response.status_code == 206
            if appending and _content_range_start(response) != offset:
                part.unlink()
                raise _Retryable(f"GET {url}: server sent a range not starting at {offset}")
            if offset and not appending:
                logger.info("%s: server ignored the Range request; downloading it whole", url)
            # Bytes are written as they arrive (buffered), so a cut connection keeps what came.
            with part.open("ab" if appending else "wb", buffering=self.config.chunk_bytes) as out:
                for chunk in response.iter_raw():
                    out.write(chunk)
                    self._count(bytes_downloaded=len(chunk))
            total = _expected_total(response)
            if total is not None and part.stat().st_size != total:
                raise _Retryable(
                    f"GET {url}: have {part.stat().st_size} of {total} bytes after the response"
                )
        return appending

    def _get_text(self, url: str) -> str:
        def attempt() -> str:
            response = self._http.get(url)
            _check_status(response, url)
            return response.text

        return self._retrying(f"GET {url}", attempt)

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        attempts = self.config.max_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(
                multiplier=self.config.backoff_s,
                max=self.config.backoff_max_s,
                jitter=self.config.backoff_s,
            ),
            retry=retry_if_exception(_is_retryable),
            before_sleep=lambda state: logger.warning(
                "%s failed (attempt %d of %d): %s; retrying",
                what,
                state.attempt_number,
                attempts,
                state.outcome.exception(),
            ),
            reraise=True,
        )
        try:
            return retrying(call)
        except (_Retryable, httpx.TransportError) as exc:
            made = retrying.statistics.get("attempt_number", attempts)
            raise BinanceAPIError(f"{what} failed after {made} attempt(s): {exc}") from exc

    # -- cache bookkeeping ------------------------------------------------------------------------

    def _is_cached(self, final: Path) -> bool:
        verified_mark = final.with_name(final.name + ".CHECKSUM")
        return final.exists() and (not self.config.verify_checksum or verified_mark.exists())

    @staticmethod
    def _mark_verified(final: Path, checksum_text: str | None) -> None:
        """Keep the published CHECKSUM beside the archive: its presence means 'verified'."""
        if checksum_text is None:
            return
        mark = final.with_name(final.name + ".CHECKSUM")
        tmp = mark.with_name(mark.name + ".tmp")
        tmp.write_text(checksum_text)
        os.replace(tmp, mark)

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _map(self, func: Callable[[_A], _T], items: Sequence[_A]) -> list[_T]:
        if len(items) <= 1 or self.config.max_workers == 1:
            return [func(item) for item in items]
        with ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="vision") as pool:
            return list(pool.map(func, items))


# -- parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CsvLayout:
    """One kind of Vision CSV: its columns in file order, and how a row may look."""

    kind: str  # names the kind in error messages
    columns: dict[str, pl.DataType]  # every column a row may have, in file order
    min_fields: int  # the columns after this many are optional (but the same in every row)
    expected: str  # how a good row looks, for error messages

    @functools.cached_property
    def required(self) -> list[str]:
        return list(self.columns)[: self.min_fields]


# Binance's 12 kline fields as they appear in Vision CSVs (the futures header calls trades "count").
_KLINES = _CsvLayout(
    kind="kline",
    columns={
        "open_time": pl.Int64(),
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "close_time": pl.Int64(),
        "quote_volume": pl.Float64(),
        "trades": pl.Int64(),
        "taker_buy_base_volume": pl.Float64(),
        "taker_buy_quote_volume": pl.Float64(),
        "ignore": pl.String(),
    },
    min_fields=11,
    expected=(
        "expected 12 comma-separated numbers: open_time,open,high,low,close,volume,close_time,"
        "quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
    ),
)
# aggTrades as in Vision CSVs (named as in the futures header); spot adds is_best_match.
_AGG_TRADES = _CsvLayout(
    kind="aggTrades",
    columns={
        "agg_trade_id": pl.Int64(),
        "price": pl.Float64(),
        "quantity": pl.Float64(),
        "first_trade_id": pl.Int64(),
        "last_trade_id": pl.Int64(),
        "transact_time": pl.Int64(),
        "is_buyer_maker": pl.Boolean(),
        "is_best_match": pl.Boolean(),
    },
    min_fields=7,
    expected=(
        "expected 7 or 8 comma-separated fields: agg_trade_id,price,quantity,first_trade_id,"
        "last_trade_id,transact_time,is_buyer_maker[,is_best_match] (booleans true or false)"
    ),
)


def read_vision_zip(path: Path | str, source: str = SOURCE) -> pl.DataFrame:
    """The klines in a Vision archive, which must hold exactly one CSV."""
    data, name = _read_single_csv(Path(path))
    return read_vision_csv(data, name, source)


def read_agg_trades_zip(path: Path | str, source: str = SOURCE) -> pl.DataFrame:
    """The aggregate trades in a Vision aggTrades archive, which must hold exactly one CSV."""
    data, name = _read_single_csv(Path(path))
    return read_agg_trades_csv(data, name, source)


def read_vision_csv(
    path_or_bytes: Path | str | bytes, name: str | None = None, source: str = SOURCE
) -> pl.DataFrame:
    """A Vision kline CSV (header or not, ms or µs times) as the klines contract.

    ``path_or_bytes`` is a file path or the CSV's bytes; ``name`` labels it in error messages. A
    malformed row raises ``SourceDataError`` naming the file, the line and its content.
    """
    raw = _parse_csv(*_csv_bytes(path_or_bytes, name), _KLINES)
    # µs files close a bar at ...59.999999; Binance's documented close (and REST's) is ...59.999.
    close_ms = normalise_epoch_to_us(pl.col("close_time")) // 1000 * 1000
    return raw.with_columns(
        normalise_epoch_to_us(pl.col("open_time")).cast(TIMESTAMP),
        close_ms.cast(TIMESTAMP).alias("close_time"),
        pl.lit(source, pl.String).alias("source"),
    ).select(RAW_KLINE_COLUMNS)


def read_agg_trades_csv(
    path_or_bytes: Path | str | bytes, name: str | None = None, source: str = SOURCE
) -> pl.DataFrame:
    """A Vision aggTrades CSV (header or not, 7 or 8 fields, ms or µs times) as
    ``AGG_TRADE_SCHEMA``; arguments and errors as for ``read_vision_csv``."""
    raw = _parse_csv(*_csv_bytes(path_or_bytes, name), _AGG_TRADES)
    return raw.select(
        pl.col("agg_trade_id"),
        normalise_epoch_to_us(pl.col("transact_time")).cast(TIMESTAMP).alias("ts"),
        pl.col("price"),
        pl.col("quantity").alias("qty"),
        pl.col("first_trade_id"),
        pl.col("last_trade_id"),
        pl.col("is_buyer_maker"),
        pl.lit(source, pl.String).alias("source"),
    ).select(AGG_TRADE_COLUMNS)


def _read_single_csv(path: Path) -> tuple[bytes, str]:
    """The bytes of the one CSV in the zip at ``path``, and a name for it in error messages."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                raise SourceDataError(
                    f"{path} holds {[m.filename for m in members]}; expected exactly one CSV"
                )
            data = archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise SourceDataError(
            f"{path} is truncated or corrupt ({exc}); expected a complete zip archive holding one "
            "CSV"
        ) from exc
    return data, f"{path.name}/{members[0].filename}"


def _csv_bytes(path_or_bytes: Path | str | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, bytes):
        return path_or_bytes, name or "<csv bytes>"
    return Path(path_or_bytes).read_bytes(), name or str(path_or_bytes)


def _parse_csv(data: bytes, name: str, layout: _CsvLayout) -> pl.DataFrame:
    """The rows of a CSV of ``layout`` with its column types: a fast polars parse, and a slow
    line-by-line pass only to name the first bad line when the fast parse finds a problem."""
    header = _has_header(data)
    fields = _field_count(data, header)
    if fields is None:
        return pl.DataFrame(schema=layout.columns)
    if not layout.min_fields <= fields <= len(layout.columns):
        raise _malformed(data, name, header, layout, fields, None)
    schema = dict(list(layout.columns.items())[:fields])
    try:
        raw = pl.read_csv(data, has_header=False, skip_rows=int(header), schema=schema)
    except pl.exceptions.PolarsError as exc:
        raise _malformed(data, name, header, layout, fields, exc) from exc
    raw = _drop_blank_lines(raw, layout)
    if raw.select(_bad_value_mask(layout, raw.columns).any()).item():
        raise _malformed(data, name, header, layout, fields, None)
    return raw


def _has_header(data: bytes) -> bool:
    """True when the first field of the first line starts with a letter (``open_time``)."""
    first = re.match(rb"(?:\xef\xbb\xbf)?\s*\"?([^,\r\n]*)", data)
    return bool(first and first.group(1)[:1].isalpha())


def _field_count(data: bytes, header: bool) -> int | None:
    """The number of fields on the first data line; None when there is no data line."""
    start = 0
    if header:
        start = data.find(b"\n") + 1
        if start == 0:  # the header is all there is
            return None
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end].strip()
        if line:
            return line.count(b",") + 1
        start = end + 1
    return None


def _drop_blank_lines(raw: pl.DataFrame, layout: _CsvLayout) -> pl.DataFrame:
    """polars reads an empty line as a row of nulls; such lines hold no data."""
    blank = pl.all_horizontal(pl.col(layout.required).is_null())
    return raw.filter(~blank) if raw.select(blank.any()).item() else raw


def _bad_value_mask(layout: _CsvLayout, present: list[str]) -> pl.Expr:
    """Rows with a missing value (a short row leaves nulls) or a non-finite number; a free-text
    column (klines' ``ignore``) may be empty."""
    checked = [name for name in present if layout.columns[name] != pl.String()]
    missing = [pl.col(name).is_null() for name in checked]
    floats = [name for name in checked if layout.columns[name] == pl.Float64()]
    not_finite = [~pl.col(name).is_finite() for name in floats]
    return pl.any_horizontal(*missing, *not_finite)


def _malformed(
    data: bytes,
    name: str,
    header: bool,
    layout: _CsvLayout,
    fields: int,
    cause: Exception | None,
) -> SourceDataError:
    """The error for the first bad line (a slow pass, run only once the fast parse failed).

    ``fields`` is the first data line's field count, which every line must match."""
    for number, line in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        line = line.rstrip("\r")
        if (number == 1 and header) or not line.strip():
            continue
        problem = _row_problem(line.split(","), layout, fields)
        if problem:
            shown = line if len(line) <= 200 else line[:200] + "…"
            return SourceDataError(
                f"{name}, line {number}: {problem} in {shown!r}; {layout.expected}"
            )
    return SourceDataError(f"{name}: not a Binance {layout.kind} CSV ({cause}); {layout.expected}")


def _row_problem(values: list[str], layout: _CsvLayout, fields: int) -> str | None:
    if len(values) != fields or not layout.min_fields <= fields <= len(layout.columns):
        return f"{len(values)} fields"
    for column, value in zip(layout.columns, values, strict=False):
        dtype = layout.columns[column]
        if dtype == pl.Boolean():
            if value.strip().lower() not in ("true", "false"):
                return f"{column} is {value!r}, not true or false"
            continue
        if dtype == pl.String():
            continue
        integer = dtype == pl.Int64()
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            return f"{column} is {value!r}, not {'an integer' if integer else 'a number'}"
        if not math.isfinite(number):
            return f"{column} is {value!r}, not a finite number"
    return None


# -- HTTP helpers ---------------------------------------------------------------------------------


class _NotPublished(Exception):
    """HTTP 404: Binance publishes no such archive."""


class _Retryable(Exception):
    """A failure worth another attempt (5xx, 429, incomplete body)."""


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(
        exc, _Retryable | httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
    )


def _check_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status == 404:
        raise _NotPublished(url)
    if status == 429 or status >= 500:
        raise _Retryable(f"GET {url}: HTTP {status}")
    if status not in (200, 206):
        raise BinanceAPIError(f"GET {url}: HTTP {status}; expected 200, 206 or 404")


def _content_range_start(response: httpx.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _expected_total(response: httpx.Response) -> int | None:
    """The whole file's size as the response declares it, if it does."""
    if response.status_code == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _listing_has_entries(body: bytes, url: str) -> bool:
    """Whether an S3 ListBucketResult holds any key or folder. Only the result's own children
    count: its ``Prefix`` element echoes the request and names nothing that exists."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SourceDataError(
            f"GET {url} answered {body[:120]!r}, not XML ({exc}); expected an S3 ListBucketResult"
        ) from None
    if root.tag != f"{_S3}ListBucketResult":
        raise SourceDataError(
            f"GET {url} answered a <{root.tag}> document; expected an S3 ListBucketResult"
        )
    return root.find(f"{_S3}Contents") is not None or root.find(f"{_S3}CommonPrefixes") is not None


def _parse_checksum(text: str, url: str) -> str:
    match = re.match(r"\s*([0-9a-fA-F]{64})\b", text)
    if not match:
        raise SourceDataError(
            f"{url}.CHECKSUM holds {text[:120]!r}; expected '<64 hex digits>  <archive name>'"
        )
    return match.group(1).lower()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """One downloader per archive across processes (POSIX advisory lock; none elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- small helpers --------------------------------------------------------------------------------

_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")


def _checked_market(market: str) -> str:
    if market not in MARKETS:
        raise InvalidRequestError(
            f"unknown market {market!r}; expected one of {', '.join(MARKETS)}"
        )
    return market


def _checked_symbol(symbol: str) -> str:
    upper = symbol.upper()
    if not _SYMBOL.fullmatch(upper):
        raise InvalidRequestError(
            f"symbol {symbol!r} is not a Binance symbol; expected 2-30 letters and digits like "
            "BTCUSDT"
        )
    return upper


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
