"""ml/images.py against its pixel specification, and the seed's label leak made visible.

Expected images are painted here from the spec with literal row and column numbers, not with
the renderer's own helpers.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import pytest

from dagster_project.backfill import ingest_range
from dagster_project.datasets import build_dataset_day
from dagster_project.ingest.simulator import SimulatorConfig
from dagster_project.ingest.sources import SimulatorSource
from dagster_project.klines import TimeRange
from dagster_project.lake import Lake, connect
from ml.images import (
    DOWN,
    UP,
    CandleStyle,
    OhlcBarStyle,
    WindowBatch,
    default_ohlc_height,
    render,
)
from ml.window_data import WindowPartition, attach_labels, load_windows


def batch(*candles, volume=None, present=None, ma=None) -> WindowBatch:
    """One window from (open, high, low, close) tuples."""
    o, h, low, c = (np.array([[candle[i] for candle in candles]], dtype=float) for i in range(4))
    n = len(candles)
    return WindowBatch(
        o,
        h,
        low,
        c,
        np.array([volume or [1.0] * n], dtype=float),
        np.array([present or [True] * n]),
        None if ma is None else np.array([ma], dtype=float),
    )


def paint(image: np.ndarray, rows: range, columns: range, colour) -> None:
    """Paint an expected (C, H, W) image."""
    for channel, value in enumerate(colour):
        image[channel, rows.start : rows.stop, columns.start : columns.stop] = value


# --- candle style ---------------------------------------------------------------------------
# 2 candles in 8 columns: candle 0 owns columns 0-3 (body 0-2, wick 1, column 3 blank),
# candle 1 owns 4-7 (body 4-6, wick 5). 20 rows with volume: price rows 0-14, blank row 15,
# volume rows 16-19. Range lo = 6, hi = 14: row(p) = floor((14 - p) * 14 / 8 + 0.5).
UP_CANDLE = (10.0, 14.0, 8.0, 12.0)  # body rows 4..7, wick rows 0..11
DOWN_CANDLE = (12.0, 13.0, 6.0, 9.0)  # body rows 4..9, wick rows 2..14


def test_candle_pixels_bodies_wicks_spacing_and_volume():
    image = render(
        batch(UP_CANDLE, DOWN_CANDLE, volume=[5.0, 10.0]), CandleStyle(height=20, width=8)
    )[0]
    expected = np.zeros((3, 20, 8), dtype=np.uint8)
    paint(expected, range(4, 8), range(0, 3), UP)  # body
    paint(expected, range(0, 12), range(1, 2), UP)  # wick
    paint(expected, range(18, 20), range(0, 3), UP)  # volume 5 of 10: 2 of 4 rows
    paint(expected, range(4, 10), range(4, 7), DOWN)
    paint(expected, range(2, 15), range(5, 6), DOWN)
    paint(expected, range(16, 20), range(4, 7), DOWN)
    np.testing.assert_array_equal(image, expected)


def test_up_candles_are_green_and_down_candles_red():
    image = render(batch(UP_CANDLE, DOWN_CANDLE), CandleStyle(height=32, width=32))[0]
    up_pixels = image[:, :, 1][:, image[1, :, 1] > 0]
    down_pixels = image[:, :, 17][:, image[0, :, 17] > 0]
    assert up_pixels.size and down_pixels.size
    assert (up_pixels[1] > up_pixels[0]).all() and (up_pixels[1] > up_pixels[2]).all()
    assert (down_pixels[0] > down_pixels[1]).all() and (down_pixels[0] > down_pixels[2]).all()


def test_without_volume_every_row_is_a_price_row():
    image = render(batch(UP_CANDLE, DOWN_CANDLE), CandleStyle(height=15, width=8, volume=False))
    expected = np.zeros((3, 15, 8), dtype=np.uint8)
    paint(expected, range(4, 8), range(0, 3), UP)
    paint(expected, range(0, 12), range(1, 2), UP)
    paint(expected, range(4, 10), range(4, 7), DOWN)
    paint(expected, range(2, 15), range(5, 6), DOWN)
    np.testing.assert_array_equal(image[0], expected)


def test_narrow_slots_have_no_spacing_column():
    # 3 candles in 5 columns own 1, 2 and 2 columns: all body, the wick on the first of each
    image = render(batch(UP_CANDLE, DOWN_CANDLE, UP_CANDLE), CandleStyle(height=20, width=5))[0]
    assert image.any(axis=(0, 1)).all()
    wick_and_body, body_only = image[:, :, 1] > 0, image[:, :, 2] > 0
    # candle 1 (down: body rows 4-9, wick rows 2-14, volume rows 16-19)
    assert np.flatnonzero(body_only[0]).tolist() == [*range(4, 10), *range(16, 20)]
    assert np.flatnonzero(wick_and_body[0]).tolist() == [*range(2, 15), *range(16, 20)]


def test_a_doji_is_one_row_and_counts_as_up():
    image = render(batch((10.0, 12.0, 8.0, 10.0)), CandleStyle(height=9, width=4, volume=False))
    # lo 8, hi 12: row(p) = floor((12 - p) * 2 + 0.5); the body is row 4 only
    body_rows = np.flatnonzero(image[0, 1, :, 0])
    assert body_rows.tolist() == [4] and tuple(image[0, :, 4, 0]) == UP


def test_flat_window_and_zero_volume_draw_the_middle_row_without_warnings():
    flat = (5.0, 5.0, 5.0, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        candles = render(batch(flat, flat, volume=[0.0, 0.0]), CandleStyle(height=20, width=8))
        bars = render(batch(flat, flat, volume=[0.0, 0.0], ma=[5.0, 5.0]), OhlcBarStyle())
    # 15 price rows: the middle is row 7; no volume bars
    assert np.flatnonzero(candles[0].any(axis=(0, 2))).tolist() == [7]
    # ohlc_bar, 32 rows: 6 volume rows, 25 price rows, middle row 12
    assert np.flatnonzero(bars[0, 0].any(axis=1)).tolist() == [12]


def test_a_missing_candle_leaves_exactly_its_columns_blank():
    inside = (11.0, 12.0, 9.0, 10.0)  # inside the others' range, small volume: scaling unchanged
    full = batch(UP_CANDLE, inside, DOWN_CANDLE, volume=[5.0, 1.0, 10.0])
    masked = batch(
        UP_CANDLE, inside, DOWN_CANDLE, volume=[5.0, 1.0, 10.0], present=[True, False, True]
    )
    style = CandleStyle(height=30, width=12)  # 4 columns per candle: candle 1 owns 4-7
    a, b = render(full, style)[0], render(masked, style)[0]
    differs = (a != b).any(axis=(0, 1))
    assert np.flatnonzero(differs).tolist() == [4, 5, 6]  # column 7 is spacing in both
    assert not b[:, :, 4:8].any()


def test_rendering_is_deterministic_and_independent_of_the_batch():
    rng = np.random.default_rng(7)
    close = 100 + np.cumsum(rng.standard_normal((600, 15)), axis=1)
    opens = close - rng.standard_normal((600, 15))
    spread = rng.random((600, 15))
    windows = WindowBatch(
        opens,
        np.maximum(opens, close) + spread,
        np.minimum(opens, close) - spread,
        close,
        rng.random((600, 15)),
        rng.random((600, 15)) > 0.3,
        close + 0.5,
    )
    for style in (CandleStyle(), CandleStyle(height=224, width=224), OhlcBarStyle()):
        whole = render(windows, style)
        assert whole.dtype == np.uint8
        assert whole.tobytes() == render(windows, style).tobytes()
        alone = render(windows.take(slice(417, 418)), style)
        np.testing.assert_array_equal(alone[0], whole[417])


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="too narrow for 30 candles"):
        render(batch(*[UP_CANDLE] * 30), CandleStyle(width=20))
    with pytest.raises(ValueError, match="volume has shape"):
        WindowBatch(*(np.ones((2, 5)),) * 4, np.ones((2, 4)), np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="at least 3 rows"):
        render(batch(UP_CANDLE), CandleStyle(height=2, width=4))


# --- ohlc_bar style -------------------------------------------------------------------------
# 3 candles, 32 rows (the paper's height for up to 5 candles), 9 columns. Volume rows 26-31,
# blank row 25, price rows 0-24 over lo = 0, hi = 24: row(p) = 24 - p.
OHLC = [(10.0, 14.0, 8.0, 12.0), (12.0, 20.0, 11.0, 18.0), (18.0, 24.0, 0.0, 3.0)]


def test_ohlc_bar_pixels_ticks_bars_moving_average_and_volume():
    image = render(batch(*OHLC, volume=[2.0, 4.0, 0.0], ma=[11.0, 14.0, 17.0]), OhlcBarStyle())
    assert image.shape == (1, 1, 32, 9)
    expected = np.zeros((32, 9), dtype=np.uint8)
    for column, row in ((0, 14), (3, 12), (6, 6)):  # open ticks
        expected[row, column] = 255
    for column, rows in ((1, range(10, 17)), (4, range(4, 14)), (7, range(0, 25))):  # high-low
        expected[rows.start : rows.stop, column] = 255
    for column, row in ((2, 12), (5, 6), (8, 21)):  # close ticks
        expected[row, column] = 255
    expected[29:32, 1] = 255  # volume 2 of 4: 3 of 6 rows
    expected[26:32, 4] = 255  # volume 4 of 4: all 6 rows
    # MA rows 13, 10, 7 at the centre columns 1, 4, 7, interpolated in between
    for column, row in ((1, 13), (2, 12), (3, 11), (4, 10), (5, 9), (6, 8), (7, 7)):
        expected[row, column] = 255
    np.testing.assert_array_equal(image[0, 0], expected)


def test_ohlc_bar_scale_includes_the_moving_average_and_skips_unknown_values():
    # the MA of candle 0 (30) is above every high: it becomes the top of the range
    image = render(batch(*OHLC, ma=[30.0, np.nan, np.nan]), OhlcBarStyle(volume=False))[0, 0]
    assert image[0, 1] == 255  # the MA pixel on row 0
    # no line without a following MA value; the unknown ones draw nothing
    assert np.flatnonzero(image[:, 2]).tolist() == [round((30 - 12) * 31 / 30)]  # close tick


def test_ohlc_bar_missing_candle_and_its_line_are_blank():
    image = render(
        batch(*OHLC, present=[True, False, True], ma=[11.0, 14.0, 17.0]), OhlcBarStyle()
    )[0, 0]
    assert not image[:, 3:6].any()
    # the line neither starts from candle 0 towards the missing candle nor reaches candle 2
    assert np.flatnonzero(image[:, 2]).tolist() == [12]  # only the close tick


def test_default_heights_follow_the_paper():
    assert [default_ohlc_height(n) for n in (5, 20, 60, 15, 30)] == [32, 64, 96, 64, 96]
    assert render(batch(*[OHLC[0]] * 20), OhlcBarStyle()).shape == (1, 1, 64, 60)
    assert render(batch(*[OHLC[0]] * 5), OhlcBarStyle(height=48)).shape == (1, 1, 48, 15)


# --- the seed's leak --------------------------------------------------------------------------
DAY = dt.date(2024, 3, 2)


@pytest.fixture(scope="module")
def simulated_lake(tmp_path_factory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    source = SimulatorSource(SimulatorConfig())
    ingest_range(lake, source, ["BTCUSDT"], "1m", TimeRange(start, start + dt.timedelta(days=3)))
    build_dataset_day(lake, connect(), "BTCUSDT", DAY)
    return lake


def last_candle_is_green(images: np.ndarray) -> np.ndarray:
    """The trivial rule: is the rightmost candle's body green? Reads pixels only."""
    last_slot = images[:, :, :, -3:].astype(int)  # 5 candles in 64 px: the last owns 51-63
    green = ((last_slot[:, 1] > last_slot[:, 0]) & (last_slot[:, 1] > 0)).sum(axis=(1, 2))
    red = ((last_slot[:, 0] > last_slot[:, 1]) & (last_slot[:, 0] > 0)).sum(axis=(1, 2))
    assert (green + red > 0).all()
    return green > red


