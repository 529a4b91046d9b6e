"""Market: a candlestick chart of any curated series and range, with chosen indicators overlaid
and one experiment cell's test predictions in a panel below, on the same time axis.

Altair on a temporal x axis: each candle sits at its own open..close time, so missing candles
leave empty space (and the recorded gaps of `kline_gaps` are shaded) rather than being closed up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import altair as alt
import polars as pl
import streamlit as st

from app.charts import tooltips
from app.data import query, require_catalog, view_columns
from dagster_project.core.klines import CURATED_INTERVALS
from ml.rendering import DOWN, UP

MAX_BARS = 2000  # candles per chart: more would not be readable (nor quick to draw)
MAX_PREDICTION_ROWS = 4 * MAX_BARS  # a cell's scorers: its model, three baselines
# Indicators on the price scale, drawn over the candles; every other one gets its own panel.
PRICE_SCALE_PREFIXES = (
    "sma_", "ema_", "bb_upper_", "bb_middle_", "bb_lower_", "keltner_", "donchian_", "hl2",
    "typical_price",
)  # fmt: skip
INDICATOR_KEYS = ("open_time", "decision_time", "date", "interval", "symbol")
DEFAULT_INDICATORS = ("sma_20",)
NO_CELL = "(none)"
CHART_WIDTH = 900
REALISED_BARS = 60  # the realised up-rate beside P(up): mean label of the last this many rows
REALISED = f"realised up-rate ({REALISED_BARS} bars)"
TIME_AXIS = alt.Axis(format="%m-%d %H:%M", labelOverlap=True)


def main() -> None:
    require_catalog()
    st.title("Market")
    series = query("market_series")
    if series.is_empty():
        st.info("The lake has no curated klines yet.")
        return
    symbol, interval, available = pick_series(series)
    cell = pick_cell(symbol, interval)
    first_day, last_day = pick_days(available, cell)
    candles = query(
        "market_candles",
        symbol=symbol,
        interval=interval,
        first_day=first_day,
        last_day=last_day,
        max_bars=MAX_BARS,
    )
    if candles.is_empty():
        st.info(f"No {symbol} {interval} candles from {first_day} to {last_day}.")
        return
    describe_range(candles)
    span = Span.of(symbol, interval, (first_day, last_day), candles)
    gaps = chart_gaps(span)
    indicators = chart_indicators(span, pick_indicators())
    predictions = chart_predictions(span, cell)
    panels = [price_panel(candles, gaps, indicators, span)]
    panels += [panel for panel in (other_indicator_panel(indicators, span),) if panel]
    if predictions is not None:
        panels.append(prediction_panel(predictions, pick_scorers(predictions), span))
    st.altair_chart(alt.vconcat(*panels).resolve_scale(x="shared", color="independent"))


@dataclass(frozen=True)
class Span:
    """The charted series and time span [start, end) of its candles, and the days they are in."""

    symbol: str
    interval: str
    first_day: dt.date
    last_day: dt.date
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def of(cls, symbol: str, interval: str, days: tuple[dt.date, dt.date], candles) -> Span:
        end = candles["close_time"][-1] + dt.timedelta(milliseconds=1)  # the next bar's open
        return cls(symbol, interval, *days, candles["open_time"][0], end)

    @property
    def keys(self) -> dict[str, object]:
        return {"symbol": self.symbol, "interval": self.interval}

    @property
    def days(self) -> dict[str, object]:
        return {"first_day": self.first_day, "last_day": self.last_day}

    @property
    def times(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end}

    def x_scale(self) -> alt.Scale:
        return alt.Scale(domain=[self.start.isoformat(), self.end.isoformat()])


def pick_series(series: pl.DataFrame) -> tuple[str, str, tuple[dt.date, dt.date]]:
    """The chosen symbol and interval, and the first and last day the lake has of them."""
    symbols = series["symbol"].unique(maintain_order=True).to_list()
    symbol = st.sidebar.selectbox("Symbol", symbols, key="market_symbol")
    rows = series.filter(pl.col("symbol") == symbol)
    intervals = sorted(rows["interval"].to_list(), key=interval_order)
    interval = st.sidebar.selectbox("Interval", intervals, key="market_interval")
    row = rows.filter(pl.col("interval") == interval).row(0, named=True)
    return symbol, interval, (row["first_day"], row["last_day"])


def pick_days(available: tuple[dt.date, dt.date], cell: dict | None) -> tuple[dt.date, dt.date]:
    """The days to chart; by default the last two days of the chosen cell's test rows (so its
    predictions are in view), else the series' last two days."""
    first, last = available
    anchor = last
    if cell is not None:
        test_last_day = (cell["test_end"] - dt.timedelta(microseconds=1)).date()
        anchor = min(max(test_last_day, first), last)
    default = (max(first, anchor - dt.timedelta(days=1)), anchor)
    chosen = st.sidebar.date_input(
        "Days (UTC)", value=default, min_value=first, max_value=last, key="market_days"
    )
    return (chosen[0], chosen[-1]) if chosen else default  # mid-selection: one end only


