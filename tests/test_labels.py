"""sql/labels/labels.sql and sql/windows/windows.sql on small hand-made klines; the volatility
warm-up; and, on simulated and real lakes, days built alone against the whole series (exact and
complete)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import shutil
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from dagster_project.core.klines import CURATED_INTERVALS, TimeRange, to_utc
from dagster_project.core.lake import Lake, connect
from dagster_project.core.sql import run_sql
from dagster_project.ingest.freqtrade import read_freqtrade_file
from dagster_project.ingest.landing import land_klines
from dagster_project.ingest.simulator import simulate_klines
from dagster_project.transform.curate import curate_day
from dagster_project.transform.dataset_days import (
    build_dataset_day,
    label_history_days,
    label_lookahead_days,
    window_history_days,
)
from dagster_project.transform.indicators import converge_bars
from dagster_project.transform.labels import (
    LABEL_SPECS,
    LabelParams,
    build_labels,
    check_known_at,
    ewm_volatility,
    history_bars,
    label_names,
    lookahead_bars,
    volatility_warmup,
)
from dagster_project.transform.windows import DATASETS, build_windows, window_history_bars
from ml.window_data import WindowPartition, load_windows

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, tzinfo=UTC)
BAR_US = 60_000_000
FAR = T0 + dt.timedelta(days=1)


def m(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def write_klines(tmp_path, bars, name="k.parquet", incomplete=()) -> str:
    """bars: {minute: (open, high, low, close)}; minutes not given are missing (a gap)."""
    minutes = sorted(bars)
    frame = pl.DataFrame(
        {
            "open_time": [m(i) for i in minutes],
            "open": [float(bars[i][0]) for i in minutes],
            "high": [float(bars[i][1]) for i in minutes],
            "low": [float(bars[i][2]) for i in minutes],
            "close": [float(bars[i][3]) for i in minutes],
            "volume": [1.0] * len(minutes),
            "close_time": [m(i + 1) - dt.timedelta(milliseconds=1) for i in minutes],
            "is_complete": [i not in incomplete for i in minutes],
        }
    ).with_columns(pl.col("open_time", "close_time").dt.cast_time_unit("us"))
    path = tmp_path / name
    frame.write_parquet(path)
    return str(path)


def from_closes(closes: dict[int, float]) -> dict[int, tuple]:
    """Bars whose open is close - 0.5 and whose range is +-0.1 around open/close."""
    return {i: (c - 0.5, c + 0.1, c - 0.6, c) for i, c in closes.items()}


def labels_of(frame: pl.DataFrame, label: str) -> dict[dt.datetime, tuple[float, dt.datetime]]:
    rows = frame.filter(pl.col("label") == label)
    return {r["decision_time"]: (r["value"], r["known_at"]) for r in rows.iter_rows(named=True)}


def run_labels(path, vol_times=(), vol_values=(), tb_h=(3,), tb_k=1.0, start=T0, end=FAR):
    params = {
        "kline_files": [path],
        "bar_us": BAR_US,
        "start": start,
        "end": end,
        "next_up_h": [1, 5, 15],
        "window_up_w": [5, 15, 30],
        "tb_h": list(tb_h),
        "tb_k": tb_k,
        "vol_open_times": list(vol_times),
        "vol_values": list(vol_values),
    }
    return run_sql(connect(), "labels/labels", params).pl()


CLOSES = {0: 10, 1: 11, 2: 10, 3: 12, 4: 12, 5: 9, 6: 13}


def test_next_up_and_fwd_logret_exact_with_known_at_and_end_of_data(tmp_path):
    out = run_labels(write_klines(tmp_path, from_closes(CLOSES)))
    # decision_time of candle i is its close, m(i + 1); known_at is the close of candle i + h
    assert labels_of(out, "next_up_1") == {
        m(1): (1.0, m(2)),
        m(2): (0.0, m(3)),
        m(3): (1.0, m(4)),
        m(4): (0.0, m(5)),  # 12 > 12 is false
        m(5): (0.0, m(6)),
        m(6): (1.0, m(7)),
    }  # candle 6 has no next candle: absent, not guessed
    assert labels_of(out, "next_up_5") == {m(1): (0.0, m(6)), m(2): (1.0, m(7))}
    assert labels_of(out, "next_up_15") == {}
    logret = labels_of(out, "fwd_logret_5")
    assert logret[m(1)] == (pytest.approx(math.log(9 / 10), rel=1e-12), m(6))
    assert logret[m(2)] == (pytest.approx(math.log(13 / 11), rel=1e-12), m(7))
    assert out.filter(pl.col("value").is_null()).height == 0


def test_a_horizon_that_crosses_a_gap_is_absent(tmp_path):
    bars = from_closes({0: 10, 1: 11, 2: 12, 4: 13, 5: 14, 6: 15, 7: 16, 8: 17, 9: 18})
    out = run_labels(write_klines(tmp_path, bars))
    up1 = labels_of(out, "next_up_1")
    assert m(3) not in up1  # candle 2 -> the next row is candle 4: not one bar later
    assert set(up1) == {m(1), m(2), m(5), m(6), m(7), m(8), m(9)}
    assert set(labels_of(out, "next_up_5")) == {m(5)}  # only 4 -> 9 is unbroken
    assert set(labels_of(out, "window_up_5")) == {m(5)}


def test_an_incomplete_bar_is_treated_as_missing(tmp_path):
    path = write_klines(tmp_path, from_closes(CLOSES), incomplete={3})
    up1 = labels_of(run_labels(path), "next_up_1")
    assert set(up1) == {m(1), m(2), m(5), m(6)}


def test_window_up_compares_close_t_plus_w_with_open_t_plus_1(tmp_path):
    # open_{1} = 10.5; close_5 = 10.6 > 10.5 -> 1; open_2 = 11, close_6 = 10.9 -> 0
    bars = {i: (10.0, 12.0, 9.0, 10.0) for i in range(7)}
    bars[1] = (10.5, 12.0, 9.0, 10.0)
    bars[2] = (11.0, 12.0, 9.0, 10.0)
    bars[5] = (10.0, 12.0, 9.0, 10.6)
    bars[6] = (10.0, 12.0, 9.0, 10.9)
    out = run_labels(write_klines(tmp_path, bars))
    assert labels_of(out, "window_up_5") == {m(1): (1.0, m(6)), m(2): (0.0, m(7))}
    assert labels_of(out, "window_up_15") == {}


def tb_case(tmp_path, future: list[tuple[float, float]], vol=0.01, k=1.0, h=3):
    """Candle 0 closes at 100; future bars (high, low); one volatility, at candle 0."""
    bars = {0: (100.0, 100.0, 100.0, 100.0)}
    for i, (high, low) in enumerate(future, start=1):
        bars[i] = (100.0, high, low, 100.0)
    out = run_labels(write_klines(tmp_path, bars), [m(0)], [vol], tb_h=[h], tb_k=k)
    return labels_of(out, f"tb_{h}")


# barriers at 100 * exp(+-0.01): 101.005 and 99.005
@pytest.mark.parametrize(
    ("future", "expected"),
    [
        ([(100.5, 99.5), (101.1, 99.5), (100.5, 98.0)], (1.0, m(3))),  # upper first, bar 2
        ([(100.5, 99.0), (101.1, 99.5), (100.5, 99.5)], (-1.0, m(2))),  # lower first, bar 1
        ([(100.5, 99.5), (101.0, 99.1), (100.9, 99.01)], (0.0, m(4))),  # vertical at bar 3
        ([(101.2, 98.0), (100.5, 99.5), (100.5, 99.5)], (-1.0, m(2))),  # both in one bar
    ],
    ids=["upper", "lower", "vertical", "both-in-one-bar"],
)
def test_triple_barrier(tmp_path, future, expected):
    assert tb_case(tmp_path, future) == {m(1): expected}


def test_triple_barrier_needs_the_whole_vertical_span_and_a_volatility(tmp_path):
    # upper touched at bar 1 but bar 3 is beyond the data: absent, like every horizon label
    assert tb_case(tmp_path, [(102.0, 99.5), (100.5, 99.5)]) == {}
    bars = {i: (100.0, 100.5, 99.5, 100.0) for i in range(5)}
    assert labels_of(run_labels(write_klines(tmp_path, bars)), "tb_3") == {}  # no volatility


def test_leaky_controls_are_flagged_and_known_at_decision_time(tmp_path):
    bars = {i: (10.0, 12.0, 9.0, 10.0 + (i % 2)) for i in range(8)}
    bars[0] = (9.0, 12.0, 8.0, 10.0)
    out = run_labels(write_klines(tmp_path, bars))
    last = labels_of(out, "leaky_last_candle_up")
    assert last == {m(i + 1): (float(i % 2 == 1 or i == 0), m(i + 1)) for i in range(8)}
    # close_t > open_{t-4}: candle 4 closes 10 vs open_0 9 -> 1; candle 5: 11 > 10 -> 1
    assert labels_of(out, "leaky_window_up_5") == {
        m(5): (1.0, m(5)),
        m(6): (1.0, m(6)),
        m(7): (0.0, m(7)),
        m(8): (1.0, m(8)),
    }
    leaky = out.filter(pl.col("is_leaky"))["label"].unique().sort().to_list()
    assert leaky == ["leaky_last_candle_up", "leaky_window_up_5"]
    assert check_known_at(out).is_empty()


def test_check_known_at_catches_a_label_known_too_early():
    frame = pl.DataFrame(
        {
            "decision_time": [m(1), m(1), m(1)],
            "label": ["next_up_1", "leaky_last_candle_up", "next_up_5"],
            "value": [1.0, 1.0, 0.0],
            "known_at": [m(1), m(1), m(6)],
            "is_leaky": [False, True, False],
        }
    )
    assert check_known_at(frame)["label"].to_list() == ["next_up_1"]


def test_start_and_end_keep_decision_times_in_a_half_open_range(tmp_path):
    out = run_labels(write_klines(tmp_path, from_closes(CLOSES)), start=m(2), end=m(4))
    assert sorted(out["decision_time"].unique().to_list()) == [m(2), m(3)]


def loop_volatility(minutes: list[int], closes: list[float], span: int, seed_returns: int):
    """The volatility by hand: one-bar returns only, the EWM seeded with the mean of the first
    ``seed_returns`` squared returns, given once the seed weighs below 1e-12."""
    alpha = 2 / (span + 1)
    bars = zip(minutes, closes, strict=True)
    squared = [
        (minute, math.log(close / prev) ** 2)
        for (prev_minute, prev), (minute, close) in itertools.pairwise(bars)
        if minute - prev_minute == 1
    ]
    values, mean, residual = {}, None, 1.0
    for index, (minute, r2) in enumerate(squared):
        if index == seed_returns - 1:
            mean = sum(s for _, s in squared[:seed_returns]) / seed_returns
        elif mean is not None:
            mean, residual = (1 - alpha) * mean + alpha * r2, residual * (1 - alpha)
        if mean is not None and residual < 1e-12:
            values[m(minute)] = math.sqrt(mean)
    return values


def volatility_of(minutes: list[int], closes: list[float], params: LabelParams) -> dict:
    frame = pl.DataFrame({"open_time": [m(i) for i in minutes], "close": closes})
    vol = ewm_volatility(
        frame.with_columns(pl.col("open_time").dt.cast_time_unit("us")), BAR_US, params
    )
    return dict(zip(vol["open_time"].to_list(), vol["vol"].to_list(), strict=True))


def test_ewm_volatility_matches_the_recursion_and_skips_gap_returns():
    rng = np.random.default_rng(3)
    minutes = [i for i in range(80) if i not in (30, 31)]  # the 29 -> 32 return is skipped
    closes = list(100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(minutes)))))
    params = LabelParams(vol_span=3, vol_min_periods=4)
    # alpha 0.5 forgets its seed below 1e-12 after 40 more returns: the 44th return is the first
    assert volatility_warmup(params) == 43
    expected = loop_volatility(minutes, closes, span=3, seed_returns=4)
    got = volatility_of(minutes, closes, params)
    assert got.keys() == expected.keys()
    assert min(got) == m(47)  # the 44th one-bar return: minutes 1..29, then 33..47
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12)


def test_ewm_volatility_does_not_depend_on_where_the_input_begins():
    rng = np.random.default_rng(5)
    closes = list(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200))))
    params = LabelParams(vol_span=5, vol_min_periods=3)
    whole = volatility_of(list(range(200)), closes, params)
    later = volatility_of(list(range(37, 200)), closes[37:], params)
    assert later.keys() <= whole.keys() and len(later) > 50
    for key, value in later.items():
        assert value == pytest.approx(whole[key], rel=1e-11)


def test_history_and_lookahead_spans():
    # the tb volatility (848 returns of warm-up) dominates the history; the 30-bar horizons the
    # look-ahead: the day's last decision reads candle t + 30, opening 28 bars past midnight
    assert volatility_warmup() == 20 - 1 + converge_bars(2 / 61) == 848
    assert history_bars() == 850
    assert lookahead_bars() == 29
    assert window_history_bars() == 30
    spans = {
        i: (label_history_days(i), label_lookahead_days(i), window_history_days(i))
        for i in CURATED_INTERVALS
    }
    assert spans == {"1m": (1, 1, 1), "5m": (3, 1, 1), "15m": (9, 1, 1), "1h": (36, 2, 2)}


def test_build_labels_end_to_end(tmp_path):
    rng = np.random.default_rng(7)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 240)))
    bars = {i: (c, c * 1.001, c * 0.999, c) for i, c in enumerate(closes)}
    path = write_klines(tmp_path, bars)
    params = LabelParams(tb_k=1.0, vol_span=10, vol_min_periods=5)
    out = build_labels(connect(), [path], "1m", m(180), m(200), params)
    assert set(out["label"]) == set(label_names())
    assert out.filter(pl.col("label") == "next_up_15").height == 20
    assert check_known_at(out).is_empty()
    assert out.select(pl.struct("decision_time", "label").is_unique().all()).item()
    assert [s.family for s in LABEL_SPECS if s.is_leaky] == [
        "leaky_last_candle_up",
        "leaky_window_up",
    ]
    # the volatility's first value is at return 142 (candle 143, decision m(144))
    early = build_labels(connect(), [path], "1m", m(0), m(180), params)
    tb_times = early.filter(pl.col("label") == "tb_5")["decision_time"]
    assert tb_times.min() == m(144)


# --------------------------------------------------------------------------------------------
# windows


def windows_for(tmp_path, minutes, seed="candlelake", symbol="BTCUSDT"):
    bars = {i: (10.0, 11.0, 9.0, 10.0) for i in minutes}
    path = write_klines(tmp_path, bars, name=f"w-{len(minutes)}.parquet")
    return build_windows(connect(), [path], "1m", T0, FAR, symbol=symbol, seed=seed)


def test_window_counts_and_gap_exclusion(tmp_path):
    frame, excluded = windows_for(tmp_path, [i for i in range(40) if i != 20])
    counts = dict(
        frame.filter(pl.col("dataset") == "regular").group_by("window_size").len().iter_rows()
    )
    # w=5 ends at minutes 4..19 and 25..39; w=15: 14..19, 35..39; w=30: 29..39 cross the gap
    assert counts == {5: 31, 15: 11}
    # crossing the gap: w=5 ends at 21..24, w=15 at 21..34, w=30 at 30..39 (21..29 lack history)
    assert excluded == (4 + 14 + 10) * len(DATASETS)
    row = frame.filter((pl.col("dataset") == "regular") & (pl.col("window_size") == 5)).row(
        0, named=True
    )
    assert (row["decision_time"], row["start_time"]) == (m(5), m(0))
    fullimage = frame.filter(pl.col("dataset") == "fullimage")
    assert set(fullimage["label"]) == {"window_up_5", "window_up_15"}
    assert set(frame.filter(pl.col("dataset") == "regular")["label"]) == {"next_up_1"}


def test_contiguous_windows_have_no_exclusions(tmp_path):
    frame, excluded = windows_for(tmp_path, list(range(35)))
    assert excluded == 0
    sizes = frame.filter(pl.col("dataset") == "irregular_80").group_by("window_size").len()
    assert dict(sizes.iter_rows()) == {5: 31, 15: 21, 30: 6}


def test_irregular_masks_drop_the_right_share_reproducibly(tmp_path):
    frame, _ = windows_for(tmp_path, list(range(60)))
    again, _ = windows_for(tmp_path, list(range(60)))
    assert frame.equals(again)
    other_seed, _ = windows_for(tmp_path, list(range(60)), seed="other")
    assert not frame["dropped_mask"].equals(other_seed["dropped_mask"])
    expected = {
        ("regular", 5): 0, ("fullimage", 30): 0,
        ("irregular_60", 5): 3, ("irregular_60", 15): 9, ("irregular_60", 30): 18,
        ("irregular_80", 5): 4, ("irregular_80", 15): 12, ("irregular_80", 30): 24,
        ("irregular_95", 5): 4, ("irregular_95", 15): 14, ("irregular_95", 30): 29,
    }  # fmt: skip
    for (dataset, size), dropped in expected.items():
        rows = frame.filter((pl.col("dataset") == dataset) & (pl.col("window_size") == size))
        masks = rows["dropped_mask"].to_list()
        assert all(len(mask) == size and sum(mask) == dropped for mask in masks)
        assert not any(mask[-1] for mask in masks)  # the decision candle is always kept
        assert (rows["n_dropped"] == dropped).all()
        if 0 < dropped < size - 1:
            assert len({tuple(mask) for mask in masks}) > 1  # masks differ between windows


# --------------------------------------------------------------------------------------------
# partition exactness and completeness: days built alone (datasets.build_dataset_day, what the
# asset runs) against build_labels over the whole landed series

SYMBOL = "BTCUSDT"
KEY = ["interval", "decision_time", "label"]
HORIZON_30 = ["window_up_30", "tb_30"]


def land_and_curate(lake: Lake, con, klines: pl.DataFrame, interval: str) -> list[dt.date]:
    """Land contract klines as raw/klines and curate each day (every interval derivable)."""
    landed = land_klines(lake, SYMBOL, interval, klines)
    for part in landed:
        curate_day(lake, SYMBOL, part.date, con=con)
    return [part.date for part in landed]


def build_every_day(lake: Lake, con, days: list[dt.date]) -> None:
    for day in days:
        build_dataset_day(lake, con, SYMBOL, day)


def day_by_day(lake: Lake, interval: str) -> pl.DataFrame:
    """The union of the labels/labels day partitions of one interval."""
    parts = [
        lake.read_partition("labels", "labels", keys)
        for keys in lake.partitions("labels", "labels")
        if keys["interval"] == interval
    ]
    return pl.concat(parts).with_columns(interval=pl.lit(interval))


def whole_series(lake: Lake, con, interval: str, days: list[dt.date], built: list[dt.date]):
    """build_labels over every landed day of the interval at once, for the decisions of the
    days ``built``."""
    files = [
        str(lake.partition_file("curated", "klines", {**kline_keys(interval), "date": d}))
        for d in days
    ]
    start, end = to_utc(built[0]), to_utc(built[-1]) + dt.timedelta(days=1)
    labels = build_labels(con, files, interval, start, end)
    return labels.with_columns(interval=pl.lit(interval))


def kline_keys(interval: str) -> dict[str, str]:
    return {"symbol": SYMBOL, "interval": interval}


def at_hours(frame: pl.DataFrame, labels: list[str], hours: range) -> pl.DataFrame:
    return frame.filter(
        pl.col("label").is_in(labels) & pl.col("decision_time").dt.hour().is_in(list(hours))
    )


@dataclass
class BuiltLake:
    lake: Lake
    days: list[dt.date]  # landed
    built: list[dt.date]  # consecutive days whose labels/windows were built one day at a time
    intervals: tuple[str, ...]

    def compare(self, con) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(day by day, whole series) of the built days over every interval, sorted by KEY."""
        parts = pl.concat([day_by_day(self.lake, i) for i in self.intervals])
        whole = [whole_series(self.lake, con, i, self.days, self.built) for i in self.intervals]
        return parts.sort(KEY), pl.concat(whole).sort(KEY)


