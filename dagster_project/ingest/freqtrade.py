"""Import freqtrade data folders (``user_data/data/binance/``) as they are.

freqtrade names its candle files ``<pair>-<timeframe>[-<candle type>].<ext>``, where ``<pair>`` is
the pair with ``/`` and ``:`` replaced by ``_``: ``BTC_USDT-1h.feather`` (spot, in the folder) and
``BTC_USDT_USDT-1h-futures.feather`` (USD-M futures, in its ``futures/`` subfolder). The formats are
``feather`` and ``parquet`` (columns ``date`` UTC, ``open, high, low, close, volume``) and ``json``
/ ``json.gz`` (a list of ``[epoch ms, open, high, low, close, volume]``).

freqtrade keeps only those six fields, so quote volume, trade count and taker-buy volumes come out
NULL: they are never invented. Mark, index, premium-index and funding-rate files are not klines of
trades and are skipped, like trade files and anything else in the folder.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as parquet

from dagster_project.core.errors import (
    InvalidRequestError,
    SourceDataError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import (
    INTERVALS,
    RAW_KLINE_SCHEMA,
    TIMESTAMP,
    conform,
    normalise_epoch_to_us,
)

log = logging.getLogger(__name__)

SOURCE = "freqtrade"
OHLCV_COLUMNS: tuple[str, ...] = ("date", "open", "high", "low", "close", "volume")
FORMATS: dict[str, str] = {  # file suffix -> freqtrade's name for the format
    ".feather": "feather",
    ".parquet": "parquet",
    ".json": "json",
    ".json.gz": "jsongz",
}
_NAME = re.compile(
    r"^(?P<pair>[A-Z0-9]+(?:_[A-Z0-9]+){1,2})"
    r"-(?P<timeframe>[0-9]+[smhdwMy])"
    r"(?:-(?P<candle_type>futures|mark|index|premiumIndex|funding_rate))?"
    r"(?P<suffix>\.feather|\.parquet|\.json|\.json\.gz)$"
)
_SKIPPED_CANDLE_TYPES = ("mark", "index", "premiumIndex", "funding_rate")
_US_PER_MS = 1_000


@dataclass(frozen=True)
class FreqtradeFile:
    """One freqtrade candle file and what its name says."""

    path: Path
    symbol: str  # Binance symbol, e.g. "BTCUSDT"
    interval: str  # freqtrade timeframe, e.g. "1h" (may be one candlelake cannot hold, e.g. "1w")
    market: str  # "spot" or "futures"
    format: str  # "feather", "parquet", "json" or "jsongz"
    pair: str  # freqtrade's pair, e.g. "BTC/USDT" or "BTC/USDT:USDT"

    @property
    def supported(self) -> bool:
        """Whether candlelake can hold the interval (else ``read_freqtrade_file`` raises)."""
        return self.interval in INTERVALS


def scan_freqtrade_dir(path: str | Path) -> list[FreqtradeFile]:
    """The candle files in a freqtrade exchange folder and its ``futures/`` subfolder, sorted.

    Unrelated files are ignored. Raises :class:`InvalidRequestError` when the folder does not exist
    or holds no freqtrade candle file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidRequestError(
            f"freqtrade data folder {str(folder)!r} does not exist or is not a folder; expected a "
            "folder like user_data/data/binance"
        )
    candidates = [*folder.iterdir()]
    if (folder / "futures").is_dir():
        candidates += [*(folder / "futures").iterdir()]
    files = [found for p in candidates if p.is_file() and (found := parse_freqtrade_name(p))]
    if not files:
        raise InvalidRequestError(
            f"freqtrade data folder {str(folder)!r} holds no freqtrade candle files; expected "
            "names like BTC_USDT-1h.feather, ETH_USDT-5m.json.gz or "
            "futures/BTC_USDT_USDT-1h-futures.feather"
        )
    return sorted(files, key=lambda f: (f.market, f.symbol, f.interval, f.format, str(f.path)))


def parse_freqtrade_name(path: str | Path) -> FreqtradeFile | None:
    """What a freqtrade candle file's name says, or ``None`` when it is not one."""
    path = Path(path)
    match = _NAME.match(path.name)
    if match is None:
        return None
    candle_type = match["candle_type"]
    if candle_type in _SKIPPED_CANDLE_TYPES:
        log.info("skipping %s: %s candles are not klines of trades", path, candle_type)
        return None
    parts = match["pair"].split("_")
    market = "futures" if candle_type == "futures" else "spot"
    if market == "spot" and len(parts) == 3:
        return None  # a settle currency belongs to futures files only
    pair = f"{parts[0]}/{parts[1]}" + (f":{parts[2]}" if len(parts) == 3 else "")
    return FreqtradeFile(
        path=path,
        symbol=parts[0] + parts[1],
        interval=match["timeframe"],
        market=market,
        format=FORMATS[match["suffix"]],
        pair=pair,
    )


