"""sql/windows/windows.sql, sql/images/window_candles.sql and sql/windows/samples.sql on small
hand-made lake partitions.

Inputs are written where the lake keeps them (``curated/klines``, ``windows/windows``,
``labels/labels``) with the columns and types those tables have; expected outputs are literals.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random

import polars as pl
import pytest

from dagster_project.core.klines import RAW_KLINE_SCHEMA, TIMESTAMP
from dagster_project.core.lake import Lake, connect
from dagster_project.core.sql import run_sql

UTC = dt.UTC
DAY = dt.date(2024, 3, 2)
T0 = dt.datetime(2024, 3, 2, tzinfo=UTC)
BAR_US = 60_000_000

# curated/klines (sql/curate/klines.sql): the raw columns, what curation adds, source last
CURATED_KLINE_SCHEMA: dict[str, pl.DataType] = {
    **{name: dtype for name, dtype in RAW_KLINE_SCHEMA.items() if name != "source"},
    "base_bars": pl.Int64(),
    "is_complete": pl.Boolean(),
    "source": pl.String(),
}
WINDOW_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String(),
    "window_size": pl.Int32(),
    "decision_time": TIMESTAMP,
    "start_time": TIMESTAMP,
    "label": pl.String(),
    "dropped_mask": pl.List(pl.Boolean()),
    "n_dropped": pl.Int32(),
}
LABEL_SCHEMA: dict[str, pl.DataType] = {
    "decision_time": TIMESTAMP,
    "label": pl.String(),
    "value": pl.Float64(),
    "known_at": TIMESTAMP,
    "is_leaky": pl.Boolean(),
}


def m(minutes: int) -> dt.datetime:
    """The time ``minutes`` after DAY's midnight (negative: the day before)."""
    return T0 + dt.timedelta(minutes=minutes)


def curated_klines(closes: dict[int, float], incomplete: frozenset[int] = frozenset()):
    """1m bars at minute offsets: open = close - 2, high = close + 1, low = close - 3,
    volume = 100 + minute; minutes not given are missing (a gap)."""
    minutes = sorted(closes)
    rows = [
        {
            "open_time": m(i),
            "open": closes[i] - 2,
            "high": closes[i] + 1,
            "low": closes[i] - 3,
            "close": closes[i],
            "volume": 100.0 + i,
            "close_time": m(i + 1) - dt.timedelta(milliseconds=1),
            "quote_volume": closes[i] * (100.0 + i),
            "trades": 7,
            "taker_buy_base_volume": 50.0,
            "taker_buy_quote_volume": closes[i] * 50.0,
            "base_bars": 0 if i in incomplete else 1,
            "is_complete": i not in incomplete,
            "source": "simulator",
        }
        for i in minutes
    ]
    return pl.DataFrame(rows, schema=CURATED_KLINE_SCHEMA)


def window(dataset, size, decision, label="next_up_1", mask=None) -> dict:
    """A windows/windows row ending at minute ``decision``."""
    mask = mask or [False] * size
    return {
        "dataset": dataset,
        "window_size": size,
        "decision_time": m(decision),
        "start_time": m(decision - size),
        "label": label,
        "dropped_mask": mask,
        "n_dropped": sum(mask),
    }


def write(lake: Lake, table: str, rows, schema=None, symbol="BTCUSDT", interval="1m", date=DAY):
    """One partition of curated/klines, windows/windows or labels/labels; its file's path."""
    layer = {"klines": "curated", "windows": "windows", "labels": "labels"}[table]
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, schema=schema)
    keys = {"symbol": symbol, "interval": interval, "date": date}
    return str(lake.write_partition(layer, table, keys, frame))


