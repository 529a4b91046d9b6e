"""mplfinance draws the windows ``ml.rendering`` draws: the reference renderer agrees with ours
candle by candle; the side-by-side picture and ``candlelake render-sample``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from dagster_project.cli import main
from dagster_project.core.klines import TimeRange
from dagster_project.ingest.simulator import simulate_klines
from ml import image_preview
from ml.image_preview import side_by_side, windows_from_klines
from ml.mpl_reference import MplfinanceCandles
from ml.rendering import DOWN, UP, CandleStyle, WindowBatch, render

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
WINDOWS = 40
LIT = 40  # a pixel is a mark when a channel exceeds this (anti-aliased edges are dimmer)


@pytest.fixture(scope="module")
def klines():
    return simulate_klines("BTCUSDT", "1m", TimeRange(START, START + dt.timedelta(days=1)))


@dataclass
class Marks:
    """Per window and candle slot (the columns ``CandleStyle`` gives the candle): whether it has
    marks, whether they are mostly green, and the top and bottom rows of its marks."""

    lit: np.ndarray  # (B, n) bool
    green: np.ndarray  # (B, n) bool
    top: np.ndarray  # (B, n) int, -1 where unlit
    bottom: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray, candles: int) -> Marks:
        mark = images.max(axis=1) > LIT  # (B, H, W)
        green = mark & (images[:, 1] > images[:, 0])  # green and red keep their order when dimmed
        red = mark & (images[:, 0] > images[:, 1])
        edges = (np.arange(candles + 1) * images.shape[3]) // candles
        columns = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        rows = np.stack([mark[:, :, c].any(axis=2) for c in columns], axis=1)  # (B, n, H)
        lit = rows.any(axis=2)
        top = np.where(lit, rows.argmax(axis=2), -1)
        bottom = np.where(lit, rows.shape[2] - 1 - rows[:, :, ::-1].argmax(axis=2), -1)
        greens = np.stack([green[:, :, c].sum(axis=(1, 2)) for c in columns], axis=1)
        reds = np.stack([red[:, :, c].sum(axis=(1, 2)) for c in columns], axis=1)
        return cls(lit, greens > reds, top, bottom)


def agreement(ours: Marks, theirs: Marks) -> dict[str, float]:
    """Shares of candles (lit in our image) with the same dominant colour, the same top and bottom
    row, and top and bottom within one row."""
    lit = ours.lit
    same_top, same_bottom = ours.top == theirs.top, ours.bottom == theirs.bottom
    near = (np.abs(ours.top - theirs.top) <= 1) & (np.abs(ours.bottom - theirs.bottom) <= 1)
    return {
        "colour": (ours.green == theirs.green)[lit].mean(),
        "extent": (same_top & same_bottom)[lit].mean(),
        "extent_1px": near[lit].mean(),
    }


def both(batch: WindowBatch, size: int, volume: bool = False) -> tuple[np.ndarray, np.ndarray]:
    ours = render(batch, CandleStyle(height=size, width=size, volume=volume))
    theirs = MplfinanceCandles(height=size, width=size, volume=volume).render(batch)
    return ours, theirs


# Measured on 40 simulated windows each at 128 x 128, 5 / 15 / 30 candles: 100 % on all three
# measures, and 1.2 / 2.3 / 2.6 % of pixels differ (bodies a column wider or narrower where W / n
# is not whole, anti-aliased wick ends). The mappings are made to coincide exactly
# (MplfinanceCandles._price_limits / _x_limits), so the thresholds leave 1 % for a price that lands
# within float rounding of a pixel boundary. The controls below show the measures are sharp: the
# next window's image scores 48 % on colour and 0 % on extent, y-limits half a row off 27 %.
@pytest.mark.parametrize("candles", [5, 15, 30])
def test_mplfinance_draws_each_candle_where_and_in_the_colour_ours_does(klines, candles):
    batch = windows_from_klines(klines, candles, WINDOWS)
    ours, theirs = both(batch, 128)
    ours_marks, their_marks = Marks.of(ours, candles), Marks.of(theirs, candles)
    assert ours_marks.lit.all() and their_marks.lit.all()
    assert (
        0.2 < ours_marks.green.mean() < 0.8
    )  # both colours occur, so colour agreement means something
    shares = agreement(ours_marks, their_marks)
    assert shares["colour"] >= 0.99, shares
    assert shares["extent"] >= 0.99, shares
    differing = (ours.max(axis=1) > LIT) != (theirs.max(axis=1) > LIT)
    assert differing.mean() <= 0.05


def test_the_measure_detects_a_mismatch(klines):
    """Control: our images against mplfinance's of the *next* window fail every threshold."""
    batch = windows_from_klines(klines, 15, WINDOWS)
    ours, theirs = both(batch, 128)
    shares = agreement(Marks.of(ours[:-1], 15), Marks.of(theirs[1:], 15))
    assert shares["colour"] < 0.8 and shares["extent"] < 0.2 and shares["extent_1px"] < 0.4, shares


