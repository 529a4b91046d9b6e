"""The explorer in a real browser: ``streamlit run`` over the test lake, every page of the
navigation opened in headless Chromium, its title and real content visible, its charts drawn, no
exception box, and a screenshot of each page left in the test's tmp_path."""

from __future__ import annotations

import os

import pytest

from tests.app.browser import browser_page, chromium_path, served_app, show_every_page
from tests.app.conftest import SYMBOL

REQUIRE_ENV_VAR = "CANDLELAKE_REQUIRE_BROWSER"
# page title -> (a piece of real content of the test lake, whether the page draws vega charts)
EXPECTED = {
    "Leaderboard": ("What the original research reported, and why", True),
    "Market": (SYMBOL, True),
    "Images": ("the decision time", False),
    "Lake health": ("Asset checks", False),
    "SQL": ("klines", False),
}

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


def test_every_page_renders_in_chromium(chromium, app_lake, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    with (
        served_app(app_lake.root, dagster_home, tmp_path / "streamlit.log") as url,
        browser_page(chromium) as page,
    ):
        shown = show_every_page(page, url, tmp_path)
    assert [s.title for s in shown] == list(EXPECTED)
    for s in shown:
        content, charts = EXPECTED[s.title]
        assert s.errors == (), f"{s.title}: {s.errors}"
        assert s.title in s.text and content in s.text, f"{s.title}: {s.text[:2000]}"
        assert s.charts > 0 or not charts, f"{s.title} drew no chart"
        assert s.screenshot.stat().st_size > 10_000, s.screenshot
    assert next(s for s in shown if s.title == "Images").images >= 2