# --- windows.sql ----------------------------------------------------------------------------
def md5_mask(dataset: str, window_size: int, decision: int, n_dropped: int) -> list[bool]:
    """The mask windows.sql documents, computed here with Python's md5: the n_dropped positions
    (never the last) with the smallest md5(seed|dataset|symbol|window_size|epoch_us|position)."""
    epoch_us = int(m(decision).timestamp()) * 1_000_000
    parts = ("candlelake", dataset, "BTCUSDT", str(window_size), str(epoch_us))

    def draw(position: int) -> str:
        return hashlib.md5("|".join([*parts, str(position)]).encode()).hexdigest()

    dropped = sorted(range(window_size - 1), key=draw)[:n_dropped]
    return [position in dropped for position in range(window_size)]


def test_windows_are_every_candidate_with_its_label_mask_and_exclusion(tmp_path):
    # minute 5 is missing, minute 10 incomplete: it counts as missing, so nothing ends there
    closes = {i: 30.0 + 3 * i for i in [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]}
    path = write(Lake(tmp_path), "klines", curated_klines(closes, frozenset({10})))
    params = {
        "kline_files": [path],
        "bar_us": BAR_US,
        "start": m(3),
        "end": m(12),
        "symbol": "BTCUSDT",
        "seed": "candlelake",
        "window_sizes": [4],
        "datasets": ["regular", "irregular_50"],
        "drop_fractions": [0.0, 0.5],
        "labels": ["next_up_1", "window_up_{w}"],
    }
    out = run_sql(connect(), "windows/windows", params).pl()
    assert out.columns == [*WINDOW_SCHEMA, "excluded_reason"]
    # candles t-3..t end at decision_time t+1: at 3 the files start inside the window; windows
    # ending at 7, 8, 9 reach over minute 5; those ending at 4, 5 and 10 are whole
    reasons = {3: "history", 4: None, 5: None, 7: "gap", 8: "gap", 9: "gap", 10: None}
    datasets = {"irregular_50": ("window_up_4", 2), "regular": ("next_up_1", 0)}  # in order
    expected = []
    for dataset, (label, dropped) in datasets.items():
        for t, reason in reasons.items():
            mask = md5_mask(dataset, 4, t, dropped) if reason is None else [False] * 4
            expected.append((dataset, 4, m(t), m(t - 4), label, mask, dropped, reason))
    assert out.rows() == expected
    masks = out.filter(pl.col("excluded_reason").is_null() & (pl.col("n_dropped") > 0))
    assert len(set(map(tuple, masks["dropped_mask"]))) > 1  # the hash, not a fixed pattern


# --- window_candles.sql ---------------------------------------------------------------------
# Closes are multiples of 3 so that every 3-candle mean is an exact integer. Minutes -3..-1 lie
# in the day before (its own file); minute 5 is missing; minute 9 is incomplete (= missing).
CLOSES = {
    -3: 30.0, -2: 33.0, -1: 36.0,
    0: 27.0, 1: 42.0, 2: 39.0, 3: 24.0, 4: 45.0, 6: 51.0, 7: 48.0, 8: 54.0, 9: 60.0,
}  # fmt: skip
INCOMPLETE = frozenset({9})
WINDOWS = [
    window("regular", 3, 0),  # candles -3, -2, -1: all from the day before
    window("regular", 3, 3),  # 0, 1, 2
    window("regular", 3, 5),  # 2, 3, 4
    window("regular", 3, 6),  # 3, 4, 5: minute 5 is missing
    window("regular", 3, 7),  # 4, 5, 6: missing too
    window("regular", 3, 9),  # 6, 7, 8: present, but 6 and 7 have gaps in their averages
    window("regular", 3, 10),  # 7, 8, 9: 9 is incomplete
    window("irregular_60", 3, 3, mask=[True, False, False]),
    window("fullimage", 3, 3, label="window_up_3"),
    window("regular", 5, 5),
]