def interval_order(interval: str) -> int:
    return CURATED_INTERVALS.index(interval) if interval in CURATED_INTERVALS else 99


def describe_range(candles: pl.DataFrame) -> None:
    in_range = candles["bars_in_range"][0]
    first, last = candles["open_time"][0], candles["open_time"][-1]
    shown = f"{candles.height} candles, {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    if in_range > candles.height:
        st.caption(
            f"{shown}: the last {MAX_BARS} of the {in_range} in the chosen days "
            f"(at most {MAX_BARS} per chart; choose fewer days to see earlier ones)."
        )
    else:
        st.caption(f"{shown} (at most {MAX_BARS} per chart).")


def chart_gaps(span: Span) -> pl.DataFrame:
    if "kline_gaps" not in view_columns():
        return pl.DataFrame()
    gaps = query("market_gaps", **span.keys, **span.days, **span.times)
    if gaps.height:
        st.caption(
            f"{gaps.height} gap(s), {gaps['missing_bars'].sum()} missing candle(s), shaded grey: "
            "gaps are recorded, never filled."
        )
    return gaps


def pick_indicators() -> list[str]:
    columns = view_columns().get("indicators", [])
    names = [name for name, kind in columns if name not in INDICATOR_KEYS and kind == "DOUBLE"]
    if not names:
        return []
    default = [name for name in DEFAULT_INDICATORS if name in names]
    return st.sidebar.multiselect("Indicators", names, default=default, key="market_indicators")


def chart_indicators(span: Span, names: list[str]) -> pl.DataFrame:
    if not names:
        return pl.DataFrame(schema={"decision_time": pl.Datetime, "indicator": str, "value": float})
    return query("market_indicators", **span.keys, **span.days, **span.times, names=names)


def pick_cell(symbol: str, interval: str) -> dict | None:
    if "metrics" not in view_columns() or "predictions" not in view_columns():
        st.caption("No experiment results in the lake: no prediction panel.")
        return None
    cells = query("market_cells", symbol=symbol, interval=interval)
    if cells.is_empty():
        st.caption(f"No experiment cell of {symbol} {interval}: no prediction panel.")
        return None
    keys = [NO_CELL, *cells["cell"].to_list()]
    cell = st.sidebar.selectbox("Predictions of cell", keys, index=1, key="market_cell")
    return None if cell == NO_CELL else cells.filter(pl.col("cell") == cell).row(0, named=True)


def chart_predictions(span: Span, cell: dict | None) -> pl.DataFrame | None:
    if cell is None:
        return None
    predictions = query(
        "market_predictions", cell=cell["cell"], **span.times, max_rows=MAX_PREDICTION_ROWS
    )
    control = " (a leakage control, not a result)" if cell["is_control"] else ""
    st.caption(
        f"Predictions: P(up) of `{cell['label']}` by cell `{cell['cell']}`{control} on its test "
        f"rows ({cell['test_start']:%Y-%m-%d %H:%M} to {cell['test_end']:%Y-%m-%d %H:%M} UTC), "
        f"beside the baselines chosen in the sidebar on the same rows; grey: the {REALISED}, "
        "which a calibrated P(up) should follow."
    )
    if predictions.is_empty():
        st.info(
            f"None of this cell's test rows fall in the charted days: choose days from "
            f"{cell['test_start']:%Y-%m-%d} to {cell['test_end']:%Y-%m-%d} to see its predictions."
        )
        return None
    return predictions


def pick_scorers(predictions: pl.DataFrame) -> list[str]:
    """The scorers to draw: the cell's model by default, any of its baselines on request."""
    scorers = predictions.select("scorer", "role").unique()
    is_baseline = pl.col("role") == "baseline"
    default = scorers.filter(~is_baseline)["scorer"].sort().to_list()
    names = default + scorers.filter(is_baseline)["scorer"].sort().to_list()
    return st.sidebar.multiselect("Scorers", names, default=default, key="market_scorers")


