"""The Images page on the test lake: one window's three renders (ours in both styles and the
mplfinance reference) with its label value and when that label is known."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from dagster_project.core.lake import connect
from tests.app.conftest import DAYS, SYMBOL, opened

pytestmark = pytest.mark.slow

KNOWN_AT = re.compile(r"known at \*\*(\d{4}-\d\d-\d\d \d\d:\d\d) UTC\*\*")


@pytest.fixture
def page(app_env):
    return opened("pages/images.py")


def label_text(at) -> str:
    texts = [m.value for m in at.markdown if m.value.startswith("Label `")]
    assert len(texts) == 1, texts
    return texts[0]


def known_at(at) -> dt.datetime:
    found = KNOWN_AT.search(label_text(at))
    assert found, label_text(at)
    return dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M")


def lake_label(lake, at, decision_time: dt.datetime) -> dict:
    """The label row the page's window pairs with, read from the lake directly."""
    part = {k: at.selectbox(key=f"images_{k}").value for k in ("interval", "dataset")}
    con = connect(lake.catalog_path, read_only=True)
    try:
        rows = con.sql(
            "select w.label, l.value, l.known_at from windows w join labels l using "
            "(symbol, interval, decision_time, label) where w.symbol = ? and w.interval = ? "
            "and w.dataset = ? and w.window_size = ? and w.decision_time = ?",
            params=[SYMBOL, part["interval"], part["dataset"],
                    at.selectbox(key="images_window_size").value, decision_time],
        ).pl()  # fmt: skip
    finally:
        con.close()
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def test_the_page_shows_three_renders_of_the_window(page):
    assert not page.error
    assert page.selectbox(key="images_symbol").value == SYMBOL
    assert page.date_input(key="images_day").value == DAYS[-1]
    images = page.image
    assert len(images) == 3
    captions = [caption for image in images for caption in image.captions]
    assert [c.split(" ")[0:2] for c in captions] == [
        ["ours:", "candle"],
        ["mplfinance", "reference"],
        ["ours:", "ohlc_bar"],
    ]
    urls = [url for image in images for url in image.value]
    assert len(urls) == 3 and all(urls) and len(set(urls)) == 3
    size = page.selectbox(key="images_window_size").value
    assert f"{size} candles ending at " in page.caption[0].value


def test_the_label_value_and_when_it_is_known_are_shown(page, app_env):
    picker = page.selectbox(key="images_decision_time")
    decision_time = picker.value
    assert f"{decision_time:%Y-%m-%d %H:%M}" == picker.options[0]
    expected = lake_label(app_env, page, decision_time)
    text = label_text(page)
    assert text.startswith(f"Label `{expected['label']}` = **{expected['value']:g}**")
    assert known_at(page) == expected["known_at"].replace(tzinfo=None, second=0, microsecond=0)
    assert known_at(page) > decision_time.replace(tzinfo=None)


def test_another_decision_time_changes_the_known_at(page, app_env):
    first = known_at(page)
    page.selectbox(key="images_decision_time").select_index(10).run()
    assert not page.exception, page.exception
    decision_time = page.selectbox(key="images_decision_time").value
    assert (
        f"{decision_time:%Y-%m-%d %H:%M}" == page.selectbox(key="images_decision_time").options[10]
    )
    expected = lake_label(app_env, page, decision_time)
    assert known_at(page) == expected["known_at"].replace(tzinfo=None, second=0, microsecond=0)
    assert known_at(page) - first == dt.timedelta(minutes=10 * 15) != dt.timedelta(0)
    assert f"ending at {decision_time:%Y-%m-%d %H:%M} UTC" in page.caption[0].value
    assert len(page.image) == 3