@pytest.fixture
def candle_files(tmp_path) -> dict[str, list[str]]:
    lake = Lake(tmp_path)
    before = {k: c for k, c in CLOSES.items() if k < 0}
    today = {k: c for k, c in CLOSES.items() if k >= 0}
    rows = WINDOWS.copy()
    random.Random(3).shuffle(rows)  # the file's order must not matter
    return {
        "window_files": [write(lake, "windows", rows, WINDOW_SCHEMA)],
        "kline_files": [
            write(lake, "klines", curated_klines(before), date=DAY - dt.timedelta(days=1)),
            write(lake, "klines", curated_klines(today, INCOMPLETE)),
        ],
    }


def window_candles(files, dataset="regular", window_size=3) -> pl.DataFrame:
    params = {**files, "bar_us": BAR_US, "dataset": dataset, "window_size": window_size}
    return run_sql(connect(), "images/window_candles", params).pl()


def test_window_candles_lists_each_complete_windows_candles_oldest_first(candle_files):
    out = window_candles(candle_files)
    assert out.columns == [
        "decision_time", "label", "dropped_mask",
        "open", "high", "low", "close", "volume", "moving_average",
    ]  # fmt: skip
    # windows ending at 6, 7 (minute 5 missing) and 10 (minute 9 incomplete) are left out
    assert out["decision_time"].to_list() == [m(0), m(3), m(5), m(9)]
    assert out["label"].to_list() == ["next_up_1"] * 4
    assert out["dropped_mask"].to_list() == [[False] * 3] * 4
    assert out["close"].to_list() == [[30, 33, 36], [27, 42, 39], [39, 24, 45], [51, 48, 54]]
    assert out["open"].to_list() == [[28, 31, 34], [25, 40, 37], [37, 22, 43], [49, 46, 52]]
    assert out["high"].to_list() == [[31, 34, 37], [28, 43, 40], [40, 25, 46], [52, 49, 55]]
    assert out["low"].to_list() == [[27, 30, 33], [24, 39, 36], [36, 21, 42], [48, 45, 51]]
    assert out["volume"].to_list() == [
        [97, 98, 99], [100, 101, 102], [102, 103, 104], [106, 107, 108],
    ]  # fmt: skip


def test_window_candles_moving_average_reads_only_the_last_w_consecutive_candles(candle_files):
    out = window_candles(candle_files)
    assert out["moving_average"].to_list() == [
        [None, None, 33],  # -3 and -2: the files start too late for 3 candles
        [32, 35, 36],  # (33 + 36 + 27) / 3 reaches into the day before
        [36, 35, 36],
        [None, None, 51],  # 6 reads 3, 4, (5 missing); 7 reads 4, (5), 6; 8 reads 6, 7, 8
    ]


def test_window_candles_keeps_one_dataset_and_size_and_passes_the_mask_through(candle_files):
    irregular = window_candles(candle_files, dataset="irregular_60")
    # a dropped candle is still listed: the mask tells the renderer to leave it blank
    assert irregular.rows() == [
        (
            m(3), "next_up_1", [True, False, False],
            [25, 40, 37], [28, 43, 40], [24, 39, 36], [27, 42, 39], [100, 101, 102],
            [32, 35, 36],
        )
    ]  # fmt: skip
    fullimage = window_candles(candle_files, dataset="fullimage")
    assert fullimage.select("decision_time", "label").rows() == [(m(3), "window_up_3")]
    five = window_candles(candle_files, window_size=5)
    # candles 0..4; a 5-candle average needs 5 consecutive closes: from minute 1 (-3..1) on
    assert five.select("decision_time", "close", "moving_average").rows() == [
        (m(5), [27, 42, 39, 24, 45], [None, 33.6, 35.4, 33.6, 35.4])
    ]


def test_window_candles_of_a_day_without_windows_is_empty(candle_files, tmp_path):
    empty = write(Lake(tmp_path / "empty"), "windows", [], WINDOW_SCHEMA)
    out = window_candles({**candle_files, "window_files": [empty]})
    assert out.height == 0


