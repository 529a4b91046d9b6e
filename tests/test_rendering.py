"""ml/rendering.py against its pixel specification, and the seed's label leak made visible.

Expected images are painted here from the spec with literal row and column numbers, not with
the renderer's own helpers.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from dagster_project.backfill import ingest_range
from dagster_project.core.klines import TimeRange, interval_length
from dagster_project.core.lake import Lake, connect
from dagster_project.ingest.simulator import SimulatorConfig
from dagster_project.ingest.sources import SimulatorSource
from dagster_project.transform.dataset_days import build_dataset_day
from dagster_project.transform.windows import DATASETS
from ml.rendering import (
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
# A trivial pixel rule reads one fact off each image: did the last candle close up (regular and
# irregular datasets, paired with next_up_1), or did the last candle close above the first
# candle's open (fullimage, paired with window_up_w)? The leakage controls
# (leaky_last_candle_up, leaky_window_up_w) are exactly those facts, so the rule must score 1.0
# on them but for price ties; on the honest labels, which are about candles after the image, it
# must stay at chance. One detector (`reveals_the_label`) judges both, and a lake tampered to
# draw the label's future must be flagged by it.
SYMBOL = "BTCUSDT"
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
# Simulated days per base interval; windows are read on every day but the first and the last
# (history before, label horizons after): 1 day of 1m, 12 days of 15m (~1,150 samples each).
LAKE_DAYS = {"1m": 3, "15m": 14}
LEAK_STYLES = {
    "candle": CandleStyle(),
    # The MA line's pixel 2/3 of the way from candle n-2 to n-1 lies on candle n-1's open-tick
    # column (3n - 3): with the line on, that column holds two pixels in ~94 % of 5-candle 1m
    # images and no pixel rule can tell the open tick. The price marks are the same without it.
    "ohlc_bar": OhlcBarStyle(moving_average=False),
}


@dataclass(frozen=True)
class SimulatedLake:
    lake: Lake
    interval: str
    days: tuple[dt.date, ...]  # the days whose windows are read


@dataclass(frozen=True)
class Guess:
    up: np.ndarray  # bool per image
    decided: np.ndarray  # False where the two marks compared sit on one row (a tie in pixels)


@dataclass(frozen=True)
class LeakPair:
    """A dataset's honest label, the leakage control its images show, and the rule reading it."""

    honest: str
    control: str
    horizon: int  # bars the honest label looks past the window: the stride of honest samples
    rule: Callable[[np.ndarray, CandleStyle | OhlcBarStyle, int], Guess]
    compared_open: int  # the candle whose open the control compares with the last close


@dataclass(frozen=True)
class RuleScore:
    accuracy: float
    chance: float  # p·q + (1 − p)(1 − q): the accuracy of guesses independent of the label
    samples: int

    @property
    def interval(self) -> float:
        """Half-width of the 99.9 % binomial interval around chance."""
        return 3.3 * math.sqrt(self.chance * (1 - self.chance) / self.samples)


def reveals_the_label(score: RuleScore) -> bool:
    """The leak detector: the rule's accuracy lies outside the 99.9 % binomial interval of a
    rule that is independent of the label."""
    return abs(score.accuracy - score.chance) >= score.interval


def score(guess: np.ndarray, truth: np.ndarray) -> RuleScore:
    p, q = guess.mean(), truth.mean()
    chance = float(p * q + (1 - p) * (1 - q))
    return RuleScore(float(np.mean(guess == truth)), chance, guess.size)


def price_rows(style: CandleStyle | OhlcBarStyle, height: int) -> int:
    """Rows above the volume panel (H // 5 rows and a blank one), as ml/rendering.py draws them."""
    return height - height // 5 - 1 if style.volume else height


def candle_marks(images, candle: int, candles: int, style) -> tuple[np.ndarray, ...]:
    """Rows of the open and close of one candle, and whether it is green, read off the pixels:
    a body column that is not the wick spans the body; green bodies open at the bottom."""
    width = images.shape[3]
    first = candle * width // candles
    owned = (candle + 1) * width // candles - first
    body = owned - 1 if owned >= 3 else owned
    assert body >= 2, "every candle needs a body column beside its wick"
    column = first + 1 if first + (body - 1) // 2 == first else first
    pixels = images[:, :, : price_rows(style, images.shape[2]), column].astype(int)
    lit = pixels.any(axis=1)
    assert lit.any(axis=1).all()
    top, bottom = lit.argmax(axis=1), lit.shape[1] - 1 - lit[:, ::-1].argmax(axis=1)
    green = (pixels[:, 1] > pixels[:, 0]).any(axis=1)
    return np.where(green, bottom, top), np.where(green, top, bottom), green