def built_lake(root, klines: pl.DataFrame, interval: str, first_built: int, intervals):
    """Land and curate ``klines``, then build each day from the ``first_built``-th on alone."""
    lake, con = Lake(root), connect()
    days = land_and_curate(lake, con, klines, interval)
    build_every_day(lake, con, days[first_built:])
    return BuiltLake(lake, days, days[first_built:], intervals)


SIM_START = dt.datetime(2024, 1, 1, tzinfo=UTC)


def simulated(interval: str, days: int) -> pl.DataFrame:
    span = TimeRange(SIM_START, SIM_START + dt.timedelta(days=days))
    return simulate_klines(SYMBOL, interval, span)


@pytest.fixture(scope="module")
def sim_1m(tmp_path_factory) -> BuiltLake:
    """3 simulated days of 1m (curated 1m, 5m, 15m, 1h). 1m reads 1 day of history: the
    series' first tb label closes its 850th candle, and day 2 reads less than the series."""
    root = tmp_path_factory.mktemp("sim_1m")
    return built_lake(root, simulated("1m", 3), "1m", 0, ("1m", "5m"))


@pytest.fixture(scope="module")
def sim_15m(tmp_path_factory) -> BuiltLake:
    """45 simulated days of 15m (curated 15m and 1h), days 34-44 built. 1h reads 36 days of
    history: its tb labels start on day 35, and from day 37 on a day reads less than the series."""
    root = tmp_path_factory.mktemp("sim_15m")
    return built_lake(root, simulated("15m", 45), "15m", 34, ("15m", "1h"))


