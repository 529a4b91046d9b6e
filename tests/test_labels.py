"""sql/labels/labels.sql and sql/windows/windows.sql on small hand-made klines."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from dagster_project.labels import (
    DATASETS,
    LABEL_SPECS,
    LabelParams,
    build_labels,
    build_windows,
    check_known_at,
    ewm_volatility,
    label_names,
)
from dagster_project.lake import connect
from dagster_project.sql import run_sql

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


def test_ewm_volatility_matches_the_recursion_and_skips_gap_returns():
    minutes = [0, 1, 2, 3, 5, 6, 7]  # 4 missing: the 3 -> 5 return is not a one-bar return
    closes = [100.0, 101.0, 100.5, 102.0, 90.0, 91.0, 90.5]
    frame = pl.DataFrame({"open_time": [m(i) for i in minutes], "close": closes})
    params = LabelParams(vol_span=3, vol_min_periods=2)
    vol = ewm_volatility(
        frame.with_columns(pl.col("open_time").dt.cast_time_unit("us")), BAR_US, params
    )
    alpha = 2 / (3 + 1)
    returns = [None, *np.log(np.array(closes[1:]) / np.array(closes[:-1]))]
    returns[4] = None
    expected, mean, seen = {}, None, 0
    for minute, r in zip(minutes, returns, strict=True):
        if r is not None:
            mean = r * r if mean is None else (1 - alpha) * mean + alpha * r * r
            seen += 1
            if seen >= 2:
                expected[m(minute)] = math.sqrt(mean)
    got = dict(zip(vol["open_time"].to_list(), vol["vol"].to_list(), strict=True))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12)


def test_build_labels_end_to_end(tmp_path):
    rng = np.random.default_rng(7)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 120)))
    bars = {i: (c, c * 1.001, c * 0.999, c) for i, c in enumerate(closes)}
    path = write_klines(tmp_path, bars)
    params = LabelParams(tb_k=1.0, vol_span=10, vol_min_periods=5)
    out = build_labels(connect(), [path], "1m", m(40), m(60), params)
    assert set(out["label"]) == set(label_names())
    assert out.filter(pl.col("label") == "next_up_15").height == 20
    assert check_known_at(out).is_empty()
    assert out.select(pl.struct("decision_time", "label").is_unique().all()).item()
    assert [s.family for s in LABEL_SPECS if s.is_leaky] == [
        "leaky_last_candle_up",
        "leaky_window_up",
    ]


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
