"""A local stand-in for data.binance.vision: a static file server with HTTP Range and faults.

    tree = build_vision_tree(tmp_path / "vision", {
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.csv": csv_bytes,
    })
    with VisionServer(tmp_path / "vision") as server:
        server.cut_after("BTCUSDT-1m-2024-01-02.zip", 1000)    # the next GET drops after 1000 bytes
        ...  # point the client at server.base_url
        assert server.requests_for("BTCUSDT-1m-2024-01-02.zip")[1].range == "bytes=1000-"

Faults name a file by its path below the root or by its bare file name. ``build_vision_tree``
publishes CSVs exactly as Binance does: ``X.zip`` holding ``X.csv``, and ``X.zip.CHECKSUM`` holding
``<sha256 of the zip>  X.zip``.

Like Binance's bucket (``https://s3-ap-northeast-1.amazonaws.com/data.binance.vision``, which the
data.binance.vision pages list), the root answers S3 ListObjects (v1) queries,
``GET /?prefix=data/spot/daily/klines/&delimiter=/&max-keys=1000&marker=...``, with S3's
``ListBucketResult`` XML (``Contents`` for keys, ``CommonPrefixes`` for folders, ``NextMarker`` when
truncated), and a missing key gets S3's ``NoSuchKey`` error document.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
import re
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

from tests.fakes.local_server import LocalServer

KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # below the root, without the leading slash
    range: str | None  # the Range header as sent
    status: int
    bytes_sent: int  # body bytes actually written
    query: str = ""  # the query string as sent (bucket listings)


@dataclass
class _Fault:
    kind: str  # "status", "cut", "wrong_checksum", "ignore_range"
    key: str
    times: int | None  # None: every time
    value: int = 0  # the status, or the byte count for "cut"


class VisionServer(LocalServer):
    """Serves ``root`` on 127.0.0.1 (a free port) from a thread; use as a context manager."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        super().__init__()

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    @property
    def base_url(self) -> str:
        return self.url

    # -- faults ---------------------------------------------------------------------------------

    def fail(self, key: str, status: int = 500, times: int | None = 1) -> None:
        """Answer ``status`` (empty body) to the next ``times`` requests for ``key``."""
        self._add(_Fault("status", key, times, status))

    def missing(self, key: str) -> None:
        """Answer 404 for ``key`` from now on, as if it were never published."""
        self._add(_Fault("status", key, None, 404))

    def cut_after(self, key: str, nbytes: int, times: int | None = 1) -> None:
        """Send only the first ``nbytes`` of the body, then drop the connection."""
        self._add(_Fault("cut", key, times, nbytes))

    def wrong_checksum(self, key: str) -> None:
        """Serve a well-formed but wrong digest in ``key``'s ``.CHECKSUM`` (key: the zip)."""
        self._add(_Fault("wrong_checksum", key, None))

    def ignore_range(self, key: str) -> None:
        """Answer 200 with the whole file even when a Range is asked for."""
        self._add(_Fault("ignore_range", key, None))

    def clear(self) -> None:
        """Forget faults and the request log."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    # -- request log ----------------------------------------------------------------------------

    def requests_for(self, key: str, method: str = "GET") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and _matches(key, r.path)]

    # -- used by the handler --------------------------------------------------------------------

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, kind: str, path: str) -> _Fault | None:
        """The first live fault of ``kind`` for ``path``, using up one of its times."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and _matches(fault.key, path) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeVision/1.0"

    def log_message(self, format: str, *args: object) -> None:  # silence stderr
        pass

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        vision: VisionServer = self.owner  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")

        def finish(
            status: int, body: bytes = b"", headers: Mapping[str, str] = {}, limit: int = -1
        ) -> None:
            """Log the request, then answer: the log is complete once the client has its reply."""
            payload = (body if limit < 0 else body[:limit]) if send_body else b""
            query = urlsplit(self.path).query
            record = RecordedRequest(
                self.command, path, range_header, status, len(payload), unquote(query)
            )
            vision._record(record)
            self._respond(status, len(body), headers, payload)

        forced = vision._take("status", path)
        if forced is not None:
            return finish(forced.value, f"fault: HTTP {forced.value}\n".encode())
        if path == "":
            listing = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            return finish(200, bucket_listing(vision.root, listing), _XML)
        body = self._read(vision, path)
        if body is None:
            return finish(404, no_such_key(path), _XML)
        status, headers = 200, {"Accept-Ranges": "bytes", "ETag": _etag(body)}
        wanted = _parse_range(range_header, len(body))
        if wanted is not None and vision._take("ignore_range", path) is None:
            if wanted == "unsatisfiable":
                return finish(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            start, end = wanted
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            status, body = 206, body[start : end + 1]
        cut = vision._take("cut", path)
        if cut is not None and send_body:
            self.close_connection = True  # drop the connection after the first cut.value bytes
            return finish(status, body, headers, limit=cut.value)
        return finish(status, body, headers)

    def _read(self, vision: VisionServer, path: str) -> bytes | None:
        file = (vision.root / path).resolve()
        if vision.root not in file.parents or not file.is_file():
            return None
        body = file.read_bytes()
        if path.endswith(".CHECKSUM") and vision._take("wrong_checksum", path[: -len(".CHECKSUM")]):
            name = path.rsplit("/", 1)[-1][: -len(".CHECKSUM")]
            body = f"{hashlib.sha256(b'not the archive').hexdigest()}  {name}\n".encode()
        return body

    def _respond(
        self, status: int, length: int, headers: Mapping[str, str], payload: bytes
    ) -> None:
        """Headers announcing ``length`` body bytes, then ``payload`` (fewer when cut)."""
        self.send_response(status)
        content_type = "application/zip" if self.path.endswith(".zip") else "text/plain"
        headers = {"Content-Type": content_type, **headers}
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


_XML = {"Content-Type": "application/xml"}
_S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


def no_such_key(key: str) -> bytes:
    """S3's error document for a key that does not exist (what Binance's bucket answers)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
        f"<Message>The specified key does not exist.</Message><Key>{escape(key)}</Key>"
        "<RequestId>FAKEVISION000000</RequestId><HostId>fake-vision</HostId></Error>"
    ).encode()


def bucket_listing(root: Path, query: Mapping[str, str]) -> bytes:
    """S3 ListObjects (v1) over the files below ``root``: keys in byte order; with a delimiter,
    keys sharing a folder after ``prefix`` roll up into one ``CommonPrefixes`` entry; at most
    ``max-keys`` entries after ``marker``, then ``IsTruncated`` and (with a delimiter)
    ``NextMarker``, as S3 sends them."""
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    marker, max_keys = query.get("marker", ""), int(query.get("max-keys") or 1000)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    entries: list[tuple[str, str]] = []  # ("key" | "prefix", value), in listing order
    truncated = False
    for key in sorted(files, key=lambda k: k.encode()):
        if not key.startswith(prefix) or key <= marker:
            continue
        rest = key[len(prefix) :]
        entry = ("key", key)
        if delimiter and delimiter in rest:
            entry = ("prefix", prefix + rest[: rest.index(delimiter) + len(delimiter)])
            if (marker.endswith(delimiter) and key.startswith(marker)) or entry in entries:
                continue  # a folder already listed (on this page or, by marker, an earlier one)
        if len(entries) == max_keys:
            truncated = True
            break
        entries.append(entry)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<ListBucketResult xmlns="{_S3_NAMESPACE}"><Name>data.binance.vision</Name>',
        f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>",
        f"<MaxKeys>{max_keys}</MaxKeys>",
        f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else "",
        f"<IsTruncated>{str(truncated).lower()}</IsTruncated>",
        f"<NextMarker>{escape(entries[-1][1])}</NextMarker>" if truncated and delimiter else "",
    ]
    parts += [_listed_object(value, files[value]) for kind, value in entries if kind == "key"]
    parts += [
        f"<CommonPrefixes><Prefix>{escape(value)}</Prefix></CommonPrefixes>"
        for kind, value in entries
        if kind == "prefix"
    ]
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def _listed_object(key: str, path: Path) -> str:
    body = path.read_bytes()
    modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return (
        f"<Contents><Key>{escape(key)}</Key>"
        f"<LastModified>{modified:%Y-%m-%dT%H:%M:%S}.000Z</LastModified>"
        f"<ETag>&quot;{hashlib.md5(body).hexdigest()}&quot;</ETag><Size>{len(body)}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
    )


def _matches(key: str, path: str) -> bool:
    key = key.lstrip("/")
    return path == key or path.rsplit("/", 1)[-1] == key


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single ``bytes=`` range, "unsatisfiable", or None (serve all)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return "unsatisfiable"
    return start, end


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body).hexdigest() + '"'


# -- fixtures -------------------------------------------------------------------------------------


def build_vision_tree(root: Path | str, files: Mapping[str, bytes | str]) -> dict[str, Path]:
    """Publish CSVs below ``root`` the way Binance Vision does; returns key -> zip path.

    Each key is the archive's path below the root, ending ``.zip`` or ``.csv``
    (``data/spot/daily/klines/X/1m/X-1m-2024-01-02.zip``); each value the CSV content.
    """
    root = Path(root)
    published: dict[str, Path] = {}
    for key, content in files.items():
        zip_path = root / (key[: -len(".csv")] + ".zip" if key.endswith(".csv") else key)
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        zip_path.write_bytes(vision_zip_bytes(zip_path.name[: -len(".zip")] + ".csv", data))
        write_checksum(zip_path)
        published[key] = zip_path
    return published


def vision_zip_bytes(csv_name: str, csv_data: bytes) -> bytes:
    """A zip holding one deflated CSV, byte-for-byte reproducible (fixed member timestamp)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(csv_name, date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, csv_data)
    return buffer.getvalue()


def write_checksum(zip_path: Path) -> Path:
    """``<zip>.CHECKSUM`` as Binance writes it: sha256, two spaces, the zip's name."""
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    checksum = zip_path.with_name(zip_path.name + ".CHECKSUM")
    checksum.write_text(f"{digest}  {zip_path.name}\n")
    return checksum


def synthetic_kline_csv(
    start: dt.datetime,
    rows: int,
    interval_s: int = 60,
    *,
    header: bool = False,
    microseconds: bool = False,
    seed: int = 0,
) -> bytes:
    """Plausible Binance kline CSV rows (8-decimal strings like spot files), deterministic by seed.

    Timestamps are ms, or µs with ``microseconds=True``. Close times are the last unit of the
    bar, as Binance writes them: ``…59999`` ms, or ``…59999999`` µs (spot files from 2025 on).
    """
    rng = random.Random(seed)
    scale = 1_000_000 if microseconds else 1_000
    first = int(start.replace(tzinfo=start.tzinfo or dt.UTC).timestamp())
    lines = [KLINE_HEADER] if header else []
    price = 100.0
    for i in range(rows):
        open_s = first + i * interval_s
        open_, close = price, price * (1 + rng.uniform(-0.002, 0.002))
        high, low = max(open_, close) * 1.001, min(open_, close) * 0.999
        volume = rng.uniform(1, 100)
        taker = volume * rng.uniform(0.2, 0.8)
        fields = [
            str(open_s * scale),
            *(f"{v:.8f}" for v in (open_, high, low, close, volume)),
            str((open_s + interval_s) * scale - 1),
            f"{volume * close:.8f}",
            str(rng.randint(1, 500)),
            f"{taker:.8f}",
            f"{taker * close:.8f}",
            "0",
        ]
        lines.append(",".join(fields))
        price = close
    return ("\n".join(lines) + "\n").encode()


AGG_TRADES_HEADER = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
)


