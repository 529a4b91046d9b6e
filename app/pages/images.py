"""Images: what a model sees. For one window (symbol, interval, dataset, window size, decision
time), our renders in both styles (``candle``, ``ohlc_bar``) beside mplfinance's render of the
same candles, with the window's label value and ``known_at``.

The window's candles come from the lake through ``ml.window_data`` (the loader training uses), so
the page shows exactly the pixels a model is trained on, not a re-implementation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
import streamlit as st

from app.data import catalog_mtime, query, require_catalog
from dagster_project.core.lake import Lake, connect
from ml.mpl_reference import MplfinanceCandles
from ml.rendering import CandleStyle, OhlcBarStyle, WindowBatch, render
from ml.window_data import WindowPartition, attach_labels, load_windows

DISPLAY_PX = 256  # images are upscaled by whole pixels (nearest neighbour) to about this size
CANDLE_STYLE = CandleStyle()  # the images assets' default: 64x64 RGB with volume
OHLC_STYLE = OhlcBarStyle()


@dataclass(frozen=True)
class WindowView:
    """One window's three renders (uint8, channels first) and its label."""

    images: tuple[tuple[str, np.ndarray], ...]
    label: str
    value: float | None
    known_at: dt.datetime | None


def main() -> None:
    lake = require_catalog()
    st.title("Images")
    series = query("images_series")
    if series.is_empty():
        st.info("The lake has no windows yet.")
        return
    part = pick_partition(series)
    windows = query(
        "images_decision_times",
        symbol=part.symbol,
        interval=part.interval,
        dataset=part.dataset,
        window_size=part.window_size,
        day=part.day,
    )
    if windows.is_empty():
        st.info(f"No {part.dataset} windows of {part.symbol} {part.interval} on {part.day}.")
        return
    decision_time = st.sidebar.selectbox(
        "Decision time (UTC)",
        windows["decision_time"].to_list(),
        format_func=lambda t: f"{t:%Y-%m-%d %H:%M}",
        key="images_decision_time",
    )
    view = window_view(str(lake.root), part, decision_time, catalog_mtime())
    show(view, part, decision_time)


def pick_partition(series: pl.DataFrame) -> WindowPartition:
    rows = series
    chosen = {}
    for column, title in (("symbol", "Symbol"), ("interval", "Interval"), ("dataset", "Dataset")):
        options = rows[column].unique(maintain_order=True).to_list()
        chosen[column] = st.sidebar.selectbox(title, options, key=f"images_{column}")
        rows = rows.filter(pl.col(column) == chosen[column])
    sizes = rows["window_size"].to_list()
    window_size = st.sidebar.selectbox("Window size (candles)", sizes, key="images_window_size")
    row = rows.filter(pl.col("window_size") == window_size).row(0, named=True)
    day = st.sidebar.date_input(
        "Day (UTC)",
        value=row["last_day"],
        min_value=row["first_day"],
        max_value=row["last_day"],
        key="images_day",
    )
    return WindowPartition(day=day, window_size=window_size, **chosen)


# cache_resource, not cache_data: the page runs as __main__ under `streamlit run`, where a
# dataclass defined here cannot be pickled; the renders are only displayed, never mutated.
@st.cache_resource(show_spinner="Rendering the window…", max_entries=64)
def window_view(
    lake_root: str, part: WindowPartition, decision_time: dt.datetime, mtime: float | None
) -> WindowView:
    """The renders of the window of ``part`` ending at ``decision_time`` (``mtime``: the
    catalog's, so a rebuilt lake is read again)."""
    lake = Lake(lake_root)
    con = connect()
    try:
        batch, frame = load_windows(lake, con, part)
    finally:
        con.close()
    frame = attach_labels(lake, part, frame)
    rows = np.flatnonzero((frame["decision_time"] == decision_time).to_numpy())
    if rows.size == 0:
        raise LookupError(f"no window of {part} ends at {decision_time}")
    window = batch.take(rows[:1])
    labelled = frame.row(int(rows[0]), named=True)
    return WindowView(renders(window), labelled["label"], labelled["value"], labelled["known_at"])


def renders(window: WindowBatch) -> tuple[tuple[str, np.ndarray], ...]:
    height, width = CANDLE_STYLE.size_for(window.candles)
    bar_height, bar_width = OHLC_STYLE.size_for(window.candles)
    reference = MplfinanceCandles(height=height, width=width, volume=CANDLE_STYLE.volume)
    return (
        (f"ours: candle {width}x{height}", render(window, CANDLE_STYLE)[0]),
        (f"mplfinance reference {width}x{height}", reference.render(window)[0]),
        (f"ours: ohlc_bar {bar_width}x{bar_height}", render(window, OHLC_STYLE)[0]),
    )


def show(view: WindowView, part: WindowPartition, decision_time: dt.datetime) -> None:
    st.caption(
        f"{part.symbol} {part.interval}, dataset `{part.dataset}`, {part.window_size} candles "
        f"ending at {decision_time:%Y-%m-%d %H:%M} UTC (the decision time)."
    )
    for column, (title, image) in zip(st.columns(len(view.images)), view.images, strict=True):
        column.image(upscaled(image), caption=title)
    if view.value is None:
        st.markdown(f"Label `{view.label}`: not in the lake (its future has not landed).")
        return
    st.markdown(
        f"Label `{view.label}` = **{view.value:g}**, known at "
        f"**{view.known_at:%Y-%m-%d %H:%M} UTC** ({view.known_at - decision_time} after the "
        "decision: a model never sees it in the window)."
    )


def upscaled(image: np.ndarray) -> np.ndarray:
    """A channels-first uint8 image as channels-last (or 2-D for one channel), each pixel
    repeated so the longer side is about ``DISPLAY_PX``."""
    scale = max(1, DISPLAY_PX // max(image.shape[1:]))
    big = image.repeat(scale, axis=1).repeat(scale, axis=2)
    return big[0] if big.shape[0] == 1 else np.moveaxis(big, 0, -1)


main()