def test_the_measure_detects_a_half_row_shift(klines, monkeypatch):
    """Control: y-limits moved by half a row (hi and lo on row centres, the obvious choice) leave
    the colours right and every top and bottom within a row, but about 3 in 4 of them a row off."""
    batch = windows_from_klines(klines, 15, WINDOWS)
    exact = MplfinanceCandles._price_limits

    def half_row_up(self, frame):
        lo, hi = exact(self, frame)
        half = (hi - lo) / self.price_rows / 2
        return lo + half, hi + half

    monkeypatch.setattr(MplfinanceCandles, "_price_limits", half_row_up)
    ours, theirs = both(batch, 128)
    shares = agreement(Marks.of(ours, 15), Marks.of(theirs, 15))
    assert shares["colour"] >= 0.99 and shares["extent"] < 0.5 and shares["extent_1px"] >= 0.99


def test_at_two_pixels_a_candle_mplfinance_still_agrees_on_95_percent(klines):
    """64 px for 30 candles: mplfinance spaces candles evenly 2.13 px apart while ours get 2 or 3
    whole columns, so a body can stray into its neighbour's columns. Measured: colour 99.8 %,
    tops and bottoms within a row 97.9 %."""
    batch = windows_from_klines(klines, 30, WINDOWS)
    shares = agreement(*(Marks.of(images, 30) for images in both(batch, 64)))
    assert shares["colour"] >= 0.99, shares
    assert shares["extent_1px"] >= 0.95, shares


def test_volume_bars_have_our_heights(klines):
    batch = windows_from_klines(klines, 15, 20)
    ours, theirs = both(batch, 128, volume=True)
    panel = 128 // 5
    assert not (theirs[:, :, -panel - 1].any())  # the blank row between the panels
    ours_bars, their_bars = (Marks.of(images[:, :, -panel:], 15) for images in (ours, theirs))
    heights = [panel - marks.top for marks in (ours_bars, their_bars)]
    assert (heights[0] == heights[1]).mean() >= 0.99  # measured 100 %
    price = agreement(Marks.of(ours[:, :, :-panel], 15), Marks.of(theirs[:, :, :-panel], 15))
    assert price["extent"] >= 0.99 and price["colour"] >= 0.99, price


def test_a_missing_candle_leaves_its_slot_blank_and_out_of_the_range(klines):
    batch = windows_from_klines(klines, 15, 6)
    present = batch.present.copy()
    present[:, 4] = False
    present[1, 0] = present[2, -1] = False  # first and last candles too
    high = batch.high.copy()
    high[:, 4] *= 1.05  # would set every window's range if it were drawn
    window = WindowBatch(batch.open, high, batch.low, batch.close, batch.volume, present, batch.ma)
    ours, theirs = both(window, 128)
    ours_marks, their_marks = Marks.of(ours, 15), Marks.of(theirs, 15)
    assert not their_marks.lit[~present].any() and not ours_marks.lit[~present].any()
    assert their_marks.lit[present].all()
    assert (ours_marks.top == their_marks.top)[present].mean() >= 0.99
    assert their_marks.top[present].min(axis=None) == 0  # the highest present high is on row 0


def test_a_window_with_nothing_present_is_black():
    prices = np.full((1, 5), 100.0)
    batch = WindowBatch(prices, prices, prices, prices, prices, np.zeros((1, 5), dtype=bool))
    assert not MplfinanceCandles(32, 32).render(batch).any()


