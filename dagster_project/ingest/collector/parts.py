"""The collector's landing: new rows split by table, symbol and UTC date, and written as immutable
parts (``Lake.append_part``) in the IO thread."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from dagster_project.core.lake import Lake
from dagster_project.core.schemas import RAW_TABLES

log = logging.getLogger(__name__)

LAYER = "raw"
TABLES = ("depth_snapshots", "depth_updates")

PartKey = tuple[str, str, str]  # (table, symbol, UTC date)
Written = tuple[PartKey, Path | None, int]  # the part written (None: the write failed), rows


def add_pending(
    pending: dict[PartKey, list[pl.DataFrame]], symbol: str, frames: dict[str, pl.DataFrame]
) -> None:
    """Add one symbol's new rows (by table) to ``pending``, split by UTC date."""
    for table, frame in frames.items():
        if frame.height == 0:
            continue
        time_column = RAW_TABLES[table][1]
        dated = frame.with_columns(pl.col(time_column).dt.date().alias("_date"))
        for (day,), part in dated.partition_by("_date", as_dict=True, maintain_order=True).items():
            key = (table, symbol, day.isoformat())
            pending.setdefault(key, []).append(part.drop("_date"))


def write_parts(lake: Lake, batches: dict[PartKey, list[pl.DataFrame]]) -> list[Written]:
    """One ``append_part`` per (table, symbol, date); a failed write is logged and reported."""
    results: list[Written] = []
    for key, frames in batches.items():
        table, symbol, day = key
        frame = pl.concat(frames) if len(frames) > 1 else frames[0]
        keys = {"symbol": symbol, "date": day}
        try:
            label = part_label(lake, table, keys, frame)
            path = lake.append_part(LAYER, table, keys, frame, label)
        except Exception as exc:  # noqa: BLE001 - keep the rows whatever went wrong
            log.error(
                "could not write %d %s rows of %s %s (%s: %s); keeping them for the next flush",
                frame.height,
                table,
                symbol,
                day,
                type(exc).__name__,
                exc,
            )
            results.append((key, None, frame.height))
        else:
            results.append((key, path, frame.height))
    return results


def part_label(lake: Lake, table: str, keys: dict[str, str], frame: pl.DataFrame) -> str:
    """``c<first ms>-<last ms>``, zero-padded so that names sort by time; ``_<n>`` is added in
    the (practically impossible) case of a part with the same times already there."""
    times = frame[RAW_TABLES[table][1]].cast(pl.Int64) // 1000
    label = f"c{times.min():013d}-{times.max():013d}"
    folder = lake.partition_dir(LAYER, table, keys)
    unique, n = label, 0
    while (folder / f"part-{unique}.parquet").exists():
        n += 1
        unique = f"{label}_{n}"
    return unique
