"""Windows straight from a klines frame, and a picture comparing the renderers on them.

``windows_from_klines`` cuts a polars klines frame (e.g. ``simulate_klines``) into a ``WindowBatch``
of consecutive windows, without a lake. ``side_by_side`` writes one PNG: per window, our
``candle`` render, mplfinance's (``ml.mpl_reference``) and our ``ohlc_bar`` render, each upscaled
by whole pixels (nearest neighbour) so single pixels stay visible. ``sample_picture`` does both on
simulated klines (``candlelake render-sample``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ml.mpl_reference import MplfinanceCandles
from ml.rendering import CandleStyle, OhlcBarStyle, WindowBatch, render

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
TITLE_PX = 22  # band above each panel for its title
GAP_PX = 12  # space between panels
BACKGROUND = "#d0d0d0"  # light grey, so the black images show their edges
DPI_OUT = 100
SAMPLE_SYMBOL, SAMPLE_INTERVAL = "BTCUSDT", "1m"
SAMPLE_START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def windows_from_klines(
    klines: pl.DataFrame, window_size: int, count: int | None = None, stride: int | None = None
) -> WindowBatch:
    """Windows of ``window_size`` consecutive candles (oldest first) starting every ``stride``
    candles (default ``window_size``: back to back), at most ``count`` of them; each candle
    carries the moving average of the close over the ``window_size`` candles ending at it. The
    first window starts after ``window_size − 1`` candles of history, so every average is known;
    the frame's rows are taken as consecutive candles in ``open_time`` order."""
    stride = stride or window_size
    if window_size < 1 or stride < 1:
        raise ValueError(f"window_size and stride must be at least 1, got {window_size}, {stride}")
    frame = klines.sort("open_time").with_columns(
        pl.col("close").rolling_mean(window_size).alias("moving_average")
    )
    usable = frame.height - 2 * (window_size - 1)  # candles a window can start on
    available = (usable - 1) // stride + 1 if usable > 0 else 0
    count = available if count is None else min(count, available)
    if count < 1:
        raise ValueError(
            f"{frame.height} candles are too few for one window of {window_size} "
            f"after {window_size - 1} candles of history"
        )
    starts = window_size - 1 + stride * np.arange(count)
    rows = starts[:, None] + np.arange(window_size)  # (count, window_size) row numbers

    def matrix(column: str) -> np.ndarray:
        return frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()[rows]

    prices = {c: matrix(c) for c in PRICE_COLUMNS}
    present = np.ones((count, window_size), dtype=bool)
    return WindowBatch(**prices, present=present, ma=matrix("moving_average"))


def sample_picture(
    path: str | Path,
    window_sizes: Sequence[int] = (30,),
    windows: int = 2,
    seed: int | None = None,
    size: int = 64,
) -> Path:
    """``side_by_side`` of ``windows`` consecutive windows of each size, cut from simulated
    BTCUSDT 1m klines (``seed``: the simulator's; None: its default)."""
    from dagster_project.core.klines import TimeRange
    from dagster_project.ingest.simulator import SimulatorConfig, simulate_klines

    candles = max(window_sizes) * (windows + 1) - 1  # warm-up for the moving average, then windows
    config = SimulatorConfig() if seed is None else SimulatorConfig(seed=seed)
    time_range = TimeRange(SAMPLE_START, SAMPLE_START + dt.timedelta(minutes=candles))
    klines = simulate_klines(SAMPLE_SYMBOL, SAMPLE_INTERVAL, time_range, config)
    batches = [windows_from_klines(klines, n, windows) for n in window_sizes]
    return side_by_side(batches, path, size)


def side_by_side(
    batches: WindowBatch | Sequence[WindowBatch],
    path: str | Path,
    size: int = 64,
    scale: int | None = None,
) -> Path:
    """Writes one PNG with a row per window (every window of every batch): our ``candle`` render
    (``size``² RGB, no volume), mplfinance's render of the same window at the same size, and our
    ``ohlc_bar`` render (default height), each upscaled ``scale`` times (default: to about 256 px
    for the candle images). Returns the path."""
    batches = [batches] if isinstance(batches, WindowBatch) else list(batches)
    rows = [row for batch in batches for row in _panel_row(batch, size)]
    if not rows:
        raise ValueError("no windows to draw")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = _compose(rows, scale or max(1, 256 // size))
    figure.savefig(path, dpi=DPI_OUT, facecolor=BACKGROUND)
    return path


def _panel_row(batch: WindowBatch, size: int) -> list[list[tuple[str, np.ndarray]]]:
    """Per window: (title, RGB image H x W x 3) for each of the three renders."""
    n = batch.candles
    ours = render(batch, CandleStyle(height=size, width=size, volume=False))
    theirs = MplfinanceCandles(height=size, width=size, volume=False).render(batch)
    bars = render(batch, OhlcBarStyle())
    return [
        [
            (f"candle {n} ({size}²)", _channels_last(ours[i])),
            (f"mplfinance {n} ({size}²)", _channels_last(theirs[i])),
            (f"ohlc_bar {n} ({bars.shape[2]}×{bars.shape[3]})", _channels_last(bars[i])),
        ]
        for i in range(batch.size)
    ]


def _channels_last(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3); one channel becomes grey."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


def _compose(rows: list[list[tuple[str, np.ndarray]]], scale: int) -> Figure:
    """A figure whose pixels are the upscaled images placed on a grid, with a title above each."""
    columns = len(rows[0])
    cell_w = [max(r[c][1].shape[1] for r in rows) * scale + GAP_PX for c in range(columns)]
    cell_h = [max(img.shape[0] for _, img in r) * scale + TITLE_PX + GAP_PX for r in rows]
    width, height = sum(cell_w) + GAP_PX, sum(cell_h) + GAP_PX
    figure = Figure(figsize=(width / DPI_OUT, height / DPI_OUT), dpi=DPI_OUT)
    FigureCanvasAgg(figure)
    top = GAP_PX
    for row, row_h in zip(rows, cell_h, strict=True):
        left = GAP_PX
        for (title, image), col_w in zip(row, cell_w, strict=True):
            big = image.repeat(scale, axis=0).repeat(scale, axis=1)
            # figimage offsets are from the bottom left; images are drawn unresampled
            figure.figimage(big, xo=left, yo=height - top - TITLE_PX - big.shape[0], origin="upper")
            figure.text(
                left / width, 1 - (top + TITLE_PX / 2) / height, title, va="center", fontsize=10
            )
            left += col_w
        top += row_h
    return figure