def read_freqtrade_file(file: FreqtradeFile | str | Path) -> pl.DataFrame:
    """The klines of one freqtrade candle file, in the contract schema, sorted by ``open_time``.

    Raises :class:`UnsupportedIntervalError` for a timeframe candlelake cannot hold (3d, 1w, 1M)
    and :class:`SourceDataError` for an unreadable file or missing columns; both name the file.
    """
    if not isinstance(file, FreqtradeFile):
        parsed = parse_freqtrade_name(file)
        if parsed is None:
            raise InvalidRequestError(
                f"{str(file)!r} is not named like a freqtrade candle file; expected "
                "<BASE>_<QUOTE>[_<SETTLE>]-<timeframe>[-futures].<feather|parquet|json|json.gz>"
            )
        file = parsed
    if not file.supported:
        raise UnsupportedIntervalError(
            f"{file.path}: timeframe {file.interval!r} cannot be held by candlelake (a bar must "
            f"fit in one UTC day); expected one of {', '.join(INTERVALS)}"
        )
    raw = _read_table(file)
    return _to_klines(raw, file)


def _read_table(file: FreqtradeFile) -> pl.DataFrame:
    path = file.path
    try:
        if file.format == "feather":
            return pl.from_arrow(feather.read_table(path))
        if file.format == "parquet":
            return pl.from_arrow(parquet.read_table(path))
        opener = gzip.open if file.format == "jsongz" else open
        with opener(path, "rt", encoding="utf-8") as stream:
            return _frame_from_json_rows(json.load(stream), path)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pa.ArrowException) as exc:
        # json.JSONDecodeError is a ValueError; gzip.BadGzipFile an OSError.
        raise SourceDataError(
            f"{path}: cannot read it as freqtrade {file.format} candles ({exc}); expected "
            f"{_expected(file.format)}"
        ) from exc


def _frame_from_json_rows(rows: object, path: Path) -> pl.DataFrame:
    if not isinstance(rows, list):
        raise SourceDataError(
            f"{path}: holds a JSON {type(rows).__name__}; expected {_expected('json')}"
        )
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, list) or len(row) < 6), None)
    if bad is not None:
        raise SourceDataError(
            f"{path}: row {bad} is {rows[bad]!r}; expected "
            "[epoch ms, open, high, low, close, volume]"
        )
    columns = list(zip(*(row[:6] for row in rows), strict=True)) or [[]] * 6
    try:
        return pl.DataFrame(
            {
                name: pl.Series(name, values, dtype=pl.Int64 if name == "date" else pl.Float64)
                for name, values in zip(OHLCV_COLUMNS, columns, strict=True)
            }
        )
    except (TypeError, pl.exceptions.PolarsError) as exc:
        raise SourceDataError(
            f"{path}: holds a value that is not a number ({exc}); expected {_expected('json')}"
        ) from exc


def _to_klines(raw: pl.DataFrame, file: FreqtradeFile) -> pl.DataFrame:
    missing = [c for c in OHLCV_COLUMNS if c not in raw.columns]
    if missing:
        raise SourceDataError(
            f"{file.path}: lacks columns {missing} (has {raw.columns}); expected "
            f"{_expected(file.format)}"
        )
    open_time = _open_time(raw["date"], file)
    step_us = int(INTERVALS[file.interval].total_seconds()) * 1_000_000
    try:
        prices = raw.select(pl.col(c).cast(pl.Float64) for c in OHLCV_COLUMNS[1:])
    except pl.exceptions.PolarsError as exc:
        raise SourceDataError(
            f"{file.path}: a price or volume column is not numeric ({exc}); expected "
            f"{_expected(file.format)}"
        ) from exc
    frame = pl.DataFrame({"open_time": open_time}).hstack(prices)
    _check_grid(frame, file, step_us)
    nulls = {
        name: pl.lit(None, RAW_KLINE_SCHEMA[name])
        for name in ("quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume")
    }
    return conform(
        frame.with_columns(
            (pl.col("open_time") + pl.duration(microseconds=step_us - _US_PER_MS)).alias(
                "close_time"
            ),
            *(value.alias(name) for name, value in nulls.items()),
            pl.lit(SOURCE, pl.String).alias("source"),
        ).sort("open_time")
    )


def _open_time(date: pl.Series, file: FreqtradeFile) -> pl.Series:
    """``date`` as UTC microseconds: timestamps in any unit (naive ones are UTC), or epoch ms."""
    if date.null_count():
        raise SourceDataError(
            f"{file.path}: {date.null_count()} rows have no date; expected a UTC time in every row"
        )
    dtype = date.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            date = date.dt.replace_time_zone("UTC")
        return date.dt.convert_time_zone("UTC").cast(TIMESTAMP)
    if dtype.is_integer():
        epoch = pl.lit(date).cast(pl.Int64)
        return pl.select(normalise_epoch_to_us(epoch).cast(TIMESTAMP)).to_series()
    raise SourceDataError(
        f"{file.path}: column 'date' has type {dtype}; expected a UTC timestamp or epoch "
        "milliseconds"
    )


def _check_grid(frame: pl.DataFrame, file: FreqtradeFile, step_us: int) -> None:
    """Every open time lies on the interval's grid, or the file's name lies about its timeframe."""
    offset = frame.select(
        (pl.col("open_time").dt.epoch("us") % step_us).alias("offset"), pl.col("open_time")
    ).filter(pl.col("offset") != 0)
    if offset.height:
        first = offset["open_time"][0]
        raise SourceDataError(
            f"{file.path}: date {first.isoformat()} is not on the {file.interval} grid "
            f"({offset.height} such rows); expected every date to open a {file.interval} bar"
        )


def _expected(fmt: str) -> str:
    if fmt in ("json", "jsongz"):
        return "a JSON list of [epoch ms, open, high, low, close, volume] rows"
    return f"a {fmt} table with columns {', '.join(OHLCV_COLUMNS)} (date in UTC)"
