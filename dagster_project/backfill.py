"""Bulk landing for the CLI: fetch a whole range per symbol, land it by day, curate every day.

The per-day work is the same library code the assets call (``land_klines``, ``curate_day``); a
range is fetched in one go so REST paging and Vision monthly archives are used efficiently.
Every partition written is reported to the Dagster instance, so the UI shows it as materialized.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from dagster_project.assets.curate import CURATED_KLINES, KLINE_GAPS
from dagster_project.assets.ingest import RAW_KLINES
from dagster_project.curate import curate_day
from dagster_project.ingest import freqtrade, stream_replay
from dagster_project.ingest.landing import (
    KlineSource,
    LandedPartition,
    check_symbol,
    land_daily,
    land_days,
    land_klines,
)
from dagster_project.klines import TimeRange, interval_length
from dagster_project.lake import Lake, connect
from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key
from dagster_project.schemas import RAW_TABLES

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# Wraps a loop to show progress (tqdm in the CLI); the identity by default.
Track = Callable[[list, str], Iterable]


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


def whole_days(time_range: TimeRange) -> list[dt.date]:
    """The UTC days a range touches (partitions are whole days, so a range widens to them)."""
    first = time_range.start.date()
    last = (time_range.end - dt.timedelta(microseconds=1)).date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def ingest_range(
    lake: Lake,
    source: KlineSource,
    symbols: Iterable[str],
    interval: str,
    time_range: TimeRange,
    instance: dg.DagsterInstance | None = None,
    progress: Progress = log.info,
    track: Track = untracked,
) -> BackfillSummary:
    """Land and curate every whole UTC day of ``time_range`` for each symbol."""
    interval_length(interval)
    symbols = [check_symbol(s) for s in symbols]
    days = whole_days(time_range)
    summary = BackfillSummary()
    for symbol in symbols:
        progress(f"fetching {symbol} {interval} {days[0]}..{days[-1]} from {source.name}")
        landed = land_days(lake, source, symbol, interval, days)
        curate_and_report(lake, symbol, landed, summary, instance, progress, track)
    return summary


def import_freqtrade_dir(
    lake: Lake,
    folder: str,
    symbols: Iterable[str] = (),
    instance: dg.DagsterInstance | None = None,
    progress: Progress = log.info,
    track: Track = untracked,
) -> BackfillSummary:
    """Land every freqtrade file of ``folder`` (optionally only ``symbols``) and curate its days."""
    wanted = set(symbols)
    files = [f for f in freqtrade.scan_freqtrade_dir(folder) if not wanted or f.symbol in wanted]
    for file in files:
        if not file.supported:
            progress(
                f"skipping {file.path.name}: interval {file.interval} does not fit a daily "
                "partition"
            )
    files = [f for f in files if f.supported]
    summary = BackfillSummary()
    landed_by_symbol: dict[str, list[LandedPartition]] = {}
    for file in files:
        frame = freqtrade.read_freqtrade_file(file)
        progress(f"importing {file.path.name}: {frame.height} {file.symbol} {file.interval} bars")
        landed = land_klines(lake, file.symbol, file.interval, frame, days=span_days(frame))
        landed_by_symbol.setdefault(file.symbol, []).extend(landed)
    for symbol, landed in landed_by_symbol.items():
        curate_and_report(lake, symbol, landed, summary, instance, progress, track)
    return summary


def span_days(frame: pl.DataFrame) -> list[dt.date] | None:
    """Every day from the first to the last row, so a whole day without rows lands empty."""
    if frame.is_empty():
        return None
    first, last = frame["open_time"].min().date(), frame["open_time"].max().date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def curate_and_report(
    lake: Lake,
    symbol: str,
    landed: list[LandedPartition],
    summary: BackfillSummary,
    instance: dg.DagsterInstance | None,
    progress: Progress,
    track: Track = untracked,
) -> None:
    summary.add(landed)
    days = sorted({p.date for p in landed})
    if instance is not None:
        register_symbols(instance, [symbol])
    con = connect()
    try:
        for day in track(days, f"curating {symbol}"):
            for curated in curate_day(lake, symbol, day, con=con):
                key = f"{symbol} {curated.interval}"
                summary.missing_bars[key] = summary.missing_bars.get(key, 0) + curated.missing_bars
            if instance is not None:
                report_materialized(instance, symbol, day)
    finally:
        con.close()
    progress(f"{symbol}: landed and curated {len(days)} days")


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
    """Replay recorded streams through the book and land snapshots and updates for every day."""
    symbol = check_symbol(symbol)
    result = stream_replay.replay(files, symbol, cadence_s, levels, market)
    for table, frame in (("depth_snapshots", result.snapshots), ("depth_updates", result.updates)):
        schema, time_column = RAW_TABLES[table]
        landed = land_daily(lake, table, {"symbol": symbol}, frame, time_column)
        if instance is not None:
            register_symbols(instance, [symbol])
            for partition in landed:
                report_event(instance, dg.AssetKey(["raw", table]), symbol, partition.date)
    return result
