"""The SQL page: the views' schemas beside the editor, each refusal of the locked-down console
shown as an error, a runaway query cut at the row limit or stopped at the time limit."""

from __future__ import annotations

import pytest

from tests.app.conftest import app_test

pytestmark = pytest.mark.slow


@pytest.fixture
def page(app_env):
    at = app_test("pages/sql_console.py").run()
    assert not at.exception, at.exception
    return at


def run_query(at, sql: str, timeout_s: int | None = None):
    at.text_area[0].input(sql)
    if timeout_s is not None:
        at.number_input[0].set_value(timeout_s)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_every_view_is_listed_beside_the_editor(page):
    views = {expander.label for expander in page.expander}
    assert {"klines", "labels", "predictions", "metrics", "leaderboard", "controls"} <= views


def test_a_plain_select_shows_its_rows(page):
    run_query(page, "select symbol, count(*) as bars from klines group by all")
    assert not page.error
    result = page.dataframe[0].value
    assert list(result["symbol"]) == ["BTCUSDT"] and result["bars"][0] > 0


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("drop view klines", "refused DROP"),
        ("copy (select 1) to '/tmp/candlelake_app_test.csv'", "refused COPY"),
        ("attach '/tmp/candlelake_app_test.duckdb' as other", "refused ATTACH"),
        ("install httpfs", "refused INSTALL"),
        ("select * from read_text('/etc/passwd')", "/etc/passwd"),
        ("select 1; select 2", "one query at a time"),
    ],
)
def test_a_refused_query_is_an_error_and_shows_no_rows(page, sql, message):
    run_query(page, sql)
    (error,) = page.error
    assert message in error.value
    assert not page.dataframe


def test_an_unbounded_result_is_cut_at_the_row_limit(page):
    run_query(page, "select * from range(1000000000000)")
    assert page.dataframe[0].value.shape[0] == 1000
    assert "first 1000 rows" in page.warning[0].value


def test_an_unbounded_query_is_stopped_at_the_time_limit(page):
    run_query(page, "select sum(range) from range(1000000000000)", timeout_s=1)
    (error,) = page.error
    assert "stopped after 1 s" in error.value