@pytest.fixture(scope="module")
def real_1h(shared_binance, tmp_path_factory) -> BuiltLake:
    """55 days of real BTCUSDT 1h (freqtrade, 2023-02-10 on) with Binance's missing
    2023-03-24 13:00 candle (a skipped return inside the warm-up of the later days)."""
    path = shared_binance / "spot_freqtrade" / "BTC_USDT-1h.feather"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    klines = read_freqtrade_file(path).filter(
        pl.col("open_time").is_between(to_utc("2023-02-10"), to_utc("2023-04-06"), closed="left")
    )
    return built_lake(tmp_path_factory.mktemp("real_1h"), klines, "1h", 34, ("1h",))


LAKES = [
    pytest.param("sim_1m", id="sim-1m-5m", marks=pytest.mark.slow),
    pytest.param("sim_15m", id="sim-15m-1h", marks=pytest.mark.slow),
    pytest.param("real_1h", id="real-1h", marks=[pytest.mark.slow, pytest.mark.shared_data]),
]


@pytest.mark.parametrize("lake_name", LAKES)
def test_each_day_built_alone_equals_the_whole_series(request, lake_name):
    """Every label row of every day partition, tb_* included, equals the same row of the whole
    series exactly (value, known_at): the warm-up days make the volatility partition-exact."""
    parts, whole = request.getfixturevalue(lake_name).compare(connect())
    joined = parts.join(whole, on=KEY, how="left", suffix="_whole", validate="1:1")
    assert joined.filter(pl.col("value_whole").is_null()).is_empty()  # no row invented
    for column in ("value", "known_at", "is_leaky"):
        assert joined[column].equals(joined[f"{column}_whole"]), column
    tb = joined.filter(pl.col("label").str.starts_with("tb_"))
    assert tb.height > 1000 and tb["value"].n_unique() == 3  # the warmed-up tb rows are compared