def tick_rows(images, candle: int, style) -> tuple[np.ndarray, np.ndarray]:
    """Rows of an OHLC bar's open tick (column 3i) and close tick (column 3i + 2)."""
    ticks = images[:, 0, : price_rows(style, images.shape[2]), 3 * candle : 3 * candle + 3 : 2]
    lit = ticks > 0
    assert (lit.sum(axis=1) == 1).all(), "one pixel per tick column"
    rows = lit.argmax(axis=1)
    return rows[:, 0], rows[:, 1]


def open_close_rows(images, candle: int, candles: int, style) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(style, CandleStyle):
        return candle_marks(images, candle, candles, style)[:2]
    return tick_rows(images, candle, style)


def last_candle_up(images, style, candles: int) -> Guess:
    """The seed's rule: the last candle's colour; for OHLC bars, its close tick above its open."""
    if isinstance(style, CandleStyle):
        green = candle_marks(images, candles - 1, candles, style)[2]
        return Guess(green, np.ones_like(green))
    open_row, close_row = tick_rows(images, candles - 1, style)
    return Guess(close_row < open_row, close_row != open_row)


def window_up(images, style, candles: int) -> Guess:
    """The last candle's close drawn above the first candle's open."""
    first_open, _ = open_close_rows(images, 0, candles, style)
    _, last_close = open_close_rows(images, candles - 1, candles, style)
    return Guess(last_close < first_open, last_close != first_open)


def leak_pair(dataset: str, window_size: int) -> LeakPair:
    honest = {d.name: d.label for d in DATASETS}[dataset].replace("{w}", str(window_size))
    if honest == "next_up_1":
        return LeakPair(honest, "leaky_last_candle_up", 1, last_candle_up, compared_open=-1)
    if honest == f"window_up_{window_size}":
        control = f"leaky_window_up_{window_size}"
        return LeakPair(honest, control, window_size, window_up, compared_open=0)
    raise ValueError(f"no leakage control for {dataset}'s label {honest}")


@dataclass(frozen=True)
class RuleReading:
    """The rule's guesses on every window of a dataset over a lake's days, with the labels."""

    guess: Guess
    honest: np.ndarray  # value of the paired label; NaN where it is not landed
    control: np.ndarray  # value of the leakage control
    ties: np.ndarray  # the two prices the control compares are equal (dojis)
    on_stride: np.ndarray  # decision time on a multiple of the horizon: non-overlapping samples


def read_with_the_rule(sim: SimulatedLake, dataset: str, style_name: str, window_size: int):
    pair, style = leak_pair(dataset, window_size), LEAK_STYLES[style_name]
    batches, frames, con = [], [], connect()
    for day in sim.days:
        part = WindowPartition(SYMBOL, sim.interval, day, dataset, window_size)
        windows, frame = load_windows(sim.lake, con, part)
        honest = attach_labels(sim.lake, part, frame)["value"]
        control = attach_labels(sim.lake, part, frame, label=pair.control)["value"]
        assert set(frame["label"]) == {pair.honest} and control.null_count() == 0
        batches.append(windows)
        frames.append(frame.with_columns(honest=honest, control=control))
    windows, frame = concatenated(batches), pl.concat(frames)
    bar = interval_length(sim.interval) // dt.timedelta(microseconds=1)
    bar_index = frame["decision_time"].dt.epoch("us").to_numpy() // bar
    return RuleReading(
        guess=pair.rule(render(windows, style), style, window_size),
        honest=frame["honest"].fill_null(np.nan).to_numpy(),
        control=frame["control"].to_numpy(),
        ties=windows.close[:, -1] == windows.open[:, pair.compared_open],
        on_stride=bar_index % pair.horizon == 0,
    )


def concatenated(batches: list[WindowBatch]) -> WindowBatch:
    fields = vars(batches[0])
    return WindowBatch(**{f: np.concatenate([getattr(b, f) for b in batches]) for f in fields})


def honest_score(reading: RuleReading) -> RuleScore:
    """The rule against the honest label on decided, labelled, non-overlapping samples."""
    keep = reading.guess.decided & ~np.isnan(reading.honest) & reading.on_stride
    return score(reading.guess.up[keep], reading.honest[keep].astype(bool))