def synthetic_agg_trades_csv(
    start: dt.datetime,
    rows: int,
    gap_ms: int = 250,
    *,
    header: bool = False,
    microseconds: bool = False,
    futures: bool = False,
    first_id: int = 1_000,
    seed: int = 0,
) -> bytes:
    """A Binance Vision aggTrades CSV, deterministic by seed.

    Spot layout by default: 8 fields (``is_best_match`` last), booleans ``True``/``False``.
    ``futures=True``: 7 fields, booleans ``true``/``false``. ``header=True`` adds the header line
    (futures files have one). Trade ``i`` is at ``start + i * gap_ms`` plus up to ``gap_ms // 2``
    ms of jitter (times never decrease); ids are consecutive and each aggregates 1-3 trades whose
    ids continue the previous one's. Timestamps are ms, or µs (exactly ms x 1000) with
    ``microseconds=True``.
    """
    rng = random.Random(seed)
    scale = 1_000 if microseconds else 1
    first_ms = int(start.replace(tzinfo=start.tzinfo or dt.UTC).timestamp() * 1000)
    header_line = AGG_TRADES_HEADER + ("" if futures else ",is_best_match")
    lines = [header_line] if header else []
    price, trade_id = 100.0, 10 * first_id
    for i in range(rows):
        price = max(0.01, price + rng.choice((-0.02, -0.01, 0.0, 0.01, 0.02)))
        count = rng.randint(1, 3)
        buyer_maker = rng.random() < 0.5
        fields = [
            str(first_id + i),
            f"{price:.8f}",
            f"{rng.uniform(0.0001, 2):.8f}",
            str(trade_id),
            str(trade_id + count - 1),
            str((first_ms + i * gap_ms + rng.randint(0, gap_ms // 2)) * scale),
            str(buyer_maker).lower() if futures else str(buyer_maker),
        ]
        if not futures:
            fields.append("True")
        lines.append(",".join(fields))
        trade_id += count
    return ("\n".join(lines) + "\n").encode()


def spot_kline_archives(symbol: str, interval: str, klines) -> dict[str, bytes]:
    """The kline CSVs Binance Vision publishes for ``klines`` (a polars frame in the klines
    contract, one symbol and interval), keyed for ``build_vision_tree``: a daily archive for every
    UTC day with rows, and a monthly archive for every calendar month with rows on all its days."""
    import polars as pl

    day = pl.col("open_time").dt.date()
    files: dict[str, bytes] = {}
    for (date,), rows in klines.sort("open_time").group_by(day, maintain_order=True):
        name = f"{symbol}-{interval}-{date.isoformat()}"
        files[f"data/spot/daily/klines/{symbol}/{interval}/{name}.csv"] = spot_kline_csv(rows)
    month = pl.col("open_time").dt.truncate("1mo").dt.date()
    for (first,), rows in klines.sort("open_time").group_by(month, maintain_order=True):
        days_in_month = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - first
        if rows.select(day.n_unique()).item() == days_in_month.days:
            name = f"{symbol}-{interval}-{first:%Y-%m}"
            files[f"data/spot/monthly/klines/{symbol}/{interval}/{name}.csv"] = spot_kline_csv(rows)
    return files


def spot_kline_csv(klines, *, microseconds: bool = False) -> bytes:
    """Klines-contract rows as a Binance Vision spot CSV: no header, epoch milliseconds (or
    microseconds, as spot files from 2025 on, whose close times end ``…999999``), prices and sizes
    with 8 decimals, ``ignore`` 0."""
    import polars as pl

    scale = 1 if microseconds else 1_000
    last_unit = 999 if microseconds else 0  # the contract's ...59.999000 is ...59.999999 in µs
    epoch = [
        (pl.col("open_time").dt.epoch("us") // scale).alias("open_time"),
        ((pl.col("close_time").dt.epoch("us") + last_unit) // scale).alias("close_time"),
    ]
    columns = [
        "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
        "trades", "taker_buy_base_volume", "taker_buy_quote_volume",
    ]  # fmt: skip
    rows = klines.with_columns(*epoch).select(*columns, pl.lit(0).alias("ignore"))
    return rows.write_csv(include_header=False, float_precision=8).encode()