@pytest.mark.parametrize("lake_name", LAKES)
def test_every_label_computable_from_the_landed_klines_is_in_a_day_partition(request, lake_name):
    """Completeness: the (interval, decision_time, label) set of the whole series equals the
    union of the day partitions; the 1h 30-bar horizons at 19:00-23:00 (reaching day D+2) too."""
    built = request.getfixturevalue(lake_name)
    parts, whole = built.compare(connect())
    missing = whole.join(parts, on=KEY, how="anti")
    assert missing.is_empty(), missing.group_by("interval", "label").len()
    assert parts.height == whole.height
    if "1h" in built.intervals:
        late = at_hours(whole.filter(pl.col("interval") == "1h"), HORIZON_30, range(19, 24))
        assert late.group_by("label").len().height == 2 and late.height >= 40


@pytest.mark.slow
def test_1h_horizons_past_d_plus_1_wait_for_d_plus_2(sim_15m, tmp_path):
    """Decisions at 19:00-23:00 have their 30-hour labels once D+2 has landed; before, they are
    absent (not guessed) and everything else of the day is already final."""
    day = sim_15m.days[40]
    lake, con = Lake(tmp_path), connect()
    for d in sim_15m.days[: 40 + 2]:  # D-40 .. D+1
        copy_curated(sim_15m.lake, lake, "1h", d)
    build_dataset_day(lake, con, SYMBOL, day)
    before = day_by_day(lake, "1h")
    assert at_hours(before, HORIZON_30, range(19, 24)).is_empty()
    assert at_hours(before, HORIZON_30, range(0, 19)).group_by("label").len().height == 2

    copy_curated(sim_15m.lake, lake, "1h", sim_15m.days[40 + 2])
    build_dataset_day(lake, con, SYMBOL, day)
    after = day_by_day(lake, "1h")
    assert at_hours(after, HORIZON_30, range(19, 24)).height == 2 * 5
    new_rows = after.join(before, on=KEY, how="anti").sort(KEY)
    assert new_rows.equals(at_hours(after, HORIZON_30, range(19, 24)).sort(KEY))
    assert before.join(after, on=[*KEY, "value", "known_at"], how="anti").is_empty()
    built_with_every_day = sim_15m.lake.read_partition(
        "labels", "labels", {**kline_keys("1h"), "date": day}
    )
    assert after.drop("interval").sort(KEY[1:]).equals(built_with_every_day.sort(KEY[1:]))


@pytest.mark.slow
def test_1h_windows_of_30_reach_two_days_back_and_their_candles_load(sim_15m):
    """The day's first 1h windows of 30 candles start on day D-2; the image loader
    (ml.window_data) reads that far back, so every window comes with its candles."""
    day = sim_15m.days[40]
    windows = sim_15m.lake.read_partition(
        "windows", "windows", {**kline_keys("1h"), "date": day}
    ).filter((pl.col("dataset") == "regular") & (pl.col("window_size") == 30))
    assert windows.height == 24
    assert windows["start_time"].min() == to_utc(day) - dt.timedelta(hours=30)
    part = WindowPartition(SYMBOL, "1h", day, "regular", 30)
    batch, loaded = load_windows(sim_15m.lake, connect(), part)
    assert loaded["decision_time"].to_list() == sorted(windows["decision_time"].to_list())
    assert batch.close.shape == (24, 30) and not np.isnan(batch.close).any()


def copy_curated(source: Lake, target: Lake, interval: str, day: dt.date) -> None:
    keys = {**kline_keys(interval), "date": day}
    shutil.copytree(
        source.partition_dir("curated", "klines", keys),
        target.partition_dir("curated", "klines", keys),
    )
