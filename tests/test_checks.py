"""Asset-check functions on frames with known defects."""

from __future__ import annotations

import datetime as dt

import polars as pl

from dagster_project.checks import gap_report, kline_checks, merge_outcomes
from tests.helpers import UTC, minute_klines

DAY = dt.date(2024, 3, 1)
NOW = dt.datetime(2024, 3, 5, tzinfo=UTC)


def outcomes(frame: pl.DataFrame, day=DAY, now=NOW) -> dict[str, bool]:
    return {o.name: o.passed for o in kline_checks(frame, day, now)}


def test_clean_klines_pass_every_check():
    assert all(outcomes(minute_klines(DAY, list(range(60)))).values())


def test_duplicated_bar_fails_uniqueness_and_monotonicity():
    frame = pl.concat([minute_klines(DAY, [0, 1, 2]), minute_klines(DAY, [2])])
    result = outcomes(frame)
    assert not result["unique_open_time"] and not result["monotonic_open_time"]
    assert result["ohlc_consistent"]


def test_out_of_order_bars_fail_monotonicity_only():
    result = outcomes(minute_klines(DAY, [0, 2, 1]))
    assert [name for name, ok in result.items() if not ok] == ["monotonic_open_time"]


def test_high_below_close_fails_ohlc_and_names_the_bar():
    frame = minute_klines(DAY, [0, 1, 2]).with_columns(
        pl.when(pl.col("open_time") == dt.datetime(2024, 3, 1, 0, 1, tzinfo=UTC))
        .then(pl.col("close") - 5)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    check = next(o for o in kline_checks(frame, DAY, NOW) if o.name == "ohlc_consistent")
    assert not check.passed
    assert check.metadata["bad_rows"] == 1
    assert check.metadata["first_offending_open_times"] == ["2024-03-01T00:01:00+00:00"]


def test_future_bars_and_bars_outside_the_day_are_flagged():
    frame = minute_klines(DAY, [0, 1, 1500])  # minute 1500 is on the next day
    result = outcomes(frame, now=dt.datetime(2024, 3, 1, 12, tzinfo=UTC))
    assert not result["no_future_timestamps"] and not result["inside_partition_day"]


def test_gap_report_warns_and_counts():
    gaps = pl.DataFrame({"gap_start": [1, 2], "gap_end": [2, 5], "missing_bars": [1, 3]})
    report = gap_report(gaps, "1m")
    assert (report.passed, report.warn_only) == (False, True)
    assert report.metadata == {"gaps": 2, "missing_bars": 4, "largest_gap_bars": 3}
    assert gap_report(gaps.clear(), "1m").passed


def test_merged_outcome_fails_if_any_interval_fails():
    good = kline_checks(minute_klines(DAY, [0, 1]), DAY, NOW)[0]
    bad = kline_checks(pl.concat([minute_klines(DAY, [0]), minute_klines(DAY, [0])]), DAY, NOW)[0]
    merged = merge_outcomes("unique_open_time", [("1m", good), ("5m", bad)])
    assert not merged.passed and "failed for 5m" in merged.description
    assert merged.metadata["5m.duplicate_rows"] == 2
