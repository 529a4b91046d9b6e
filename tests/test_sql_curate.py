"""sql/curate/*.sql on small known rows, and the curate step that runs them."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import operator

import polars as pl
import pytest

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import TimeRange, conform
from dagster_project.core.lake import Lake, connect
from dagster_project.core.sql import parameters_of, run_sql
from dagster_project.ingest.freqtrade import read_freqtrade_file
from dagster_project.ingest.landing import land_klines, with_ingested_at
from dagster_project.ingest.sources import SourceSettings, make_source
from dagster_project.transform.curate import curate_day, derivable_intervals, expected_grid
from tests.helpers import UTC, minute_klines

DAY = dt.date(2024, 3, 1)


def t(hour: int, minute: int) -> dt.datetime:
    return dt.datetime(2024, 3, 1, hour, minute, tzinfo=UTC)


def raw_file(tmp_path, frame: pl.DataFrame) -> str:
    """``frame`` written as a raw partition as is: landing would refuse the duplicates some tests
    feed (the query still deduplicates, for files landed before that refusal)."""
    keys = {"symbol": "BTCUSDT", "interval": "1m", "date": DAY}
    rows = with_ingested_at(conform(frame), t(0, 0))
    return str(Lake(tmp_path).write_partition("raw", "klines", keys, rows))


def test_parameters_are_read_from_the_query_text():
    sql = "-- $not_this\nselect $a, '$nor_this', $b_2 from t where x = $a"
    assert parameters_of(sql) == {"a", "b_2"}


def test_run_sql_names_missing_and_unexpected_parameters():
    with pytest.raises(
        InvalidRequestError, match=r"missing \['bar_us', 'base_us'\], unexpected \['x'\]"
    ):
        run_sql(connect(), "curate/klines", {"raw_files": [], "x": 1})


def test_five_minute_bars_resample_one_minute_bars_exactly(tmp_path):
    # minutes 0-4 complete; 5-9 lacks minute 7; 10-14 absent entirely
    frame = minute_klines(DAY, [0, 1, 2, 3, 4, 5, 6, 8, 9])
    out = run_sql(
        connect(),
        "curate/klines",
        {"raw_files": [raw_file(tmp_path, frame)], "base_us": 60_000_000, "bar_us": 300_000_000},
    ).pl()
    assert out["open_time"].to_list() == [t(0, 0), t(0, 5)]
    first, second = out.row(0, named=True), out.row(1, named=True)
    # minute m has open 100+m, high 102+m, low 98+m, close 101+m, volume 10, trades 5
    assert (first["open"], first["high"], first["low"], first["close"]) == (100, 106, 98, 105)
    assert (first["volume"], first["trades"], first["base_bars"], first["is_complete"]) == (
        50,
        25,
        5,
        True,
    )
    assert first["close_time"] == t(0, 4) + dt.timedelta(seconds=59, milliseconds=999)
    assert (second["open"], second["high"], second["low"], second["close"]) == (105, 111, 103, 110)
    assert (second["base_bars"], second["is_complete"]) == (4, False)
    assert first["quote_volume"] == pytest.approx(sum(10 * (100 + m) for m in range(5)))


def test_duplicate_bars_keep_the_later_row(tmp_path):
    frame = pl.concat([minute_klines(DAY, [0, 1]), minute_klines(DAY, [1], price=500.0)])
    out = run_sql(
        connect(),
        "curate/klines",
        {"raw_files": [raw_file(tmp_path, frame)], "base_us": 60_000_000, "bar_us": 60_000_000},
    ).pl()
    assert out["open"].to_list() == [100.0, 501.0]


def test_missing_source_fields_stay_null_after_resampling(tmp_path):
    frame = minute_klines(DAY, [0, 1, 2]).with_columns(
        pl.lit(None, pl.Float64).alias("quote_volume"), pl.lit(None, pl.Int64).alias("trades")
    )
    out = run_sql(
        connect(),
        "curate/klines",
        {"raw_files": [raw_file(tmp_path, frame)], "base_us": 60_000_000, "bar_us": 900_000_000},
    ).pl()
    assert out["quote_volume"].to_list() == [None]
    assert out["trades"].to_list() == [None]


def test_gaps_are_runs_of_missing_bars_with_exclusive_end(tmp_path):
    minutes = [m for m in range(1440) if m not in (0, 5, 6, 7, 1439)]
    lake = Lake(tmp_path)
    land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, minutes))
    curated = {c.interval: c for c in curate_day(lake, "BTCUSDT", DAY)}
    gaps = lake.read_partition(
        "curated", "kline_gaps", {"symbol": "BTCUSDT", "interval": "1m", "date": DAY}
    )
    assert gaps.rows() == [
        (t(0, 0), t(0, 1), 1),
        (t(0, 5), t(0, 8), 3),
        (t(23, 59), dt.datetime(2024, 3, 2, tzinfo=UTC), 1),
    ]
    assert (curated["1m"].gaps, curated["1m"].missing_bars) == (3, 5)
    assert (curated["5m"].rows, curated["5m"].gaps, curated["5m"].incomplete_bars) == (288, 0, 3)
    assert (curated["1h"].rows, curated["1h"].incomplete_bars) == (24, 2)


def test_an_empty_day_is_one_whole_day_gap(tmp_path):
    lake = Lake(tmp_path)
    land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, []), days=[DAY])
    curated = {c.interval: c for c in curate_day(lake, "BTCUSDT", DAY)}
    assert (curated["1m"].rows, curated["1m"].missing_bars) == (0, 1440)
    assert (curated["1h"].gaps, curated["1h"].missing_bars) == (1, 24)


def test_curated_intervals_follow_the_finest_raw_interval(tmp_path):
    assert derivable_intervals("1m") == ["1m", "5m", "15m", "1h"]
    assert derivable_intervals("15m") == ["15m", "1h"]
    assert derivable_intervals("1h") == ["1h"]
    assert derivable_intervals("1s") == ["1s", "1m", "5m", "15m", "1h"]
    with pytest.raises(InvalidRequestError, match="no raw klines landed for BTCUSDT on 2024-03-01"):
        curate_day(Lake(tmp_path), "BTCUSDT", DAY)


def test_expected_grid_of_today_stops_at_the_last_closed_bar():
    now = t(10, 7) + dt.timedelta(seconds=30)
    assert expected_grid(DAY, "1m", now) == (t(0, 0), t(10, 7))
    assert expected_grid(DAY, "1h", now) == (t(0, 0), t(10, 0))
    assert expected_grid(DAY, "1h", t(0, 0) + dt.timedelta(days=3))[1] == dt.datetime(
        2024, 3, 2, tzinfo=UTC
    )


SUMMED = ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")


def curate_with_threads(lake: Lake, symbol: str, day: dt.date) -> dict[str, bytes]:
    """Curate one day on a connection with 8 threads; the hash of each curated klines file."""
    con = connect()
    con.execute("set threads = 8")
    try:
        intervals = [c.interval for c in curate_day(lake, symbol, day, con=con)]
    finally:
        con.close()
    files = {
        i: lake.partition_file("curated", "klines", {"symbol": symbol, "interval": i, "date": day})
        for i in intervals
    }
    return {i: hashlib.sha256(path.read_bytes()).hexdigest() for i, path in files.items()}


def in_time_order_sums(raw: pl.DataFrame, interval: str) -> pl.DataFrame:
    """Each bar's sums added one base bar after another in open_time order (NULL if all are)."""
    bars = (
        raw.sort("open_time")
        .with_columns(pl.col("open_time").dt.truncate(interval))
        .group_by("open_time", maintain_order=True)
        .agg(pl.col(SUMMED))
    )
    return bars.with_columns(
        pl.col(c).map_elements(sum_in_order, return_dtype=pl.Float64) for c in SUMMED
    )


