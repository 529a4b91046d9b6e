"""The Market page on the test lake: candles of the chosen series and days (at most MAX_BARS),
chosen indicators' values and one cell's test predictions on the same span."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest

from dagster_project.assets.catalog import CATALOG_VIEWS
from dagster_project.core.lake import LAKE_ENV_VAR, Lake, build_catalog, connect
from dagster_project.ingest.landing import land_day
from dagster_project.ingest.sources import SourceSettings, make_source
from dagster_project.transform.curate import curate_day
from tests.app.conftest import DAYS, HONEST, opened

pytestmark = pytest.mark.slow

MAX_BARS = 2000  # app/pages/market.py's cap


@pytest.fixture
def page(app_env):
    return opened("pages/market.py")


def chart_data(at) -> list[pl.DataFrame]:
    """Every dataset of the page's one chart, as frames."""
    chart = at.get("vega_lite_chart")
    assert len(chart) == 1
    return [
        pl.from_arrow(pa.ipc.open_stream(dataset.data.data).read_all())
        for dataset in chart[0].proto.datasets
    ]


def dataset_with(at, column: str) -> pl.DataFrame:
    """The largest dataset of the chart that has ``column``."""
    frames = [frame for frame in chart_data(at) if column in frame.columns]
    assert frames, f"no chart dataset with {column}"
    return max(frames, key=lambda frame: frame.height)


def candles(at) -> pl.DataFrame:
    return dataset_with(at, "bars_in_range")


def candle_caption(at) -> str:
    return next(c.value for c in at.caption if " candles, " in c.value)


def lake_rows(lake, sql: str, *params) -> pl.DataFrame:
    con = connect(lake.catalog_path, read_only=True)
    try:
        return con.sql(sql, params=list(params)).pl()
    finally:
        con.close()


def both_days(at):
    at.date_input(key="market_days").set_value(DAYS).run()
    assert not at.exception, at.exception
    return at


def test_the_default_days_are_the_last_of_the_cells_test_rows(page, app_env):
    assert page.selectbox(key="market_interval").value == "1m"
    assert page.selectbox(key="market_cell").value == HONEST.key
    test_end = lake_rows(
        app_env, "select max(test_end) as t from metrics where cell = ?", HONEST.key
    )["t"][0]
    last_test_day = (test_end - dt.timedelta(microseconds=1)).date()
    assert DAYS[0] <= last_test_day <= DAYS[1]
    expected = (max(DAYS[0], last_test_day - dt.timedelta(days=1)), last_test_day)
    assert page.date_input(key="market_days").value == expected
    assert dataset_with(page, "scorer").height > 0  # its predictions are in view


def test_two_days_chart_their_last_max_bars_candles(page, app_env):
    assert page.selectbox(key="market_interval").value == "1m"
    bars = candles(both_days(page))
    assert bars.height == MAX_BARS
    assert bars["bars_in_range"][0] == 2 * 24 * 60
    assert bars["open_time"].is_sorted() and bars["open_time"].n_unique() == MAX_BARS
    last = lake_rows(
        app_env,
        "select max(open_time) as t from klines where symbol = ? and interval = '1m'",
        HONEST.symbol,
    )["t"][0]
    assert bars["open_time"][-1].replace(tzinfo=None) == last.replace(tzinfo=None)
    assert candle_caption(page).startswith(
        f"{MAX_BARS} candles, 2024-03-01 14:40 to 2024-03-02 23:59"
    )
    assert f"the last {MAX_BARS} of the 2880" in candle_caption(page)


def test_a_coarser_interval_charts_every_candle_of_the_days(page):
    both_days(page).selectbox(key="market_interval").select("1h").run()
    assert not page.exception, page.exception
    bars = candles(page)
    assert bars.height == 48
    assert (bars["close_time"] - bars["open_time"]).max() < dt.timedelta(hours=1)
    assert candle_caption(page) == (
        f"48 candles, 2024-03-01 00:00 to 2024-03-02 23:00 UTC (at most {MAX_BARS} per chart)."
    )


def test_one_day_charts_that_days_candles_only(page):
    page.date_input(key="market_days").set_value((DAYS[0], DAYS[0])).run()
    assert not page.exception, page.exception
    bars = candles(page)
    assert bars.height == 24 * 60
    assert {t.date() for t in bars["open_time"]} == {DAYS[0]}
    assert candle_caption(page).startswith("1440 candles, 2024-03-01 00:00 to 2024-03-01 23:59")
    assert "the last" not in candle_caption(page)


def indicator_values(at) -> pl.DataFrame:
    return pl.concat(
        [frame for frame in chart_data(at) if {"indicator", "value"} <= set(frame.columns)]
    )


def test_a_chosen_indicator_adds_its_values_from_the_lake(page, app_env):
    chooser = page.multiselect(key="market_indicators")
    assert chooser.value == ["sma_20"]
    assert set(indicator_values(page)["indicator"]) == {"sma_20"}
    other = next(name for name in ("rsi_14", "ema_20") if name in chooser.options)
    chooser.select(other).run()
    assert not page.exception, page.exception
    shown = indicator_values(page)
    assert set(shown["indicator"]) == {"sma_20", other}
    mine = shown.filter(pl.col("indicator") == other).sort("decision_time")
    bars = candles(page)
    start, end = bars["open_time"][0], bars["close_time"][-1] + dt.timedelta(milliseconds=1)
    expected = lake_rows(
        app_env,
        f"select decision_time, {other} as value from indicators where symbol = ? and "
        f"interval = '1m' and decision_time > ? and decision_time <= ? and {other} is not null "
        "order by decision_time",
        HONEST.symbol,
        start,
        end,
    )
    assert mine.height == expected.height > bars.height // 2
    assert mine["value"].to_list() == pytest.approx(expected["value"].to_list())
    chooser.set_value([]).run()
    assert not any("indicator" in frame.columns for frame in chart_data(page))