def price_panel(
    candles: pl.DataFrame, gaps: pl.DataFrame, indicators: pl.DataFrame, span: Span
) -> alt.LayerChart:
    x = alt.X("open_time:T", title=None, scale=span.x_scale(), axis=TIME_AXIS)
    base = alt.Chart(candles).encode(
        x=x,
        color=alt.Color(
            "direction:N",
            scale=alt.Scale(domain=["up", "down"], range=[hex_colour(UP), hex_colour(DOWN)]),
            legend=None,
        ),
        tooltip=tooltips("open_time:T", "open:Q", "high:Q", "low:Q", "close:Q", "volume:Q"),
    )
    wicks = base.mark_rule().encode(
        x=alt.X("mid_time:T"),
        y=alt.Y("low:Q", title="price", scale=alt.Scale(zero=False)),
        y2=alt.Y2("high"),
    )
    bodies = base.mark_bar().encode(x2=alt.X2("close_time"), y=alt.Y("open:Q"), y2=alt.Y2("close"))
    layers = [wicks, bodies.add_params(alt.selection_interval(bind="scales", encodings=["x"]))]
    if gaps.height:
        layers.insert(0, gap_layer(gaps))
    overlay = indicators.filter(is_price_scale())
    if overlay.height:
        layers.append(indicator_lines(overlay, span))
    chart = alt.layer(*layers).resolve_scale(color="independent")  # candles' colours are fixed
    return chart.properties(width=CHART_WIDTH, height=320)


def gap_layer(gaps: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(gaps)
        .mark_rect(color="grey", opacity=0.25)
        .encode(
            x=alt.X("gap_start:T"),
            x2=alt.X2("gap_end"),
            tooltip=tooltips("gap_start:T", "missing_bars:Q"),
        )
    )


def is_price_scale() -> pl.Expr:
    return pl.any_horizontal(pl.col("indicator").str.starts_with(p) for p in PRICE_SCALE_PREFIXES)


def indicator_lines(indicators: pl.DataFrame, span: Span) -> alt.Chart:
    return (
        alt.Chart(indicators)
        .mark_line(strokeWidth=1.5)
        .encode(
            x=alt.X("decision_time:T", title=None, scale=span.x_scale(), axis=TIME_AXIS),
            y=alt.Y("value:Q", scale=alt.Scale(zero=False)),
            color=alt.Color("indicator:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=tooltips("decision_time:T", "indicator:N", "value:Q"),
        )
    )


def other_indicator_panel(indicators: pl.DataFrame, span: Span) -> alt.Chart | None:
    others = indicators.filter(~is_price_scale())
    if others.is_empty():
        return None
    return indicator_lines(others, span).properties(width=CHART_WIDTH, height=140)


def prediction_panel(predictions: pl.DataFrame, scorers: list[str], span: Span) -> alt.LayerChart:
    x = alt.X("decision_time:T", title=None, scale=span.x_scale(), axis=TIME_AXIS)
    y = alt.Y("probability:Q", title="P(up)", scale=alt.Scale(domain=[0, 1]))
    lines = (
        alt.Chart(predictions.filter(pl.col("scorer").is_in(scorers)))
        .mark_line(strokeWidth=1)
        .encode(
            x=x,
            y=y,
            color=alt.Color("scorer:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=tooltips("decision_time:T", "scorer:N", "role:N", "probability:Q", "label:Q"),
        )
    )
    realised = (
        alt.Chart(realised_up_rate(predictions))
        .mark_line(color="grey", strokeWidth=2)
        .encode(
            x=x,
            y=y,
            tooltip=[alt.Tooltip("decision_time:T"), alt.Tooltip("probability:Q", title=REALISED)],
        )
    )
    half = alt.Chart(pl.DataFrame({"p": [0.5]})).mark_rule(strokeDash=[4, 4]).encode(y=alt.Y("p:Q"))
    return alt.layer(realised, lines, half).properties(width=CHART_WIDTH, height=160)


def realised_up_rate(predictions: pl.DataFrame) -> pl.DataFrame:
    """The mean realised label of the last REALISED_BARS test rows (one scorer's rows: the labels
    are the same for every scorer), as a probability to draw beside P(up)."""
    rows = predictions.filter(pl.col("scorer") == predictions["scorer"][0]).sort("decision_time")
    rate = pl.col("label").cast(pl.Float64).rolling_mean(REALISED_BARS)
    return rows.select("decision_time", rate.alias("probability")).drop_nulls()


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


main()
