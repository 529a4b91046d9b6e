"""The reference renderer: the same windows drawn by mplfinance (``type='candle'``).

``MplfinanceCandles`` draws each window of a ``WindowBatch`` with ``mplfinance.plot`` onto one
matplotlib figure that it keeps for every window (a ``Figure`` on its own ``FigureCanvasAgg``: no
pyplot, the global backend is left alone) and returns the pixels in the layout of
``ml.rendering.render``: uint8 ``(B, 3, H, W)``.

It is made to look as close to ``ml.rendering.CandleStyle`` as mplfinance allows: black background,
no axes or margins, the same green and red (opaque) for bodies, edges, wicks and volume bars,
one-pixel wicks, bodies of ``CandleStyle``'s mean width, and the same price-to-row and
candle-to-column mapping (see ``_price_limits`` and ``_x_limits``). Missing candles are rows of NaN,
which mplfinance leaves blank. On simulated windows at 128 x 128 px the top and bottom rows of
every candle's marks match ``CandleStyle``'s exactly (``tests/test_mpl_reference.py``).

What mplfinance cannot match:

* Candles sit at evenly spaced x positions with one width for all, while ``CandleStyle`` gives
  candle ``i`` the whole columns ``floor(i·W/n) ..``; where ``W / n`` is not whole, a body can be a
  column wider, narrower or further right than ``CandleStyle``'s. With two columns or fewer per
  candle a body can then touch its neighbour's columns.
* Shapes are anti-aliased; edges that fall between pixels blend into the background.
* ``close == open`` is *down* (red) in mplfinance and *up* (green) in ``CandleStyle``;
  ``marketcolor_overrides`` paint those candles green, but mplfinance has no override for volume
  bars, so their volume bar stays red.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ml.rendering import DOWN, UP, WindowBatch

DPI = 100  # any value works: sizes are in pixels and line widths are converted to points
ONE_PIXEL_POINTS = 72 / DPI
PRICE_COLUMNS = ("Open", "High", "Low", "Close", "Volume")


class MplfinanceCandles:
    """mplfinance candlestick charts of windows, drawn on one reused ``height`` x ``width`` px
    figure. With ``volume``, the bottom ``height // 5`` rows are a volume panel below a blank
    row, as in ``CandleStyle``."""

    def __init__(self, height: int = 64, width: int = 64, volume: bool = False) -> None:
        if height < 3:
            raise ValueError(f"an image needs at least 3 rows, got {height}")
        self.height, self.width = height, width
        self.volume_rows = height // 5 if volume else 0
        self.price_rows = height - self.volume_rows - (1 if self.volume_rows else 0)
        self.figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="black")
        self.canvas = FigureCanvasAgg(self.figure)
        self.price_axes = self.figure.add_axes(
            (0.0, 1 - self.price_rows / height, 1.0, self.price_rows / height)
        )
        self.volume_axes = (
            self.figure.add_axes((0.0, 0.0, 1.0, self.volume_rows / height), sharex=self.price_axes)
            if self.volume_rows
            else None
        )
        self.style = _mplfinance().make_mpf_style(marketcolors=_market_colours(), facecolor="black")
        self._indexes: dict[int, pd.DatetimeIndex] = {}

    def render(self, batch: WindowBatch) -> np.ndarray:
        """uint8 images ``(B, 3, H, W)``, as ``ml.rendering.render`` returns them."""
        if batch.candles > self.width:
            raise ValueError(f"{self.width} px is too narrow for {batch.candles} candles")
        out = np.empty((batch.size, 3, self.height, self.width), dtype=np.uint8)
        for row in range(batch.size):
            out[row] = self.render_frame(self.frame(batch, row))
        return out

    def frame(self, batch: WindowBatch, row: int) -> pd.DataFrame:
        """Window ``row`` as mplfinance takes it; a missing candle is a row of NaN."""
        n = batch.candles
        if n not in self._indexes:
            self._indexes[n] = pd.date_range("2024-01-01", periods=n, freq="min")
        present = batch.present[row]
        columns = {
            name: np.where(present, getattr(batch, name.lower())[row], np.nan)
            for name in PRICE_COLUMNS
        }
        return pd.DataFrame(columns, index=self._indexes[n])

    def render_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """One window's frame as uint8 ``(3, H, W)``."""
        axes = [a for a in (self.price_axes, self.volume_axes) if a is not None]
        for ax in axes:
            ax.clear()
        if frame["Close"].notna().any():
            self._plot(frame)
        for ax in axes:
            ax.set_axis_off()
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].transpose(2, 0, 1)

    def _plot(self, frame: pd.DataFrame) -> None:
        n = len(frame)
        body_px, _ = candle_columns(n, self.width)
        # the one-pixel edge line adds half a pixel on each side of a body or volume bar
        width = max(body_px - 1.0, 0.0) * n / self.width
        options = dict(
            type="candle",
            ax=self.price_axes,
            style=self.style,
            xlim=self._x_limits(n),
            ylim=self._price_limits(frame),
            update_width_config=dict(
                candle_width=width,
                candle_linewidth=ONE_PIXEL_POINTS,
                volume_width=width,
                volume_linewidth=ONE_PIXEL_POINTS,
            ),
            warn_too_much_data=n + 1,
        )
        flat = (frame["Close"] == frame["Open"]).to_numpy()
        if flat.any():
            options["marketcolor_overrides"] = [_hex(UP) if f else None for f in flat]
        if self.volume_axes is not None:
            options["volume"] = self.volume_axes
            options["volume_ylim"] = (0.0, _positive_max(frame["Volume"]))
        _mplfinance().plot(frame, **options)

    def _x_limits(self, n: int) -> tuple[float, float]:
        """Candle ``i`` (mplfinance draws it at x = i) over its ``W / n`` columns, moved left to
        where ``CandleStyle`` draws it. Agg snaps a one-pixel line at x to the column
        ``floor(x + 0.5)`` (columns counted from the left edge), so a body whose edge lines sit at
        x = first and x = first + body − 1 covers exactly ``CandleStyle``'s body columns: its
        centre is ``(spacing + 1) / 2`` px left of the slot's centre (the spacing column comes
        after the body), and a quarter pixel more puts an even body's wick on the left one of its
        two middle columns, as ``CandleStyle`` does."""
        _, spacing_px = candle_columns(n, self.width)
        shift = ((spacing_px + 1) / 2 + 0.25) * n / self.width
        return -0.5 + shift, n - 0.5 + shift

    def _price_limits(self, frame: pd.DataFrame) -> tuple[float, float]:
        """``CandleStyle`` draws price p on row ``floor(y + 0.5)`` with ``y = (hi − p) / (hi − lo)
        · (P − 1)``; Agg snaps a one-pixel line at y (from the top edge) to that same row. So y
        itself must be the axes coordinate: ``hi`` on the top edge and ``lo`` one row above the
        bottom edge, i.e. y-limits ``[lo − (hi − lo) / (P − 1), hi]``. A flat window is drawn at
        y = (P − 1) // 2, the middle row."""
        lo, hi = float(np.nanmin(frame["Low"])), float(np.nanmax(frame["High"]))
        rows = self.price_rows
        if hi > lo:
            return lo - (hi - lo) / (rows - 1), hi
        unit = max(abs(hi), 1.0) * 1e-6
        return lo - (rows - (rows - 1) // 2) * unit, hi + (rows - 1) // 2 * unit


def candle_columns(candles: int, width: int) -> tuple[float, float]:
    """``CandleStyle``'s mean body width and spacing in pixels: candle ``i`` owns the columns
    ``floor(i·W/n) .. floor((i+1)·W/n) − 1`` and leaves the last one blank when it owns three or
    more."""
    edges = (np.arange(candles + 1) * width) // candles
    owned = np.diff(edges)
    body = np.where(owned >= 3, owned - 1, owned)
    return float(body.mean()), float((owned - body).mean())


def _mplfinance():
    """mplfinance, imported on first use (it imports pandas and pyplot, about half a second)."""
    import mplfinance

    return mplfinance


def _market_colours() -> dict:
    colours = _mplfinance().make_marketcolors(
        up=_hex(UP),
        down=_hex(DOWN),
        edge="inherit",
        wick="inherit",
        volume="inherit",
        alpha=1.0,  # the default 0.9 blends the bodies with the background
    )
    # Volume bar edges: mplfinance darkens them by 10 % when they are given as the volume colours
    # themselves; the same colours written as RGB fractions keep them exact.
    colours["vcedge"] = {"up": _fractions(UP), "down": _fractions(DOWN)}
    return colours


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _fractions(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255 for c in rgb)


def _positive_max(volume: pd.Series) -> float:
    top = float(np.nanmax(volume)) if volume.notna().any() else 0.0
    return top if top > 0 else 1.0