def simulate(root, interval: str) -> SimulatedLake:
    lake = Lake(root)
    days = LAKE_DAYS[interval]
    source = SimulatorSource(SimulatorConfig())
    ingest_range(lake, source, [SYMBOL], interval, TimeRange(START, START + dt.timedelta(days)))
    con = connect()
    window_days = tuple(START.date() + dt.timedelta(days=d) for d in range(1, days - 1))
    for day in window_days:
        build_dataset_day(lake, con, SYMBOL, day)
    return SimulatedLake(lake, interval, window_days)


def showing_the_future(sim: SimulatedLake, bars: int, root) -> SimulatedLake:
    """A copy of the lake whose curated klines at its interval are moved ``bars`` bars earlier
    (a misaligned join): the candle drawn at time t is candle t + bars, while every window keeps
    its decision time and its pairing with the labels of that time."""
    lake = Lake(root)
    shift = bars * interval_length(sim.interval)
    for keys in sim.lake.partitions("curated", "klines"):
        if keys["interval"] == sim.interval:
            klines = sim.lake.read_partition("curated", "klines", keys)
            moved = klines.with_columns(pl.col("open_time", "close_time") - shift)
            lake.write_partition("curated", "klines", keys, moved)
    for layer, table in (("windows", "windows"), ("labels", "labels")):
        shutil.copytree(sim.lake.table_dir(layer, table), lake.table_dir(layer, table))
    return SimulatedLake(lake, sim.interval, sim.days)


class SimulatedLakes:
    """Simulated lakes built on first use and kept for the module."""

    def __init__(self, tmp_path_factory) -> None:
        self._tmp = tmp_path_factory
        self._lakes: dict[tuple[str, int], SimulatedLake] = {}

    def get(self, interval: str, future_bars: int = 0) -> SimulatedLake:
        key = (interval, future_bars)
        if key not in self._lakes:
            root = self._tmp.mktemp(f"lake-{interval}-{future_bars}")
            self._lakes[key] = (
                simulate(root, interval)
                if not future_bars
                else showing_the_future(self.get(interval), future_bars, root)
            )
        return self._lakes[key]


@pytest.fixture(scope="module")
def simulated_lakes(tmp_path_factory) -> SimulatedLakes:
    return SimulatedLakes(tmp_path_factory)


DATASET_NAMES = [d.name for d in DATASETS]
WINDOW = 5
SLOW_15M = pytest.param("15m", marks=pytest.mark.slow)


@pytest.mark.parametrize("style_name", list(LEAK_STYLES))
@pytest.mark.parametrize("dataset", DATASET_NAMES)
@pytest.mark.parametrize("interval", ["1m", SLOW_15M])
def test_a_pixel_rule_reads_the_leakage_control_but_not_the_honest_label(
    simulated_lakes, interval, dataset, style_name
):
    sim = simulated_lakes.get(interval)
    reading = read_with_the_rule(sim, dataset, style_name, WINDOW)
    decided = reading.guess.decided
    bars_per_day = dt.timedelta(days=1) // interval_length(interval)
    assert decided.size > 0.95 * bars_per_day * len(sim.days) and decided.mean() > 0.85
    honest = honest_score(reading)
    assert honest.samples > 0.8 * decided.size / leak_pair(dataset, WINDOW).horizon
    assert not reveals_the_label(honest), honest
    assert abs(honest.accuracy - 0.5) < max(0.06, honest.interval), honest
    # the image shows the control: every decided guess is right but on a price tie (a doji,
    # drawn green; OHLC ticks of equal prices share a row and are undecided)
    wrong = reading.guess.up != reading.control.astype(bool)
    np.testing.assert_array_equal(wrong[decided], reading.ties[decided])
    assert reading.ties.mean() < 0.03


@pytest.mark.parametrize("style_name", list(LEAK_STYLES))
@pytest.mark.parametrize("dataset", DATASET_NAMES)
@pytest.mark.parametrize("interval", ["1m", SLOW_15M])
def test_the_detector_flags_a_lake_that_draws_the_labels_future(
    simulated_lakes, interval, dataset, style_name
):
    horizon = leak_pair(dataset, WINDOW).horizon  # next_up_1: 1 bar; window_up_5: 5 bars
    tampered = simulated_lakes.get(interval, future_bars=horizon)
    honest = honest_score(read_with_the_rule(tampered, dataset, style_name, WINDOW))
    assert reveals_the_label(honest) and honest.accuracy > 0.9, honest


def test_an_empty_batch_gives_no_images():
    empty = WindowBatch(*(np.empty((0, 30)),) * 5, np.empty((0, 30), bool))
    assert render(empty, CandleStyle()).shape == (0, 3, 64, 64)
    assert render(empty, OhlcBarStyle()).shape == (0, 1, 96, 90)
