"""The explorer in a real browser: ``streamlit run`` over the test lake, every page of the
navigation opened in headless Chromium, its title and real content visible, its charts drawn, no
exception box, and a screenshot of each page left in the test's tmp_path."""

from __future__ import annotations

import os

import pytest

from dagster_project.core.lake import connect
from tests.app.browser import (
    browser_page,
    chromium_path,
    open_leaderboard_row,
    run_query,
    served_app,
    show_every_page,
    take,
)
from tests.app.conftest import HONEST, SYMBOL

REQUIRE_ENV_VAR = "CANDLELAKE_REQUIRE_BROWSER"
# page title -> (a piece of real content of the test lake, whether the page draws vega charts)
EXPECTED = {
    "Leaderboard": ("What the original research reported, and why", True),
    "Market": (SYMBOL, True),
    "Images": ("the decision time", False),
    "Lake health": ("Asset checks", False),
    "SQL": ("klines", False),
}

COUNT_BARS = "select symbol, interval, count(*) as bars from klines group by all order by all"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def chromium():
    path = chromium_path()
    if path is None:
        reason = "no Chromium at /usr/bin/chromium or $CHROMIUM (apt-get install chromium)"
        if os.environ.get(REQUIRE_ENV_VAR) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV_VAR}=1")
        pytest.skip(reason)
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.[test])")
    return path


@pytest.fixture(scope="module")
def served(chromium, app_lake, tmp_path_factory):
    """The app over the test lake and a Chromium page, for this module's tests."""
    logs = tmp_path_factory.mktemp("browser")
    dagster_home = logs / "dagster_home"
    dagster_home.mkdir()
    with (
        served_app(app_lake.root, dagster_home, logs / "streamlit.log") as url,
        browser_page(chromium) as page,
    ):
        yield url, page


def test_every_page_renders_in_chromium(served, tmp_path):
    url, page = served
    shown = show_every_page(page, url, tmp_path)
    assert [s.title for s in shown] == list(EXPECTED)
    for s in shown:
        content, charts = EXPECTED[s.title]
        assert s.errors == () and s.alerts == (), f"{s.title}: {s.errors} {s.alerts}"
        assert s.title in s.text and content in s.text, f"{s.title}: {s.text[:2000]}"
        assert s.charts > 0 or not charts, f"{s.title} drew no chart"
        assert s.screenshot.stat().st_size > 10_000, s.screenshot
    assert next(s for s in shown if s.title == "Images").images >= 2


def test_the_sql_page_answers_a_query_and_refuses_a_write_in_chromium(served, app_lake, tmp_path):
    url, page = served
    answered = run_query(page, f"{url}/sql_console", COUNT_BARS, tmp_path / "answered.png")
    assert answered.errors == () and answered.alerts == (), answered.alerts
    assert answered.tables == 1
    refused = run_query(page, f"{url}/sql_console", "drop view klines", tmp_path / "refused.png")
    assert refused.tables == 0 and refused.errors == ()
    assert len(refused.alerts) == 1 and "refused DROP" in refused.alerts[0], refused.alerts
    con = connect(app_lake.catalog_path, read_only=True)
    try:
        assert con.execute("select count(*) from klines").fetchone()[0] > 0  # still there
    finally:
        con.close()


def test_a_click_on_a_leaderboard_row_opens_that_cells_detail(served, tmp_path):
    url, page = served
    open_leaderboard_row(page, url, row=0)
    page.get_by_role("heading", name=f"Configuration of {HONEST.key}").wait_for()
    shown = take(page, "Leaderboard", url, tmp_path / "detail.png")
    assert shown.errors == () and shown.alerts == (), shown.alerts
    for heading in ("Learning curve", "Confusion matrix", "Calibration", "ROC curve"):
        assert heading in shown.text, heading
    assert shown.charts >= 6  # AUROC, learning curve, confusion, calibration, ROC, PR
