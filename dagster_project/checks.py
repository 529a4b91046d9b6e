"""Data-quality checks on klines partitions: plain functions over polars frames.

Assets turn each ``CheckOutcome`` into a Dagster ``AssetCheckResult``; tests call them directly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from dagster_project.klines import to_utc


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, object] = field(default_factory=dict)
    warn_only: bool = False


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
        unique_open_time(frame),
        ohlc_consistent(frame),
        monotonic_open_time(frame),
        no_future_timestamps(frame, now or dt.datetime.now(dt.UTC)),
        inside_partition_day(frame, day),
    ]


def unique_open_time(frame: pl.DataFrame) -> CheckOutcome:
    duplicated = frame.filter(pl.col("open_time").is_duplicated())
    return CheckOutcome(
        "unique_open_time",
        duplicated.is_empty(),
        "each open_time appears once (the grain of klines)",
        {"duplicate_rows": duplicated.height, **first_times(duplicated)},
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
        {"bad_rows": bad.height, **first_times(bad)},
    )


def monotonic_open_time(frame: pl.DataFrame) -> CheckOutcome:
    steps = frame.select(pl.col("open_time").diff().dt.total_microseconds().drop_nulls())
    backwards = int((steps.to_series() <= 0).sum()) if steps.height else 0
    return CheckOutcome(
        "monotonic_open_time",
        backwards == 0,
        "open_time strictly increases from row to row",
        {"non_increasing_steps": backwards},
    )


def no_future_timestamps(frame: pl.DataFrame, now: dt.datetime) -> CheckOutcome:
    future = frame.filter(pl.col("open_time") > now)
    return CheckOutcome(
        "no_future_timestamps",
        future.is_empty(),
        "no bar opens after the time of the check",
        {"future_rows": future.height, "checked_at": now.isoformat(), **first_times(future)},
    )


def inside_partition_day(frame: pl.DataFrame, day: dt.date) -> CheckOutcome:
    start = to_utc(day)
    outside = frame.filter(
        ~pl.col("open_time").is_between(start, start + dt.timedelta(days=1), closed="left")
    )
    return CheckOutcome(
        "inside_partition_day",
        outside.is_empty(),
        f"every open_time falls on the partition's UTC day {day}",
        {"outside_rows": outside.height, **first_times(outside)},
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


def first_times(rows: pl.DataFrame, limit: int = 3) -> dict[str, object]:
    if rows.is_empty() or "open_time" not in rows.columns:
        return {}
    return {"first_offending_open_times": [t.isoformat() for t in rows["open_time"][:limit]]}


def merge_outcomes(name: str, outcomes: list[tuple[str, CheckOutcome]]) -> CheckOutcome:
    """One outcome for a check run on several parts (intervals) of one partition."""
    failed = [label for label, outcome in outcomes if not outcome.passed]
    metadata = {
        f"{label}.{k}": v for label, outcome in outcomes for k, v in outcome.metadata.items()
    }
    first = outcomes[0][1]
    return CheckOutcome(
        name,
        not failed,
        first.description + (f" (failed for {', '.join(failed)})" if failed else ""),
        metadata,
        first.warn_only,
    )