def test_a_flat_window_is_drawn_on_the_middle_row():
    prices = np.full((1, 8), 100.0)
    batch = WindowBatch(prices, prices, prices, prices, prices, np.ones((1, 8), dtype=bool))
    for images in both(batch, 64):
        rows = np.flatnonzero(images[0].max(axis=(0, 2)) > LIT)
        assert rows.tolist() == [(64 - 1) // 2]


def test_close_equal_to_open_is_green_as_in_ours():
    """mplfinance colours close == open down; the renderer overrides those candles to up."""
    open_ = np.array([[100.0, 101.0, 102.0, 101.5]])
    close = np.array([[101.0, 101.0, 101.5, 101.5]])  # up, flat, down, flat
    batch = WindowBatch(
        open_,
        np.maximum(open_, close) + 1,
        np.minimum(open_, close) - 1,
        close,
        np.ones((1, 4)),
        np.ones((1, 4), dtype=bool),
    )
    ours, theirs = both(batch, 64)
    assert Marks.of(ours, 4).green.tolist() == [[True, True, False, True]]
    assert Marks.of(theirs, 4).green.tolist() == [[True, True, False, True]]
    # inside the bodies of the up candle (rows 32..47) and the down candle (rows 16..24)
    assert tuple(theirs[0, :, 40, 6]) == UP and tuple(theirs[0, :, 20, 16 * 2 + 6]) == DOWN
    # mplfinance has no override for volume bars: the flat candle's bar stays red (documented)
    with_volume = MplfinanceCandles(64, 64, volume=True).render(batch)
    assert tuple(with_volume[0, :, -1, 16 + 6]) == DOWN
    assert tuple(render(batch, CandleStyle(64, 64))[0, :, -1, 16 + 6]) == UP


def test_render_layout_and_one_reused_figure_without_pyplot(klines):
    import matplotlib.pyplot as plt

    figures_before = plt.get_fignums()
    renderer = MplfinanceCandles(height=48, width=40)
    images = renderer.render(windows_from_klines(klines, 10, 3))
    assert images.shape == (3, 3, 48, 40) and images.dtype == np.uint8
    assert plt.get_fignums() == figures_before
    with pytest.raises(ValueError, match="too narrow"):
        renderer.render(windows_from_klines(klines, 41, 1))


def test_windows_from_klines_are_consecutive_with_the_trailing_average(klines):
    batch = windows_from_klines(klines, 10, 3)
    close = klines["close"].to_numpy()
    assert batch.close.tolist() == close[9:39].reshape(3, 10).tolist()
    for candle in (9, 20, 38):  # the average of the 10 closes ending at each candle
        window, slot = divmod(candle - 9, 10)
        assert batch.ma[window, slot] == pytest.approx(close[candle - 9 : candle + 1].mean())
    assert batch.present.all()
    assert windows_from_klines(klines.head(29), 10).size == 2
    sliding = windows_from_klines(klines.head(40), 10, stride=1)
    assert sliding.size == 22 and sliding.close[21].tolist() == close[30:40].tolist()
    assert sliding.ma[1, 0] == pytest.approx(close[1:11].mean())
    with pytest.raises(ValueError, match="too few"):
        windows_from_klines(klines.head(18), 10)


def expected_picture_size(window_sizes: list[int], size: int, scale: int) -> tuple[int, int]:
    """(height, width) of side_by_side's layout: columns candle, mplfinance, ohlc_bar; a row per
    window, as tall as its tallest image plus the title band."""
    gap, title = image_preview.GAP_PX, image_preview.TITLE_PX
    ohlc_height = {5: 32, 15: 64, 30: 96}
    width = gap + 2 * (size * scale + gap) + 3 * max(window_sizes) * scale + gap
    height = gap + sum(max(size, ohlc_height[n]) * scale + title + gap for n in window_sizes)
    return height, width


def test_side_by_side_writes_one_png_of_three_upscaled_renders(klines, tmp_path):
    batches = [windows_from_klines(klines, n, 1) for n in (5, 30)]
    path = side_by_side(batches, tmp_path / "nested" / "picture.png", size=32, scale=3)
    picture = matplotlib.image.imread(path)
    assert picture.shape[:2] == expected_picture_size([5, 30], 32, 3)
    # the first candle image, pixel for pixel, 3 x 3 upscaled, below the gap and title band
    ours = render(batches[0], CandleStyle(32, 32, volume=False))[0].transpose(1, 2, 0)
    top = image_preview.GAP_PX + image_preview.TITLE_PX
    left = image_preview.GAP_PX
    placed = picture[top : top + 96, left : left + 96, :3]
    assert np.array_equal(np.round(placed * 255).astype(np.uint8), ours.repeat(3, 0).repeat(3, 1))


def test_render_sample_command_writes_the_picture(tmp_path):
    out = tmp_path / "images" / "sample.png"
    args = ["render-sample", "--out", str(out), "--window-size", "5", "--window-size", "15"]
    result = CliRunner().invoke(main, [*args, "--windows", "1", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in result.output
    assert matplotlib.image.imread(out).shape[:2] == expected_picture_size([5, 15], 64, 4)


def test_render_sample_refuses_more_candles_than_pixels(tmp_path):
    out = tmp_path / "sample.png"
    args = ["render-sample", "--out", str(out), "--window-size", "40", "--size", "32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "window size 40 does not fit 32 px" in result.output
    assert not out.exists()
