"""app.data: the lake from the environment, cached read-only queries keyed on the catalog's
mtime, the views' columns, and the page-stopping message when the catalog is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from app import data
from app.main import PAGES
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.lake import connect
from dagster_project.core.sql import run_sql
from tests.app.conftest import APP_DIR, HONEST, app_test

pytestmark = pytest.mark.slow


def test_the_lake_is_the_environments_and_absolute(app_env, monkeypatch, tmp_path):
    assert data.lake().root == app_env.root
    monkeypatch.setenv("CANDLELAKE_LAKE", "relative/lake")
    assert data.lake().root.is_absolute() and data.lake().root.parts[-2:] == ("relative", "lake")


def test_a_query_reads_the_catalog_with_its_parameters(app_env):
    metrics = data.query("leaderboard_cell_metrics", cell=HONEST.key)
    assert set(metrics["cell"]) == {HONEST.key}
    assert {"custom", "majority", "persistence", "logistic_returns"} <= set(metrics["scorer"])
    assert data.query("leaderboard_board", limit=1).height == 1


def test_a_query_is_cached_until_the_catalog_changes(app_env, monkeypatch):
    ran = []
    monkeypatch.setattr(
        data, "run_sql", lambda con, name, params: ran.append(name) or run_sql(con, name, params)
    )
    data.query("leaderboard_controls", limit=7)
    data.query("leaderboard_controls", limit=7)
    assert ran == ["app/leaderboard_controls"]
    mtime = data.catalog_mtime()
    os.utime(app_env.catalog_path, (mtime + 10, mtime + 10))
    try:
        data.query("leaderboard_controls", limit=7)
    finally:
        os.utime(app_env.catalog_path, (mtime, mtime))
    assert ran == ["app/leaderboard_controls"] * 2


def test_a_query_with_wrong_parameters_names_them(app_env):
    with pytest.raises(InvalidRequestError, match=r"missing \['limit'\]"):
        data.query("leaderboard_board")


def test_view_columns_lists_every_view_with_typed_columns(app_env):
    columns = data.view_columns()
    assert {"klines", "labels", "metrics", "predictions", "leaderboard", "controls"} <= set(columns)
    assert ("why", "VARCHAR") in columns["controls"]
    assert "candlelake_catalog" not in columns  # a table, not a view


def test_a_missing_catalog_stops_the_page_with_the_command_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("CANDLELAKE_LAKE", str(tmp_path / "no_lake"))
    assert data.catalog_mtime() is None
    at = app_test("pages/leaderboard.py").run()
    assert not at.exception
    (error,) = at.error
    assert "make run" in error.value and ".venv/bin/candlelake catalog" in error.value
    assert not at.dataframe


def test_the_app_opens_on_the_leaderboard_and_lists_every_page_module(app_env):
    at = app_test("main.py").run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Leaderboard"  # the first page is the default
    listed = {name for name, _title, _icon in PAGES}
    assert listed == {path.name for path in (APP_DIR / "pages").glob("*.py")} - {"__init__.py"}


def test_the_pages_start_without_torch():
    """Every module the explorer imports, imported in a fresh interpreter, leaves torch out (the
    first page a user opens would wait seconds for it)."""
    sources = [*(APP_DIR / "pages").glob("*.py"), *APP_DIR.glob("*.py")]
    modules = sorted(
        {
            name
            for source in sources
            for node in ast.walk(ast.parse(source.read_text()))
            for name in imported_modules(node)
            if name != "__future__"
        }
    )
    probe = (
        f"import sys; import {', '.join(modules)}; "
        "print([m for m in sys.modules if m.split('.')[0] == 'torch'])"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=APP_DIR.parent,
    ).stdout.strip()
    assert "ml.cards" in modules and "streamlit" in modules
    assert found == "[]", found


def imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    return []


@pytest.mark.parametrize(
    ("auroc", "low", "high", "verdict"),
    [
        (0.56, 0.53, 0.59, "above the best baseline (look closer)"),
        (0.52, 0.49, 0.55, "within noise of the best baseline"),
        (0.50, 0.47, 0.53, "within noise of the best baseline"),
        (0.46, 0.43, 0.49, "below the best baseline"),
        (float("nan"), None, None, "no CI"),
    ],
)
def test_the_leaderboard_verdict_reads_the_ci_not_the_point(auroc, low, high, verdict):
    con = connect()
    try:
        con.execute(
            "create table leaderboard as select ?::double as auroc, ?::double as auroc_low, "
            "?::double as auroc_high, 0.51::double as best_baseline_auroc",
            [auroc, low, high],
        )
        (row,) = run_sql(con, "app/leaderboard_board", {"limit": 10}).pl().rows(named=True)
    finally:
        con.close()
    assert row["verdict"] == verdict
