"""Binance Vision (data.binance.vision) kline archives: the fast path for history.

``fetch_klines`` plans which archives cover a time range (monthly zips for whole past months, daily
zips for the rest), downloads each into a local cache (resumable with HTTP Range, retried with
backoff, verified against its published ``.CHECKSUM``), parses the CSV inside into the klines
contract (``RAW_KLINE_SCHEMA``) and returns the rows in ``[start, end)``.

Layout of the source (and of the cache, which mirrors it)::

    data/{spot|futures/um}/{monthly|daily}/klines/SYMBOL/INTERVAL/SYMBOL-INTERVAL-YYYY-MM[-DD].zip
    ...and beside each zip ``<zip>.CHECKSUM`` holding ``<sha256>  <zip name>``

A zip in the cache with its ``.CHECKSUM`` beside it has been verified and is never downloaded again.
Spot CSVs have no header; futures CSVs have one from 2022 on; spot files from 2025-01-01 carry
microsecond timestamps, everything else milliseconds (decided per value).
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import hashlib
import logging
import math
import os
import re
import threading
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

from dagster_project.errors import (
    BinanceAPIError,
    ChecksumMismatchError,
    InvalidRequestError,
    SourceDataError,
)
from dagster_project.klines import (
    RAW_KLINE_COLUMNS,
    TIMESTAMP,
    UTC,
    TimeRange,
    empty_klines,
    interval_length,
    normalise_epoch_to_us,
)

logger = logging.getLogger(__name__)

SOURCE = "binance_vision"

# Market name -> the folder under data/ on data.binance.vision.
MARKETS: dict[str, str] = {"spot": "spot", "futures_um": "futures/um"}

Period = Literal["monthly", "daily"]
_T = TypeVar("_T")
_A = TypeVar("_A")


def _default_cache_dir() -> Path:
    return Path(os.environ.get("CANDLELAKE_LAKE", "lake")) / ".cache" / "vision"


@dataclass(frozen=True)
class VisionConfig:
    """Where and how Binance Vision archives are fetched."""

    # Root of the archive tree; a local server in tests.
    base_url: str = "https://data.binance.vision"
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


@dataclass(frozen=True)
class VisionArchive:
    """One published kline archive: a calendar month or a UTC day of one symbol and interval."""

    market: str
    symbol: str
    interval: str
    period: Period
    day: dt.date  # the first day of the month for a monthly archive

    @property
    def name(self) -> str:
        stamp = self.day.strftime("%Y-%m" if self.period == "monthly" else "%Y-%m-%d")
        return f"{self.symbol}-{self.interval}-{stamp}.zip"

    @property
    def path(self) -> str:
        """The path below the base URL (and below the cache directory)."""
        return (
            f"data/{MARKETS[self.market]}/{self.period}/klines/"
            f"{self.symbol}/{self.interval}/{self.name}"
        )

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.path}"

    def days(self) -> list[VisionArchive]:
        """The daily archives that together hold what this archive holds."""
        if self.period == "daily":
            return [self]
        count = calendar.monthrange(self.day.year, self.day.month)[1]
        return [
            VisionArchive(self.market, self.symbol, self.interval, "daily", self.day.replace(day=d))
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


def plan_archives(
    symbol: str,
    interval: str,
    time_range: TimeRange,
    today: dt.date | None = None,
    *,
    market: str = "spot",
) -> list[VisionArchive]:
    """The archives covering ``time_range``, oldest first.

    A calendar month wholly inside the range that ended before the current month (``today``'s,
    UTC) is one monthly archive; every other day that overlaps the range is a daily archive.
    Days from ``today`` on are not published yet and are left out.
    """
    interval_length(interval)
    symbol = _checked_symbol(symbol)
    if market not in MARKETS:
        raise InvalidRequestError(
            f"unknown market {market!r}; expected one of {', '.join(MARKETS)}"
        )
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
            archives.append(VisionArchive(market, symbol, interval, "monthly", month))
            day = next_month
        else:
            archives.append(VisionArchive(market, symbol, interval, "daily", day))
            day += dt.timedelta(days=1)
    if last_day >= today:
        logger.debug("Binance Vision has no archives for %s on or after %s yet", symbol, today)
    return archives


class VisionClient:
    """Downloads, verifies, caches and parses Binance Vision kline archives."""

    def __init__(self, config: VisionConfig | None = None, http: httpx.Client | None = None):
        self.config = config or VisionConfig()
        self.stats = VisionStats()
        self._stats_lock = threading.Lock()
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
        logger.info(
            "Binance Vision %s %s %s [%s, %s): %d archives planned",
            self.config.market,
            symbol,
            interval,
            time_range.start.isoformat(),
            time_range.end.isoformat(),
            len(plan),
        )
        paths = self.download_all(plan)
        frames = self._map(read_vision_zip, paths)
        frame = pl.concat(frames, how="vertical") if frames else empty_klines()
        frame = frame.filter(
            pl.col("open_time") >= time_range.start, pl.col("open_time") < time_range.end
        ).sort("open_time")
        with self._stats_lock:
            self.stats.rows += frame.height
        logger.info("Binance Vision %s %s %s: %s", self.config.market, symbol, interval, self.stats)
        return frame

    def download_all(self, archives: Sequence[VisionArchive]) -> list[Path]:
        """Cached, verified paths of ``archives``; a monthly archive that is not published is
        replaced by its daily archives, and a daily archive that is not published by nothing."""
        found = self._map(self.download, archives)
        fallback: list[VisionArchive] = []
        for archive, path in zip(archives, found, strict=True):
            if path is None and archive.period == "monthly":
                logger.info(
                    "%s is not published (HTTP 404); using its daily archives", archive.name
                )
                fallback.extend(archive.days())
            elif path is None:
                logger.info(
                    "%s is not published (HTTP 404): no %s %s data for %s",
                    archive.name, archive.symbol, archive.interval, archive.day.isoformat(),
                )  # fmt: skip
        if fallback:
            found = [p for p in found if p is not None] + self.download_all(fallback)
        return [path for path in found if path is not None]

    def download(self, archive: VisionArchive) -> Path | None:
        """The cached, verified archive, downloading it first if needed; None if not published."""
        final = self.config.cache_dir / archive.path
        if self._is_cached(final):
            self._count(files_reused=1)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.config.cache_dir / ".locks" / (archive.path + ".lock")):
            if self._is_cached(final):  # another process finished it while we waited
                self._count(files_reused=1)
                return final
            try:
                return self._download_locked(archive, final)
            except _NotPublished:
                logger.debug("%s: HTTP 404", archive.url(self.config.base_url))
                self._count(files_missing=1)
                return None

    # -- downloading ------------------------------------------------------------------------------

    def _download_locked(self, archive: VisionArchive, final: Path) -> Path:
        url = archive.url(self.config.base_url)
        checksum_text = self._get_text(url + ".CHECKSUM") if self.config.verify_checksum else None
        expected = _parse_checksum(checksum_text, url) if checksum_text is not None else None
        if final.exists():  # complete, but never verified (fetched with verify_checksum=False)
            if expected is None or _sha256(final) == expected:
                self._mark_verified(final, checksum_text)
                self._count(files_reused=1)
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

# Binance's 12 kline fields as they appear in Vision CSVs (the futures header calls trades "count").
_CSV_SCHEMA: dict[str, pl.DataType] = {
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
}
_REQUIRED = list(_CSV_SCHEMA)[:11]
_INTEGER_FIELDS = {"open_time", "close_time", "trades"}
_FLOAT_FIELDS = [name for name in _REQUIRED if name not in _INTEGER_FIELDS]
_EXPECTED_ROW = (
    "expected 12 comma-separated numbers: open_time,open,high,low,close,volume,close_time,"
    "quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)


def read_vision_zip(path: Path | str, source: str = SOURCE) -> pl.DataFrame:
    """The klines in a Vision archive, which must hold exactly one CSV."""
    path = Path(path)
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
            "CSV; delete it to download it again"
        ) from exc
    return read_vision_csv(data, f"{path.name}/{members[0].filename}", source)


def read_vision_csv(
    path_or_bytes: Path | str | bytes, name: str | None = None, source: str = SOURCE
) -> pl.DataFrame:
    """A Vision kline CSV (header or not, ms or µs times) as the klines contract.

    ``path_or_bytes`` is a file path or the CSV's bytes; ``name`` labels it in error messages. A
    malformed row raises ``SourceDataError`` naming the file, the line and its content.
    """
    if isinstance(path_or_bytes, bytes):
        data, name = path_or_bytes, name or "<csv bytes>"
    else:
        data, name = Path(path_or_bytes).read_bytes(), name or str(path_or_bytes)
    header = _has_header(data)
    try:
        raw = pl.read_csv(data, has_header=False, skip_rows=int(header), schema=_CSV_SCHEMA)
    except pl.exceptions.PolarsError as exc:
        raise _malformed(data, name, header, exc) from exc
    raw = _drop_blank_lines(raw)
    if raw.select(_bad_value_mask().any()).item():
        raise _malformed(data, name, header, None)
    return raw.with_columns(
        normalise_epoch_to_us(pl.col("open_time")).cast(TIMESTAMP),
        normalise_epoch_to_us(pl.col("close_time")).cast(TIMESTAMP),
        pl.lit(source, pl.String).alias("source"),
    ).select(RAW_KLINE_COLUMNS)


def _has_header(data: bytes) -> bool:
    """True when the first field of the first line starts with a letter (``open_time``)."""
    first = re.match(rb"(?:\xef\xbb\xbf)?\s*\"?([^,\r\n]*)", data)
    return bool(first and first.group(1)[:1].isalpha())


def _drop_blank_lines(raw: pl.DataFrame) -> pl.DataFrame:
    """polars reads an empty line as a row of nulls; such lines hold no data."""
    blank = pl.all_horizontal(pl.col(_REQUIRED).is_null())
    return raw.filter(~blank) if raw.select(blank.any()).item() else raw


def _bad_value_mask() -> pl.Expr:
    missing = [pl.col(name).is_null() for name in _REQUIRED]
    not_finite = [~pl.col(name).is_finite() for name in _FLOAT_FIELDS]
    return pl.any_horizontal(*missing, *not_finite)


def _malformed(data: bytes, name: str, header: bool, cause: Exception | None) -> SourceDataError:
    """The error for the first bad line (a slow pass, run only once the fast parse failed)."""
    for number, line in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        line = line.rstrip("\r")
        if (number == 1 and header) or not line.strip():
            continue
        problem = _row_problem(line.split(","))
        if problem:
            shown = line if len(line) <= 200 else line[:200] + "…"
            return SourceDataError(
                f"{name}, line {number}: {problem} in {shown!r}; {_EXPECTED_ROW}"
            )
    return SourceDataError(f"{name}: not a Binance kline CSV ({cause}); {_EXPECTED_ROW}")


def _row_problem(fields: list[str]) -> str | None:
    if len(fields) not in (11, 12):
        return f"{len(fields)} fields"
    for column, value in zip(_REQUIRED, fields, strict=False):
        try:
            number = int(value) if column in _INTEGER_FIELDS else float(value)
        except ValueError:
            kind = "an integer" if column in _INTEGER_FIELDS else "a number"
            return f"{column} is {value!r}, not {kind}"
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