# --- samples.sql ----------------------------------------------------------------------------
def label(decision: int, name: str, value: float, horizon: int = 1) -> dict:
    return {
        "decision_time": m(decision),
        "label": name,
        "value": value,
        "known_at": m(decision + horizon),
        "is_leaky": False,
    }


@pytest.fixture
def sample_lake(tmp_path) -> Lake:
    lake = Lake(tmp_path)
    eth, btc, fifteen = {"symbol": "ETHUSDT"}, {"symbol": "BTCUSDT"}, {"interval": "15m"}
    next_day = DAY + dt.timedelta(days=1)
    # (partition keys, table, rows); written out of order
    partitions = [
        ({**btc, "date": DAY}, "windows", [
            window("regular", 5, 7),
            window("fullimage", 5, 7, label="window_up_5"),
            window("irregular_60", 5, 7, mask=[True, False, True, True, False]),
            window("regular", 5, 6),
            window("regular", 5, 8),  # no label at 8: its future is not landed
            window("regular", 15, 20),
        ]),
        ({**btc, "date": DAY}, "labels", [
            label(6, "next_up_1", 0.0), label(7, "next_up_1", 1.0),
            label(7, "window_up_5", 0.0, horizon=5),
            label(8, "next_up_5", 1.0, horizon=5),  # not the label windows at 8 pair with
            label(9, "next_up_1", 1.0),  # ETHUSDT has the window at 9: no pairing across symbols
            label(20, "next_up_1", 1.0),
            label(30, "next_up_1", 0.0),  # a label without a window is no sample either
        ]),
        ({**eth, "date": DAY}, "labels", [label(5, "next_up_1", 1.0)]),
        ({**eth, "date": DAY}, "windows", [window("regular", 5, 5), window("regular", 5, 9)]),
        ({**btc, **fifteen, "date": DAY}, "windows", [window("regular", 5, 75)]),
        ({**btc, **fifteen, "date": DAY}, "labels", [label(75, "next_up_1", 1.0, horizon=15)]),
        ({**btc, "date": next_day}, "windows", [window("regular", 5, 1445)]),
        ({**btc, "date": next_day}, "labels", [label(1445, "next_up_1", 0.0)]),
    ]  # fmt: skip
    for keys, table, rows in partitions:
        schema = WINDOW_SCHEMA if table == "windows" else LABEL_SCHEMA
        write(lake, table, rows=rows, schema=schema, **keys)
    return lake


def test_samples_are_windows_inner_joined_to_their_own_label(sample_lake):
    files = {
        "window_files": sample_lake.glob("windows", "windows", ("symbol", "interval", "date")),
        "label_files": sample_lake.glob("labels", "labels", ("symbol", "interval", "date")),
    }
    out = run_sql(connect(), "windows/samples", files).pl()
    assert out.columns == [
        "symbol", "interval", "dataset", "window_size", "decision_time", "label", "value",
        "known_at",
    ]  # fmt: skip
    assert out.rows() == [
        ("BTCUSDT", "15m", "regular", 5, m(75), "next_up_1", 1.0, m(90)),
        ("BTCUSDT", "1m", "fullimage", 5, m(7), "window_up_5", 0.0, m(12)),
        ("BTCUSDT", "1m", "irregular_60", 5, m(7), "next_up_1", 1.0, m(8)),
        ("BTCUSDT", "1m", "regular", 5, m(6), "next_up_1", 0.0, m(7)),
        ("BTCUSDT", "1m", "regular", 5, m(7), "next_up_1", 1.0, m(8)),
        ("BTCUSDT", "1m", "regular", 5, m(1445), "next_up_1", 0.0, m(1446)),
        ("BTCUSDT", "1m", "regular", 15, m(20), "next_up_1", 1.0, m(21)),
        ("ETHUSDT", "1m", "regular", 5, m(5), "next_up_1", 1.0, m(6)),
    ]