def test_the_last_candles_colour_reveals_the_leaky_label_but_not_the_honest_one(simulated_lake):
    part = WindowPartition("BTCUSDT", "1m", DAY, "regular", 5)
    windows, frame = load_windows(simulated_lake, connect(), part)
    rule = last_candle_is_green(render(windows, CandleStyle()))
    leaky = attach_labels(simulated_lake, part, frame, label="leaky_last_candle_up")["value"]
    honest = attach_labels(simulated_lake, part, frame)  # regular pairs with next_up_1
    assert set(honest["label"]) == {"next_up_1"}
    honest = honest.filter(honest["value"].is_not_null())
    assert windows.size > 1400 and honest.height > 1400

    leaky_accuracy = float(np.mean(rule == leaky.to_numpy().astype(bool)))
    # the image's last candle *is* the leaky label; only dojis (green, label 0) disagree
    dojis = np.mean(windows.close[:, -1] == windows.open[:, -1])
    assert leaky_accuracy == pytest.approx(1.0 - dojis, abs=1e-12) and leaky_accuracy > 0.97

    keep = frame["decision_time"].is_in(honest["decision_time"].implode()).to_numpy()
    guess, truth = rule[keep], honest["value"].to_numpy().astype(bool)
    accuracy = float(np.mean(guess == truth))
    # under independence the rule scores p·q + (1 − p)(1 − q); 99.9 % binomial interval
    p, q = guess.mean(), truth.mean()
    chance = p * q + (1 - p) * (1 - q)
    assert abs(accuracy - chance) < 3.3 * math.sqrt(chance * (1 - chance) / guess.size)
    assert abs(accuracy - 0.5) < 0.06


def test_an_empty_batch_gives_no_images():
    empty = WindowBatch(*(np.empty((0, 30)),) * 5, np.empty((0, 30), bool))
    assert render(empty, CandleStyle()).shape == (0, 3, 64, 64)
    assert render(empty, OhlcBarStyle()).shape == (0, 1, 96, 90)
