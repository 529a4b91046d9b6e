"""Asset-check functions on frames with known defects."""

from __future__ import annotations

import datetime as dt

import polars as pl

from dagster_project.core.checks import (
    gap_report,
    kline_checks,
    merge_outcomes,
    no_crossed_books,
    sequence_integrity,
    snapshot_cadence,
    trade_ids_contiguous,
)
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


def book(ts, bids, asks) -> dict:
    return {"ts": ts, "bid_prices": bids, "ask_prices": asks}


def test_crossed_or_misordered_books_are_flagged():
    t0 = dt.datetime(2024, 3, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        [
            book(t0, [100.0, 99.0], [101.0, 102.0]),
            book(t0 + dt.timedelta(seconds=1), [101.0, 99.0], [101.0, 102.0]),  # crossed
            book(t0 + dt.timedelta(seconds=2), [100.0, 100.5], [101.0, 102.0]),  # bids misordered
            book(t0 + dt.timedelta(seconds=3), [100.0], [101.0, 100.9]),  # asks misordered
        ]
    )
    check = no_crossed_books(frame)
    assert not check.passed and check.metadata["bad_snapshots"] == 3
    assert no_crossed_books(frame.head(1)).passed


def test_snapshot_cadence_reports_holes():
    t0 = dt.datetime(2024, 3, 1, tzinfo=UTC)
    seconds = [s for s in range(86_400) if not 100 <= s < 160]
    frame = pl.DataFrame({"ts": [t0 + dt.timedelta(seconds=s) for s in seconds]})
    check = snapshot_cadence(frame, DAY, 1.0)
    assert (check.passed, check.warn_only) == (False, True)
    assert check.metadata["holes"] == 1 and check.metadata["longest_hole_s"] == 61.0
    full = pl.DataFrame({"ts": [t0 + dt.timedelta(seconds=s) for s in range(86_400)]})
    assert snapshot_cadence(full, DAY, 1.0).passed


def test_sequence_integrity_counts_breaks_by_market_rule():
    spot = pl.DataFrame(
        {
            "first_update_id": [1, 4, 9, 20],
            "final_update_id": [3, 8, 12, 25],
            "prev_final_update_id": [None, None, None, None],
        }
    )
    check = sequence_integrity(spot, "spot")
    assert check.metadata["breaks"] == 1 and check.metadata["first_offending_final_update_ids"] == [
        25
    ]
    futures = spot.with_columns(pl.Series("prev_final_update_id", [0, 3, 8, 12]))
    assert sequence_integrity(futures, "futures_um").passed


def test_trade_id_gaps_are_counted():
    frame = pl.DataFrame({"agg_trade_id": [1, 2, 3, 7, 8, 10]})
    check = trade_ids_contiguous(frame)
    assert (check.passed, check.metadata["gaps"], check.metadata["missing_ids"]) == (False, 2, 4)
