"""Data-quality checks on lake partitions: plain functions over polars frames.

Assets turn each ``CheckOutcome`` into a Dagster ``AssetCheckResult``; tests call them directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from dagster_project.core.integrity import IntegrityReport
from dagster_project.core.klines import to_utc


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, object] = field(default_factory=dict)
    warn_only: bool = False


# Failed parts whose metadata a merged outcome keeps (a month-long run checks 120 kline parts).
MERGED_METADATA_PARTS = 10

KLINE_CHECKS = (
    "unique_open_time",
    "ohlc_consistent",
    "monotonic_open_time",
    "no_future_timestamps",
    "inside_partition_day",
)


def kline_checks(
    frame: pl.DataFrame, day: dt.date, now: dt.datetime | None = None
) -> list[CheckOutcome]:
    """Every check in ``KLINE_CHECKS`` on the klines of one partition (one interval)."""
    return [
        unique(frame, "open_time"),
        ohlc_consistent(frame),
        strictly_increasing(frame, "open_time"),
        no_future_timestamps(frame, now or dt.datetime.now(dt.UTC)),
        inside_partition_day(frame, day),
    ]


def unique(frame: pl.DataFrame, column: str) -> CheckOutcome:
    duplicated = frame.filter(pl.col(column).is_duplicated())
    return CheckOutcome(
        f"unique_{column}",
        duplicated.is_empty(),
        f"each {column} appears once (the grain of the table)",
        {"duplicate_rows": duplicated.height, **first_values(duplicated, column)},
    )


def ohlc_consistent(frame: pl.DataFrame) -> CheckOutcome:
    bad = frame.filter(
        ~(
            (pl.col("low") <= pl.min_horizontal("open", "close"))
            & (pl.max_horizontal("open", "close") <= pl.col("high"))
            & (pl.col("low") > 0)
            & (pl.col("volume") >= 0)
        )
        | pl.any_horizontal(pl.col("open", "high", "low", "close").is_null())
    )
    return CheckOutcome(
        "ohlc_consistent",
        bad.is_empty(),
        "0 < low <= open, close <= high and volume >= 0 on every row",
        {"bad_rows": bad.height, **first_values(bad)},
    )


def strictly_increasing(frame: pl.DataFrame, column: str) -> CheckOutcome:
    values = frame[column]
    backwards = (
        int((values.slice(1) <= values.slice(0, len(values) - 1)).sum()) if len(values) else 0
    )
    return CheckOutcome(
        f"monotonic_{column}",
        backwards == 0,
        f"{column} strictly increases from row to row",
        {"non_increasing_steps": backwards},
    )


def no_future_timestamps(
    frame: pl.DataFrame, now: dt.datetime, column: str = "open_time"
) -> CheckOutcome:
    future = frame.filter(pl.col(column) > now)
    return CheckOutcome(
        "no_future_timestamps",
        future.is_empty(),
        "no bar opens after the time of the check",
        {
            "future_rows": future.height,
            "checked_at": now.isoformat(),
            **first_values(future, column),
        },
    )


def inside_partition_day(
    frame: pl.DataFrame, day: dt.date, column: str = "open_time"
) -> CheckOutcome:
    start = to_utc(day)
    outside = frame.filter(
        ~pl.col(column).is_between(start, start + dt.timedelta(days=1), closed="left")
    )
    return CheckOutcome(
        "inside_partition_day",
        outside.is_empty(),
        f"every {column} falls on the partition's UTC day {day}",
        {"outside_rows": outside.height, **first_values(outside, column)},
    )


def gap_report(gaps: pl.DataFrame, interval: str) -> CheckOutcome:
    """Warns (never fails) when bars are missing; the gaps themselves are in curated/kline_gaps."""
    missing = int(gaps["missing_bars"].sum()) if gaps.height else 0
    largest = int(gaps["missing_bars"].max()) if gaps.height else 0
    return CheckOutcome(
        "gap_report",
        gaps.is_empty(),
        f"{interval} bars missing from the day (recorded in curated/kline_gaps, never filled)",
        {"gaps": gaps.height, "missing_bars": missing, "largest_gap_bars": largest},
        warn_only=True,
    )


def first_values(
    rows: pl.DataFrame, column: str = "open_time", limit: int = 3
) -> dict[str, object]:
    if rows.is_empty() or column not in rows.columns:
        return {}
    values = [v.isoformat() if isinstance(v, dt.datetime) else v for v in rows[column][:limit]]
    return {f"first_offending_{column}s": values}


def merge_outcomes(name: str, outcomes: list[tuple[str, CheckOutcome]]) -> CheckOutcome:
    """One outcome for a check run on several parts (intervals, days) of what a run materialized:
    failed if any part failed, with the metadata of the first MERGED_METADATA_PARTS failed parts
    (prefixed by their label) and the number of parts checked. One part: its outcome as is."""
    if len(outcomes) == 1:
        return dataclasses.replace(outcomes[0][1], name=name)
    failed = [(label, outcome) for label, outcome in outcomes if not outcome.passed]
    metadata: dict[str, object] = {"parts_checked": len(outcomes), "parts_failed": len(failed)}
    for label, outcome in failed[:MERGED_METADATA_PARTS]:
        metadata |= {f"{label}.{k}": v for k, v in outcome.metadata.items()}
    first = outcomes[0][1]
    labels = ", ".join(label for label, _ in failed[:MERGED_METADATA_PARTS])
    more = len(failed) - MERGED_METADATA_PARTS
    return CheckOutcome(
        name,
        not failed,
        first.description
        + (f" (failed for {labels}{f' and {more} more' if more > 0 else ''})" if failed else ""),
        metadata,
        first.warn_only,
    )


def merge_by_name(parts: list[tuple[str, list[CheckOutcome]]]) -> list[CheckOutcome]:
    """``merge_outcomes`` per check name over parts that each ran the same list of checks."""
    names = [outcome.name for outcome in parts[0][1]]
    return [
        merge_outcomes(name, [(label, outcomes[i]) for label, outcomes in parts])
        for i, name in enumerate(names)
    ]


# ---------------------------------------------------------------------------------------------
# Order books and trades

DEPTH_SNAPSHOT_CHECKS = (
    "unique_ts",
    "monotonic_ts",
    "no_crossed_books",
    "inside_partition_day",
    "snapshot_cadence",
)
DEPTH_UPDATE_CHECKS = (
    "unique_final_update_id",
    "monotonic_final_update_id",
    "sequence_integrity",
    "inside_partition_day",
)
AGG_TRADE_CHECKS = (
    "unique_agg_trade_id",
    "monotonic_agg_trade_id",
    "trade_ids_contiguous",
    "positive_price_qty",
    "inside_partition_day",
)


def depth_snapshot_checks(
    frame: pl.DataFrame, day: dt.date, cadence_s: float
) -> list[CheckOutcome]:
    return [
        unique(frame, "ts"),
        strictly_increasing(frame, "ts"),
        no_crossed_books(frame),
        inside_partition_day(frame, day, "ts"),
        snapshot_cadence(frame, day, cadence_s),
    ]


def agg_trade_checks(frame: pl.DataFrame, day: dt.date) -> list[CheckOutcome]:
    return [
        unique(frame, "agg_trade_id"),
        strictly_increasing(frame, "agg_trade_id"),
        trade_ids_contiguous(frame),
        positive_price_qty(frame),
        inside_partition_day(frame, day, "ts"),
    ]


def no_crossed_books(frame: pl.DataFrame) -> CheckOutcome:
    """Best bid below best ask, and both ladders ordered best first, on every snapshot."""
    bad = frame.filter(
        (pl.col("bid_prices").list.first() >= pl.col("ask_prices").list.first())
        | (pl.col("bid_prices").list.diff().list.eval(pl.element() >= 0).list.any())
        | (pl.col("ask_prices").list.diff().list.eval(pl.element() <= 0).list.any())
    )
    return CheckOutcome(
        "no_crossed_books",
        bad.is_empty(),
        "best bid < best ask; bids strictly falling and asks strictly rising from the touch",
        {"bad_snapshots": bad.height, **first_values(bad, "ts")},
    )


def snapshot_cadence(frame: pl.DataFrame, day: dt.date, cadence_s: float) -> CheckOutcome:
    """Warns with the holes in the sampling grid (a stream outage or a resync leaves some)."""
    expected = int(dt.timedelta(days=1) / dt.timedelta(seconds=cadence_s))
    steps = frame["ts"].diff().dt.total_microseconds().drop_nulls() / 1e6
    holes = steps.filter(steps > cadence_s * 1.5)
    return CheckOutcome(
        "snapshot_cadence",
        frame.height == expected,
        f"one snapshot every {cadence_s:g} s of the day ({expected} rows)",
        {
            "snapshots": frame.height,
            "expected": expected,
            "holes": holes.len(),
            "longest_hole_s": float(holes.max()) if holes.len() else 0.0,
        },
        warn_only=True,
    )


def trade_ids_contiguous(frame: pl.DataFrame) -> CheckOutcome:
    """Warns with the gaps in agg_trade_id (trades missing from the partition)."""
    steps = frame["agg_trade_id"].diff().drop_nulls()
    gaps = steps.filter(steps > 1)
    return CheckOutcome(
        "trade_ids_contiguous",
        gaps.is_empty(),
        "agg_trade_id increases by exactly 1 from row to row",
        {"gaps": gaps.len(), "missing_ids": int((gaps - 1).sum()) if gaps.len() else 0},
        warn_only=True,
    )


def positive_price_qty(frame: pl.DataFrame) -> CheckOutcome:
    bad = frame.filter(~((pl.col("price") > 0) & (pl.col("qty") > 0)))
    return CheckOutcome(
        "positive_price_qty",
        bad.is_empty(),
        "price > 0 and qty > 0 on every trade",
        {"bad_rows": bad.height, **first_values(bad, "agg_trade_id")},
    )


def depth_update_checks(frame: pl.DataFrame, day: dt.date, market: str) -> list[CheckOutcome]:
    return [
        unique(frame, "final_update_id"),
        strictly_increasing(frame, "final_update_id"),
        sequence_integrity(frame, market),
        inside_partition_day(frame, day, "event_time"),
    ]


def sequence_integrity(frame: pl.DataFrame, market: str) -> CheckOutcome:
    """Warns with each break in the event chain: ``U == previous u + 1`` (futures:
    ``pu == previous u``). A break is where the book was resynchronised from a new snapshot."""
    previous_u = pl.col("final_update_id").shift(1)
    if market == "futures_um":
        continues = pl.col("prev_final_update_id") == previous_u
    else:
        continues = pl.col("first_update_id") == previous_u + 1
    breaks = frame.filter(previous_u.is_not_null() & ~continues)
    return CheckOutcome(
        "sequence_integrity",
        breaks.is_empty(),
        "every event continues the previous one (a break marks a resync from a new snapshot)",
        {"breaks": breaks.height, **first_values(breaks, "final_update_id")},
        warn_only=True,
    )


def files_intact(report: IntegrityReport) -> CheckOutcome:
    """Fails naming every lake file whose bytes differ from the hash recorded at write time;
    files written before hashes were recorded are counted, not failed."""
    return CheckOutcome(
        "lake_files_intact",
        report.ok,
        "every lake file matches the content hash recorded when it was written",
        {
            "intact": report.intact,
            "damaged": [str(path) for path in report.damaged],
            "unverified_written_before_hashes": len(report.unverified),
        },
    )
