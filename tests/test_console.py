"""The SQL console: catalog views readable; files, writes, extensions, settings refused; bounded."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

import duckdb
import pytest

from dagster_project.assets.catalog import CATALOG_VIEWS
from dagster_project.core.console import ConsoleError, open_console
from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.lake import Lake, build_catalog, connect
from tests.helpers import simulated_dataset_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    lake = simulated_dataset_lake(tmp_path_factory.mktemp("lake"), days=(dt.date(2024, 3, 1),))
    build_catalog(lake, CATALOG_VIEWS)
    return lake


@pytest.fixture
def console(lake):
    with open_console(lake, row_limit=100, timeout_s=2.0) as console:
        yield console


def catalog_views(lake: Lake) -> list[str]:
    con = connect(lake.catalog_path, read_only=True)
    try:
        rows = con.sql("select view_name from duckdb_views() where not internal order by 1")
        return [name for (name,) in rows.fetchall()]
    finally:
        con.close()


def test_every_catalog_view_reads_through_the_console(lake, console):
    views = catalog_views(lake)
    assert {"klines", "raw_klines", "kline_gaps", "labels", "windows", "splits"} <= set(views)
    for view in views:
        result = console.run(f"select count(*) as n from {view}")
        assert result.columns == ["n"]
        assert result.rows[0][0] > 0 or view == "kline_gaps", view
    result = console.run(
        "select symbol, interval, count(*) as bars from klines "
        "where interval = '1h' group by all order by all"
    )
    assert (result.rows, result.truncated) == ([("BTCUSDT", "1h", 24)], False)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DROP VIEW klines", "refused DROP"),
        ("COPY (select 1) TO '{tmp}/x.csv'", "refused COPY"),
        ("ATTACH '{tmp}/x.db'", "refused ATTACH"),
        ("INSTALL httpfs", "refused INSTALL (a LOAD statement)"),
        ("LOAD x", "refused LOAD"),
        ("create temp table t as select 1", "refused CREATE"),
        ("insert into klines select * from klines", "refused INSERT"),
        ("set enable_external_access = true", "refused SET"),
        ("pragma database_list", "refused PRAGMA"),
        ("select 1; select 2", "refused 2 statements"),
        ("  -- nothing", "no statement"),
        ("selec 1", 'syntax error at or near "selec"'),
        ("select * from read_text('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("select * from glob('/root/*')", 'Cannot access file "/root/*"'),
        ("select * from read_parquet('/etc/x.parquet')", 'Cannot access file "/etc/x.parquet"'),
        ("select * from read_csv('{tmp}/x.csv')", "Cannot access file"),
        ("select * from read_text('{lake}/../secret')", "Cannot access file"),
        ("select * from query('copy (select 1) to ''{tmp}/y.csv''')", "single SELECT"),
    ],
)
def test_refusals_are_console_errors_naming_what_was_refused(lake, console, tmp_path, sql, message):
    with pytest.raises(ConsoleError) as refused:
        console.run(sql.format(tmp=tmp_path, lake=lake.root))
    assert message in str(refused.value)
    assert isinstance(refused.value, CandlelakeError)
    assert list(tmp_path.iterdir()) == []
    assert console.run("select count(*) from klines").rows[0][0] > 0  # nothing was dropped


def test_an_unbounded_result_is_cut_at_the_row_limit(console):
    started = time.monotonic()
    result = console.run("select * from range(1e12::bigint)")
    assert (len(result.rows), result.truncated) == (100, True)
    assert result.rows[-1] == (99,)
    assert time.monotonic() - started < 10
    assert console.run("select * from range(100)").truncated is False


def test_a_slow_query_is_stopped_by_the_timeout(console):
    started = time.monotonic()
    with pytest.raises(ConsoleError, match="stopped after 2 s"):
        console.run("select count(*) from range(1e6::bigint) a, range(1e6::bigint) b")
    assert time.monotonic() - started < 10
    assert console.run("select 1 as one").rows == [(1,)]  # the console still works after


def test_settings_are_locked_even_when_the_statement_check_is_bypassed(console):
    con = console.connection  # user SQL straight to DuckDB, past Console.run's statement check
    with pytest.raises(duckdb.Error, match="configuration has been locked"):
        con.execute("set enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.execute("select * from read_text('/etc/passwd')")
    with pytest.raises(duckdb.Error):
        con.execute("load httpfs")
    with pytest.raises(duckdb.Error, match="read-only"):
        con.execute("drop view candlelake.klines")


def test_a_console_leaves_other_connections_to_the_catalog_unrestricted(lake, console):
    con = connect(lake.catalog_path, read_only=True)  # sets TimeZone: fails if the config is locked
    try:
        assert con.execute("select count(*) from glob('/etc/*')").fetchone()[0] > 0
    finally:
        con.close()


def test_a_moved_lake_warns_that_its_catalog_reads_the_old_location(lake, tmp_path):
    moved = Lake(tmp_path / "moved")
    shutil.copytree(lake.root, moved.root)
    with open_console(moved) as console:
        assert len(console.warnings) == 1
        assert f"was built for the lake at {lake.root}" in console.warnings[0]


def test_a_missing_catalog_and_a_locked_catalog_are_clear_errors(lake, tmp_path):
    with pytest.raises(InvalidRequestError, match="no catalog at"):
        open_console(Lake(tmp_path / "empty"))
    with (
        catalog_held_for_writing(lake),
        pytest.raises(ConsoleError, match="cannot open catalog .*Could not set lock"),
    ):
        open_console(lake)
    with open_console(lake) as console:  # and opens again once the writer is gone
        assert console.run("select 1 as one").rows == [(1,)]


@contextmanager
def catalog_held_for_writing(lake: Lake):
    """Another process holding the catalog open for writing, as `duckdb <catalog>` does."""
    hold = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=1); input()"
    writer = subprocess.Popen(
        [sys.executable, "-c", hold, str(lake.catalog_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "held"
        yield
    finally:
        writer.communicate("\n", timeout=30)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"row_limit": 0}, "row limit 0 is not positive"), ({"timeout_s": 0}, "timeout 0 s")],
)
def test_bad_limits_are_refused(lake, kwargs, message):
    with pytest.raises(ConsoleError, match=message):
        open_console(lake, **kwargs)


def test_result_table_shows_repeated_column_names(console):
    result = console.run("select 1 as a, 'x' as a")
    assert result.frame().columns == ["a", "a_2"]
    assert "a_2" in result.table()
