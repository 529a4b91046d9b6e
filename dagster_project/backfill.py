"""Bulk landing for the CLI: land a range day by day per symbol, curating each day as it lands.

The per-day work is the same library code the assets call (``land_klines``, ``curate_day``), with
the same data checks run before anything lands. A range is fetched a day at a time (a month at a
time where the source serves months far faster), so a failure keeps every day before it.
Every partition written is reported to the Dagster instance, so the UI shows it as materialized.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from dagster_project.assets.curated import CURATED_KLINES, KLINE_GAPS
from dagster_project.assets.raw import RAW_KLINES
from dagster_project.core.days import day_range, whole_days
from dagster_project.core.errors import SourceDataError
from dagster_project.core.klines import TimeRange, empty_klines, interval_length
from dagster_project.core.lake import Lake, connect
from dagster_project.core.schemas import RAW_TABLES
from dagster_project.ingest import freqtrade
from dagster_project.ingest.landing import (
    KlineSource,
    LandedPartition,
    check_klines,
    check_symbol,
    land_daily,
    land_klines,
)
from dagster_project.ingest.orderbook import replay as stream_replay
from dagster_project.ingest.sources import FreqtradeSource
from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key
from dagster_project.transform.curate import curate_day

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# Wraps a loop to show progress (tqdm in the CLI); the identity by default.
Track = Callable[[list, str], Iterable]

# Sources that serve a calendar month in one fetch far faster than day by day: Binance Vision
# publishes monthly archives, and the freqtrade source reads its whole file on every fetch.
MONTHLY_SOURCES = frozenset({"binance_vision", "freqtrade"})


def untracked(items: list, description: str) -> Iterable:
    return items


@dataclass
class BackfillSummary:
    partitions: int = 0
    rows: int = 0
    missing_bars: dict[str, int] = field(default_factory=dict)

    def add(self, landed: list[LandedPartition]) -> None:
        self.partitions += len(landed)
        self.rows += sum(p.rows for p in landed)


def ingest_range(
    lake: Lake,
    source: KlineSource,
    symbols: Iterable[str],
    interval: str,
    time_range: TimeRange,
    instance: dg.DagsterInstance | None = None,
    progress: Progress = log.info,
    track: Track = untracked,
    replace: bool = False,
) -> BackfillSummary:
    """Land and curate every whole UTC day of ``time_range`` for each symbol.

    Every symbol is checked with the source before anything is fetched. Days are fetched, checked,
    landed and curated one batch at a time (``landing_batches``, ``batch_frames``), so a failure
    keeps the days before it and loses only the batch in flight. ``replace``: a day may land with
    fewer rows than are landed for it (else that is refused).
    """
    interval_length(interval)
    symbols = [check_symbol(s) for s in symbols]
    source.check_symbols(symbols)
    days = whole_days(time_range)
    batches = landing_batches(days, source.name)
    summary = BackfillSummary()
    with closing(connect()) as con:
        for symbol in symbols:
            progress(f"landing {symbol} {interval} {days[0]}..{days[-1]} from {source.name}")
            if instance is not None:
                register_symbols(instance, [symbol])
            fetched = batch_frames(source, symbol, interval, batches)
            for batch, frame in zip(track(batches, f"landing {symbol}"), fetched, strict=True):
                landed = land_klines(
                    lake, symbol, interval, frame, batch, replace=replace, origin=source.name
                )
                curate_landed(lake, con, symbol, landed, summary, instance)
            progress(f"{symbol}: landed and curated {len(days)} days")
    return summary


def landing_batches(days: list[dt.date], source_name: str) -> list[list[dt.date]]:
    """``days`` cut into the runs fetched and landed together: calendar months for
    ``MONTHLY_SOURCES``, single days for every other source."""
    if source_name not in MONTHLY_SOURCES:
        return [[day] for day in days]
    months = itertools.groupby(days, key=lambda day: (day.year, day.month))
    return [list(month) for _, month in months]


def batch_frames(
    source: KlineSource, symbol: str, interval: str, batches: list[list[dt.date]]
) -> Iterator[pl.DataFrame]:
    """The klines of each batch of consecutive ``batches``, in order, fetched lazily.

    A source that pages (Binance REST: ``iter_kline_pages``) is read as one stream of pages over
    the whole range, and a batch is handed on as soon as a page reaches past it: a range costs
    ceil(rows / page) requests, as one fetch would, while only a day and a page are held at once.
    Other sources are asked batch by batch.
    """
    if not hasattr(source, "iter_kline_pages"):
        for batch in batches:
            yield source.fetch_klines(symbol, interval, TimeRange.for_days(batch[0], batch[-1]))
        return
    whole = TimeRange.for_days(batches[0][0], batches[-1][-1])
    ends = [TimeRange.for_days(batch[0], batch[-1]).end for batch in batches]
    rows, passed = empty_klines(), 0
    for page in source.iter_kline_pages(symbol, interval, whole):
        rows = pl.concat([rows, page])
        reached = page["open_time"].max() if page.height else None
        while passed < len(ends) and reached is not None and reached >= ends[passed]:
            yield rows.filter(pl.col("open_time") < ends[passed])
            rows = rows.filter(pl.col("open_time") >= ends[passed])
            passed += 1
    for end in ends[passed:]:
        yield rows.filter(pl.col("open_time") < end)
        rows = rows.filter(pl.col("open_time") >= end)


def import_freqtrade_dir(
    lake: Lake,
    folder: str,
    symbols: Iterable[str] = (),
    instance: dg.DagsterInstance | None = None,
    progress: Progress = log.info,
    track: Track = untracked,
    replace: bool = False,
) -> BackfillSummary:
    """Land every freqtrade file of ``folder`` (optionally only ``symbols``) and curate its days.

    All or nothing: every file is read and checked (``check_klines``: data checks, and no landed
    day shrinks unless ``replace``) before any lands, so a bad file leaves the lake as it was.
    Files are read again to land them, so memory holds one file at a time, not the folder.
    """
    files = importable_files(folder, symbols, progress)
    progress(f"checking {len(files)} files before landing any")
    for file in files:
        check_klines(lake, *file_klines(file), replace=replace, origin=str(file.path))
    summary = BackfillSummary()
    with closing(connect()) as con:
        for symbol, symbol_files in itertools.groupby(files, key=lambda f: f.symbol):
            landed: list[LandedPartition] = []
            for file in symbol_files:
                _, interval, frame, days = file_klines(file)
                progress(f"importing {file.path.name}: {frame.height} {symbol} {interval} bars")
                landed += land_klines(
                    lake, symbol, interval, frame, days, replace=replace, origin=str(file.path)
                )
            if instance is not None:
                register_symbols(instance, [symbol])
            curate_landed(lake, con, symbol, landed, summary, instance, track)
            progress(f"{symbol}: landed and curated {len({p.date for p in landed})} days")
    return summary


def file_klines(
    file: freqtrade.FreqtradeFile,
) -> tuple[str, str, pl.DataFrame, list[dt.date] | None]:
    """A freqtrade file read as the symbol, interval, rows and days that ``land_klines`` takes:
    every day from its first to its last row, so a whole day without rows lands empty."""
    frame = freqtrade.read_freqtrade_file(file)
    return file.symbol, file.interval, frame, span_days(frame)


def importable_files(
    folder: str, symbols: Iterable[str], progress: Progress
) -> list[freqtrade.FreqtradeFile]:
    """The folder's candle files of ``symbols`` (all when empty) that candlelake can hold, grouped
    by symbol; refused when a wanted symbol has no file, or two files would land on the same
    symbol and interval."""
    wanted = set(symbols)
    if wanted:
        FreqtradeSource(Path(folder)).check_symbols(sorted(wanted))
    files = [f for f in freqtrade.scan_freqtrade_dir(folder) if not wanted or f.symbol in wanted]
    for file in files:
        if not file.supported:
            progress(
                f"skipping {file.path.name}: interval {file.interval} does not fit a daily "
                "partition"
            )
    files = sorted((f for f in files if f.supported), key=series_of)
    for (symbol, interval), same in itertools.groupby(files, key=series_of):
        same = list(same)
        if len(same) > 1:
            raise SourceDataError(
                f"{symbol} {interval} is in {len(same)} files of {folder} "
                f"({', '.join(str(f.path) for f in same)}); they would replace one another in "
                "raw/klines; expected one file per symbol and interval (move the others away)"
            )
    return files


def series_of(file: freqtrade.FreqtradeFile) -> tuple[str, str]:
    return file.symbol, file.interval


def span_days(frame: pl.DataFrame) -> list[dt.date] | None:
    """Every day from the first to the last row (None for no rows)."""
    if frame.is_empty():
        return None
    return day_range(frame["open_time"].min().date(), frame["open_time"].max().date())


def curate_landed(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    landed: list[LandedPartition],
    summary: BackfillSummary,
    instance: dg.DagsterInstance | None,
    track: Track = untracked,
) -> None:
    """Curate the days just landed, count their missing bars and report them to ``instance``."""
    summary.add(landed)
    for day in track(sorted({p.date for p in landed}), f"curating {symbol}"):
        for curated in curate_day(lake, symbol, day, con=con):
            key = f"{symbol} {curated.interval}"
            summary.missing_bars[key] = summary.missing_bars.get(key, 0) + curated.missing_bars
        if instance is not None:
            report_materialized(instance, symbol, day)


def register_symbols(instance: dg.DagsterInstance, symbols: Iterable[str]) -> None:
    known = set(instance.get_dynamic_partitions(SYMBOLS_PARTITION_NAME))
    new = [s for s in symbols if s not in known]
    if new:
        instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, new)


def report_materialized(instance: dg.DagsterInstance, symbol: str, day: dt.date) -> None:
    for asset_key in (RAW_KLINES, CURATED_KLINES, KLINE_GAPS):
        report_event(instance, asset_key, symbol, day)


def report_event(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, symbol: str, day: dt.date
) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=asset_key,
            partition=str(day_symbol_key(day, symbol)),
            metadata={"written_by": "candlelake CLI"},
        )
    )


def replay_recordings(
    lake: Lake,
    files: list[str],
    symbol: str,
    market: str = "spot",
    cadence_s: float = 1.0,
    levels: int = 50,
    instance: dg.DagsterInstance | None = None,
) -> stream_replay.ReplayResult:
    """Replay recorded streams through the book; land snapshots, updates and aggregate trades
    for every day."""
    symbol = check_symbol(symbol)
    result = stream_replay.replay(files, symbol, cadence_s, levels, market)
    landing = {
        "depth_snapshots": result.snapshots,
        "depth_updates": result.updates,
        "agg_trades": result.agg_trades,
    }
    for table, frame in landing.items():
        schema, time_column = RAW_TABLES[table]
        landed = land_daily(lake, table, {"symbol": symbol}, frame, time_column)
        if instance is not None:
            register_symbols(instance, [symbol])
            for partition in landed:
                report_event(instance, dg.AssetKey(["raw", table]), symbol, partition.date)
    return result
