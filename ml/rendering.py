"""Candlestick images of kline windows: a vectorised numpy renderer in two styles.

``render(batch, style)`` turns a batch of windows (``WindowBatch``: open/high/low/close/volume of
``n`` candles each, a mask of the candles present, optionally a moving average) into uint8 images
of shape ``(B, C, H, W)`` (channels first, as torch takes them) with array operations over the
whole batch: no per-image Python and no plotting library. The same window always gives the same
bytes.

Styles (pixel geometry; row 0 is the top, column 0 the left):

* ``CandleStyle`` — the seed's look: RGB, dark background; candle ``i`` owns the columns
  ``floor(i·W/n) .. floor((i+1)·W/n) − 1``; its last column is left blank as spacing when it owns
  three or more. The body fills the others from the row of ``max(open, close)`` to the row of
  ``min(open, close)`` (at least one row); the wick is the body's centre column
  (``first + (body_width − 1) // 2``) from the row of ``high`` to the row of ``low``. Up candles
  (``close >= open``) are green, down candles red. With ``volume=True`` the bottom
  ``H // 5`` rows are a volume panel (one blank row above it): each candle's body columns get a
  bar of ``round(volume / max volume · panel rows)`` rows in its colour.
* ``OhlcBarStyle`` — the chart of Jiang, Kelly & Xiu (2023), "(Re-)Imag(in)ing Price Trends":
  one channel, black background, white (255) marks, exactly 3 columns per candle: the open tick
  at column ``3i`` on the open's row, the high–low bar at ``3i + 1``, the close tick at ``3i + 2``.
  The moving average of the close over the window length (``WindowBatch.ma``) is a line: a pixel
  at each candle's centre column, joined to the next candle's by one pixel per column in between
  at the rounded linear interpolation of their rows. Volume bars (centre column) fill the bottom
  ``H // 5`` rows, one blank row above. Heights default to 32/64/96 rows for up to 5/20/60
  candles, as in the paper.

Prices map to rows linearly over the window's range: ``lo`` = the lowest low (and moving
average, in ``ohlc_bar``) of the present candles, ``hi`` the highest high; price ``p`` is drawn on
row ``floor((hi − p) / (hi − lo) · (P − 1) + 0.5)`` of the ``P`` price rows. A flat window
(``hi == lo``) is drawn on the middle row ``(P − 1) // 2``; zero volume draws no bar. Missing
candles (``present`` false: the irregular datasets) leave every one of their columns blank and are
left out of the price and volume ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND = (0, 0, 0)  # black: the candle renderer paints marks onto zeros
UP = (38, 166, 91)  # green
DOWN = (234, 57, 67)  # red
# Batches are rendered in chunks of about this many output bytes: it bounds the temporary arrays
# and keeps them in cache (measured fastest at 8 MiB for both 64² and 224² images).
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class WindowBatch:
    """``B`` windows of ``n`` candles, oldest first; arrays of shape ``(B, n)``."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    present: np.ndarray  # bool: False for a candle removed from the window (irregular datasets)
    ma: np.ndarray | None = None  # moving average of close over the window length; NaN = unknown

    def __post_init__(self) -> None:
        shape = np.shape(self.close)
        if len(shape) != 2 or shape[1] == 0:
            raise ValueError(f"a WindowBatch needs arrays of shape (windows, candles), got {shape}")
        for name in ("open", "high", "low", "volume", "present", "ma"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise ValueError(f"WindowBatch.{name} has shape {np.shape(value)}, not {shape}")

    @property
    def size(self) -> int:
        return int(np.shape(self.close)[0])

    @property
    def candles(self) -> int:
        return int(np.shape(self.close)[1])

    def take(self, rows: slice | np.ndarray) -> WindowBatch:
        fields = {k: None if v is None else v[rows] for k, v in self.__dict__.items()}
        return WindowBatch(**fields)


@dataclass(frozen=True)
class CandleStyle:
    """The seed's candlestick chart: RGB, green up / red down candles on a dark background."""

    height: int = 64
    width: int = 64
    volume: bool = True
    name: str = "candle"
    channels: int = 3

    def size_for(self, candles: int) -> tuple[int, int]:
        if self.width < candles:
            raise ValueError(f"{self.width} px is too narrow for {candles} candles (1 px each)")
        return self.height, self.width


@dataclass(frozen=True)
class OhlcBarStyle:
    """Jiang, Kelly & Xiu's OHLC bar chart: 3 px per candle, one channel, MA line, volume."""

    height: int | None = None  # None: 32 / 64 / 96 rows for up to 5 / 20 / 60 candles
    moving_average: bool = True
    volume: bool = True
    name: str = "ohlc_bar"
    channels: int = 1

    def size_for(self, candles: int) -> tuple[int, int]:
        height = self.height or default_ohlc_height(candles)
        return height, 3 * candles


Style = CandleStyle | OhlcBarStyle
STYLES: dict[str, type[CandleStyle] | type[OhlcBarStyle]] = {
    "candle": CandleStyle,
    "ohlc_bar": OhlcBarStyle,
}


def default_ohlc_height(candles: int) -> int:
    """The paper's heights: 32 rows for 5 days, 64 for 20, 96 for 60 (and beyond)."""
    return 32 if candles <= 5 else 64 if candles <= 20 else 96


def render(batch: WindowBatch, style: Style | None = None) -> np.ndarray:
    """uint8 images ``(B, C, H, W)``, channels first as torch takes them (C = 3, RGB, for
    ``candle``; 1 for ``ohlc_bar``)."""
    style = style or CandleStyle()
    height, width = style.size_for(batch.candles)
    out = np.empty((batch.size, style.channels, height, width), dtype=np.uint8)
    step = max(1, CHUNK_BYTES // (style.channels * height * width))
    for first in range(0, batch.size, step):
        chunk = batch.take(slice(first, first + step))
        if isinstance(style, CandleStyle):
            _render_candles(chunk, style, out[first : first + step])
        else:
            out[first : first + step, 0] = _render_ohlc_bars(chunk, style, height)
    return out


@dataclass(frozen=True)
class _Panels:
    """Row layout: ``price_rows`` rows of prices on top, a blank row, ``volume_rows`` at the
    bottom (no volume panel: all rows are price rows)."""

    height: int
    volume_rows: int

    @classmethod
    def of(cls, height: int, volume: bool) -> _Panels:
        if height < 3:
            raise ValueError(f"an image needs at least 3 rows, got {height}")
        return cls(height, height // 5 if volume else 0)

    @property
    def price_rows(self) -> int:
        return self.height - self.volume_rows - (1 if self.volume_rows else 0)


def _price_rows(prices: list[np.ndarray], present: np.ndarray, price_rows: int) -> list[np.ndarray]:
    """The row of each price (int32, same shapes), scaled per window over its present candles."""
    stacked = np.stack(prices)
    valid = present[None] & ~np.isnan(stacked)
    lo = np.where(valid, stacked, np.inf).min(axis=(0, 2))[:, None]
    hi = np.where(valid, stacked, -np.inf).max(axis=(0, 2))[:, None]
    span = hi - lo
    flat = ~(span > 0)
    scale = np.where(flat, 0.0, (price_rows - 1) / np.where(flat, 1.0, span))
    middle = (price_rows - 1) // 2
    rows = []
    for price in prices:
        exact = np.where(flat, middle, (hi - price) * scale)
        rows.append(np.floor(np.nan_to_num(exact, nan=-1.0) + 0.5).astype(np.int32))
    return rows


def _volume_heights(batch: WindowBatch, volume_rows: int) -> np.ndarray:
    volume = np.where(batch.present, np.nan_to_num(batch.volume, nan=0.0), 0.0)
    volume = np.maximum(volume, 0.0)
    top = volume.max(axis=1, keepdims=True)
    share = np.where(top > 0, volume / np.where(top > 0, top, 1.0), 0.0)
    return np.floor(share * volume_rows + 0.5).astype(np.int32)


def _column_slots(candles: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: its candle, and whether it is a body column / the wick column."""
    columns = np.arange(width)
    first = (np.arange(candles) * width) // candles
    last = (np.arange(1, candles + 1) * width) // candles - 1
    owner = np.searchsorted(first, columns, side="right") - 1
    owned = last - first + 1
    body_width = np.where(owned >= 3, owned - 1, owned)
    offset = columns - first[owner]
    is_body = offset < body_width[owner]
    wick = first + (body_width - 1) // 2
    is_wick = columns == wick[owner]
    return owner, is_body, is_wick


def _render_candles(batch: WindowBatch, style: CandleStyle, out: np.ndarray) -> None:
    """Draws the batch into ``out`` (B, 3, H, W)."""
    height, width = out.shape[2:]
    panels = _Panels.of(height, style.volume)
    top_body, bottom_body, top_wick, bottom_wick = _price_rows(
        [
            np.maximum(batch.open, batch.close),
            np.minimum(batch.open, batch.close),
            batch.high,
            batch.low,
        ],
        batch.present,
        panels.price_rows,
    )
    # profiles are built column-major, (B, 3, column, H): gathering whole columns is contiguous
    # copies, and one transposing copy into ``out`` is 2.5x cheaper than gathering pixels
    rows = np.arange(height, dtype=np.int32)[None, None, :]  # (1, 1, H) against (B, n, 1)
    body = (rows >= top_body[..., None]) & (rows <= bottom_body[..., None])
    wick = (rows >= top_wick[..., None]) & (rows <= bottom_wick[..., None])
    if panels.volume_rows:
        bars = _volume_heights(batch, panels.volume_rows)
        body |= rows >= (height - bars)[..., None]
    # each candle's body column and wick column, per channel; column 2n stays background (0)
    n = batch.candles
    colours = np.where(
        batch.present[..., None],
        np.where((batch.close >= batch.open)[..., None], UP, DOWN),
        BACKGROUND,
    ).astype(np.uint8)  # (B, n, 3)
    profiles = np.zeros((batch.size, 3, 2 * n + 1, height), dtype=np.uint8)
    with_wick = body | wick
    for channel in range(3):
        colour = colours[:, :, channel, None]  # (B, n, 1)
        profiles[:, channel, :n] = body * colour
        profiles[:, channel, n : 2 * n] = with_wick * colour
    owner, is_body, is_wick = _column_slots(n, width)
    source = np.where(is_wick, n + owner, np.where(is_body, owner, 2 * n))
    columns = np.take(profiles, source, axis=2, mode="wrap")  # indices are always in range
    np.copyto(out, columns.transpose(0, 1, 3, 2))


def _render_ohlc_bars(batch: WindowBatch, style: OhlcBarStyle, height: int) -> np.ndarray:
    panels = _Panels.of(height, style.volume)
    n = batch.candles
    ma = (
        batch.ma
        if (style.moving_average and batch.ma is not None)
        else np.full((batch.size, n), np.nan)
    )
    open_row, close_row, high_row, low_row, ma_row = _price_rows(
        [batch.open, batch.close, batch.high, batch.low, ma], batch.present, panels.price_rows
    )
    rows = np.arange(height, dtype=np.int32)[None, :, None]  # (1, H, 1)
    present = batch.present[:, None]
    image = np.zeros((batch.size, height, 3 * n), dtype=bool)
    image[..., 0::3] = (rows == open_row[:, None]) & present
    bar = (rows >= high_row[:, None]) & (rows <= low_row[:, None])
    if panels.volume_rows:
        bars = _volume_heights(batch, panels.volume_rows)
        bar |= rows >= (height - bars)[:, None]
    image[..., 1::3] = bar & present
    image[..., 2::3] = (rows == close_row[:, None]) & present
    if style.moving_average:
        image |= _moving_average_line(ma, ma_row, batch.present, height)
    return np.where(image, np.uint8(255), np.uint8(0))


def _moving_average_line(
    ma: np.ndarray, ma_row: np.ndarray, present: np.ndarray, height: int
) -> np.ndarray:
    """(B, H, 3n) pixels of the MA line: a pixel at each candle's centre column, and one per
    column between two neighbouring candles that both have one, at the rounded interpolation."""
    size, n = ma.shape
    drawn = present & ~np.isnan(ma)
    exact_row = np.where(drawn, ma_row, 0).astype(np.float64)
    # columns 3i+1 (centre), 3i+2 and 3i+3 (1/3 and 2/3 of the way to candle i+1)
    fraction = np.array([0.0, 1 / 3, 2 / 3])
    following = np.concatenate([exact_row[:, 1:], exact_row[:, -1:]], axis=1)
    joined = np.concatenate([drawn[:, :-1] & drawn[:, 1:], np.zeros((size, 1), bool)], axis=1)
    line_rows = np.floor(
        exact_row[..., None] + (following - exact_row)[..., None] * fraction + 0.5
    ).astype(np.int32)  # (B, n, 3)
    visible = np.stack([drawn, joined, joined], axis=2)
    # candle i's centre column is 3i+1, so its three line columns are 3i+1 .. 3i+3
    columns = np.full((size, 3 * n + 1), -1, dtype=np.int32)
    columns[:, 1:] = np.where(visible, line_rows, -1).reshape(size, 3 * n)
    line_columns = columns[:, : 3 * n]  # drops the column past the last candle
    # a missing candle's own columns stay blank, even where a line would cross them
    blank = np.repeat(~present, 3, axis=1)
    line_columns = np.where(blank, -1, line_columns)
    rows = np.arange(height, dtype=np.int32)[None, :, None]
    return rows == line_columns[:, None, :]
