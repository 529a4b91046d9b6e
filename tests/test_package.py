"""The package as a wheel installs it: every query and module ships, and queries run from the
installed copy, away from the checkout (built offline, installed into a scratch folder)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON_PACKAGES = ("app", "dagster_project", "ml")
QUERIES_IN_WHEEL = "dagster_project/queries"

pytestmark = pytest.mark.slow

# Runs in the scratch install: where the package was imported from, every query it loads, and
# one real query over a hand-made Parquet file (argv[1]).
PROBE = """
import json, sys
import dagster_project
from dagster_project.core.lake import connect
from dagster_project.core.sql import SQL_ROOT, load_sql, query_names, run_sql

params = {"raw_files": [sys.argv[1]], "base_us": 60_000_000, "bar_us": 300_000_000}
bars = run_sql(connect(), "curate/klines", params).pl()
print(json.dumps({
    "package_file": dagster_project.__file__,
    "sql_root": str(SQL_ROOT),
    "queries": {name: load_sql(name) for name in query_names()},
    "bars": bars.select("open_time", "open", "high", "low", "close", "volume", "base_bars",
                        "is_complete").to_dicts(),
}, default=str))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A fresh copy of what the build reads; the tests compare the wheel with it, not with a
    checkout that may change meanwhile."""
    source = tmp_path_factory.mktemp("source")
    copy_build_inputs(source)
    return source


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    """A wheel built offline (no index, no build isolation) from ``source``."""
    out = tmp_path_factory.mktemp("wheel")
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source))
    [built] = out.glob("candlelake-*.whl")
    return built


def copy_build_inputs(target: Path) -> None:
    # A copy, not the checkout: setuptools reuses a stale build/ folder, which would hide a
    # file that the current configuration no longer ships.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, target / name)
    for folder in REPO_ROOT.iterdir():
        if (folder / "__init__.py").is_file():  # app, dagster_project, ml, sql, tests
            shutil.copytree(
                folder, target / folder.name, ignore=shutil.ignore_patterns("__pycache__")
            )


def pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def repo_queries(root: Path) -> dict[str, str]:
    """``{"curate/klines": text, …}`` for every .sql file under ``root/sql``."""
    sql_dir = root / "sql"
    return {
        path.relative_to(sql_dir).with_suffix("").as_posix(): path.read_text(encoding="utf-8")
        for path in sql_dir.rglob("*.sql")
    }


def test_wheel_ships_every_query_and_module_and_nothing_else_at_top_level(source, wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    queries = {f"{QUERIES_IN_WHEEL}/{name}.sql" for name in repo_queries(source)}
    modules = {
        path.relative_to(source).as_posix()
        for package in PYTHON_PACKAGES
        for path in (source / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert len(queries) >= 8
    assert sorted(queries - names) == []
    assert sorted(modules - names) == []
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == set(PYTHON_PACKAGES)  # sql/ ships inside dagster_project, not as "sql"


def test_installed_wheel_loads_and_runs_queries_without_the_checkout(source, wheel, tmp_path):
    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-index", "--no-compile", "--target", str(site), str(wheel))
    raw = tmp_path / "raw.parquet"
    minute_klines([0, 1, 2, 3, 4, 6]).write_parquet(raw)

    # -P and cwd keep the checkout off sys.path; PYTHONPATH puts the scratch install ahead of
    # the venv's editable finder, and the asserts below prove it was the one imported.
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-P", "-c", PROBE, str(raw)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)

    assert Path(probe["package_file"]).is_relative_to(site)
    assert Path(probe["sql_root"]) == site / QUERIES_IN_WHEEL
    assert probe["queries"] == repo_queries(source)
    assert probe["bars"] == [
        bar("00:00:00", 100, 106, 98, 105, volume=50, base_bars=5, is_complete=True),
        bar("00:05:00", 106, 108, 104, 107, volume=10, base_bars=1, is_complete=False),
    ]


def minute_klines(minutes: list[int]) -> pl.DataFrame:
    """Raw 1m klines on 2024-03-01: minute m opens at 100+m, high/low ±2, closes at 101+m."""
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    opens = [100.0 + m for m in minutes]
    return pl.DataFrame(
        {
            "open_time": [start + dt.timedelta(minutes=m) for m in minutes],
            "open": opens,
            "high": [o + 2 for o in opens],
            "low": [o - 2 for o in opens],
            "close": [o + 1 for o in opens],
            "volume": [10.0] * len(minutes),
            "quote_volume": [10 * o for o in opens],
            "trades": [5] * len(minutes),
            "taker_buy_base_volume": [4.0] * len(minutes),
            "taker_buy_quote_volume": [4 * o for o in opens],
            "source": ["simulator"] * len(minutes),
            "ingested_at": [start] * len(minutes),
        },
        schema_overrides={
            "open_time": pl.Datetime("us", "UTC"),
            "ingested_at": pl.Datetime("us", "UTC"),
        },
    )


def bar(clock: str, o: float, h: float, lo: float, c: float, **rest: object) -> dict:
    """One curated bar as the probe prints it (timestamps via ``str``)."""
    open_time = f"2024-03-01 {clock}+00:00"
    return {"open_time": open_time, "open": o, "high": h, "low": lo, "close": c, **rest}