def lake_predictions(lake, start, scorers) -> pl.DataFrame:
    return lake_rows(
        lake,
        "select scorer, decision_time, probability from predictions where cell = ? and "
        "split = 'test' and decision_time > ? and list_contains(?, scorer) "
        "order by scorer, decision_time",
        HONEST.key,
        start,
        scorers,
    )


def drawn_scorers(at) -> pl.DataFrame:
    return dataset_with(at, "scorer").sort("scorer", "decision_time")


def test_the_prediction_panel_shows_the_cells_model_by_default(page, app_env):
    assert page.selectbox(key="market_cell").value == HONEST.key
    caption = next(c.value for c in page.caption if c.value.startswith("Predictions:"))
    assert f"`{HONEST.key}`" in caption and "leakage control" not in caption
    assert page.multiselect(key="market_scorers").value == [HONEST.model]
    shown = drawn_scorers(page)
    expected = lake_predictions(app_env, candles(page)["open_time"][0], [HONEST.model])
    assert shown.height == expected.height > 0
    assert set(shown["scorer"]) == {HONEST.model}
    assert shown["probability"].to_list() == pytest.approx(expected["probability"].to_list())
    assert shown["probability"].is_between(0, 1).all()


def test_baselines_chosen_in_the_sidebar_join_the_panel(page, app_env):
    chooser = page.multiselect(key="market_scorers")
    assert {"majority", "persistence", "logistic_returns"} <= set(chooser.options)
    chooser.select("majority").run()
    assert not page.exception, page.exception
    shown = drawn_scorers(page)
    scorers = [HONEST.model, "majority"]
    expected = lake_predictions(app_env, candles(page)["open_time"][0], scorers)
    assert set(shown["scorer"]) == set(scorers)
    assert shown["probability"].to_list() == pytest.approx(expected["probability"].to_list())


def test_the_realised_up_rate_is_the_rolling_mean_of_the_test_labels(page, app_env):
    realised = next(
        frame
        for frame in chart_data(page)
        if set(frame.columns) == {"decision_time", "probability"}
    )
    bars = 60  # app/pages/market.py's REALISED_BARS
    expected = lake_rows(
        app_env,
        "select decision_time, avg(label) over (order by decision_time rows between ? preceding "
        "and current row) as rate, row_number() over (order by decision_time) as n "
        "from predictions where cell = ? and scorer = ? and split = 'test' and decision_time > ? "
        "qualify n >= ? order by decision_time",
        bars - 1,
        HONEST.key,
        HONEST.model,
        candles(page)["open_time"][0],
        bars,
    )
    assert realised.height == expected.height > 0
    assert realised["probability"].to_list() == pytest.approx(expected["rate"].to_list())


def test_no_cell_leaves_out_the_prediction_panel(page):
    page.selectbox(key="market_cell").select("(none)").run()
    assert not page.exception, page.exception
    assert not any("probability" in frame.columns for frame in chart_data(page))


GAP_START = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)
GAP_BARS = 10


@pytest.fixture
def gapped_lake(tmp_path, monkeypatch) -> Lake:
    """One simulated day of BTCUSDT 1m with 10 candles from 10:00 missing at the source,
    curated (which records the gap) and catalogued."""
    lake = Lake(tmp_path / "lake")
    source = make_source(SourceSettings(kind="simulator"), lake.root)
    day = DAYS[0]
    land_day(lake, source, HONEST.symbol, "1m", day)
    (keys,) = lake.partitions("raw", "klines")
    raw = lake.read_partition("raw", "klines", keys)
    gap_end = GAP_START + dt.timedelta(minutes=GAP_BARS)
    missing = pl.col("open_time").is_between(GAP_START, gap_end, closed="left")
    lake.write_partition("raw", "klines", keys, raw.filter(~missing))
    curate_day(lake, HONEST.symbol, day)
    build_catalog(lake, CATALOG_VIEWS)
    monkeypatch.setenv(LAKE_ENV_VAR, str(lake.root))
    return lake


def test_a_recorded_gap_is_shaded_and_never_filled(gapped_lake):
    at = opened("pages/market.py")
    assert any(f"1 gap(s), {GAP_BARS} missing candle(s)" in c.value for c in at.caption)
    gaps = dataset_with(at, "gap_start")
    assert gaps["missing_bars"].to_list() == [GAP_BARS]
    assert gaps["gap_start"][0] == GAP_START
    assert gaps["gap_end"][0] == GAP_START + dt.timedelta(minutes=GAP_BARS)  # exclusive
    bars = candles(at)
    assert bars.height == 24 * 60 - GAP_BARS
    assert not bars["open_time"].is_between(GAP_START, gaps["gap_end"][0], closed="left").any()