def sum_in_order(values: pl.Series) -> float | None:
    return None if values.null_count() == len(values) else functools.reduce(operator.add, values)


def assert_curation_is_deterministic(lake: Lake, symbol: str, day: dt.date) -> None:
    runs = [curate_with_threads(lake, symbol, day) for _ in range(6)]
    for interval in runs[0]:
        assert len({run[interval] for run in runs}) == 1, f"{interval} files differ between runs"
    raw = lake.read_partition("raw", "klines", {"symbol": symbol, "interval": "1m", "date": day})
    for interval in ("5m", "15m", "1h"):
        out = lake.read_partition(
            "curated", "klines", {"symbol": symbol, "interval": interval, "date": day}
        )
        expected = in_time_order_sums(raw, interval)
        assert out.select("open_time", *SUMMED).equals(expected), interval


def test_resampling_a_simulated_day_is_identical_across_threaded_reruns(tmp_path):
    lake = Lake(tmp_path)
    source = make_source(SourceSettings(), lake.root)
    land_klines(lake, "BTCUSDT", "1m", source.fetch_klines("BTCUSDT", "1m", TimeRange.for_day(DAY)))
    assert_curation_is_deterministic(lake, "BTCUSDT", DAY)


def test_resampling_a_real_day_is_identical_across_threaded_reruns(tmp_path, shared_binance):
    day = dt.date(2025, 6, 10)
    frame = read_freqtrade_file(shared_binance / "spot_freqtrade" / "BTC_USDT-1m.feather")
    lake = Lake(tmp_path)
    landed = land_klines(lake, "BTCUSDT", "1m", frame.filter(pl.col("open_time").dt.date() == day))
    assert [p.rows for p in landed] == [1440]  # a whole day
    assert_curation_is_deterministic(lake, "BTCUSDT", day)
