"""The Lake health page on the explorer's test lake: per-table counts equal the lake's own, the
gaps, a missing Dagster instance explained, and check results read from a real instance."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.defs_state.base import set_defs_state_storage
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP_DIR

PAGE = str(APP_DIR / "pages" / "lake_health.py")
UI = "http://dagster.test:3000"
PROBE = dg.AssetKey(["features", "indicators"])


def run_page(monkeypatch, home: Path) -> AppTest:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_UI_URL", UI)
    page = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not page.exception, [e.value for e in page.exception]
    return page


def frame(page: AppTest, index: int) -> pl.DataFrame:
    return pl.from_pandas(page.dataframe[index].value)


def direct_rows(table_dir: Path) -> int:
    files = sorted(table_dir.rglob("part-*.parquet"))
    return pl.scan_parquet(files, hive_partitioning=False).select(pl.len()).collect().item()


def test_tables_show_the_rows_partitions_and_days_of_the_lake(app_env, monkeypatch, tmp_path):
    page = run_page(monkeypatch, tmp_path / "no_instance")
    tables = frame(page, 0)
    assert {"klines", "labels", "windows", "splits", "indicators", "metrics"} <= set(tables["view"])
    for row in tables.iter_rows(named=True):
        table_dir = app_env.root.joinpath(*row["table"].split("/"))
        assert row["rows"] == direct_rows(table_dir), row["view"]
        leaves = {file.parent for file in table_dir.rglob("part-*.parquet")}
        assert row["partitions"] == len(leaves), row["view"]
        assert row["dagster"] == f"{UI}/assets/{row['table']}"
    klines = tables.filter(pl.col("view") == "klines").row(0, named=True)
    assert (str(klines["first_day"])[:10], str(klines["last_day"])[:10]) == (
        "2024-03-01",
        "2024-03-02",
    )
    assert "leaderboard" not in set(tables["view"])  # a derived view has no table of its own


def test_no_gaps_and_a_missing_instance_say_so(app_env, monkeypatch, tmp_path):
    page = run_page(monkeypatch, tmp_path / "no_instance")
    assert [box.value for box in page.success] == ["No gaps recorded in any series."]
    (warning,) = page.warning
    assert "No Dagster instance" in warning.value and "make run" in warning.value


class ProbeConfig(dg.Config):
    in_range: bool


@dg.asset(
    key=PROBE,
    check_specs=[
        dg.AssetCheckSpec("grain_unique", asset=PROBE),
        dg.AssetCheckSpec("values_in_range", asset=PROBE),
    ],
)
def probe(config: ProbeConfig) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(check_name="grain_unique", passed=True),
            dg.AssetCheckResult(
                check_name="values_in_range",
                passed=config.in_range,
                severity=dg.AssetCheckSeverity.WARN,
            ),
        ]
    )


@pytest.fixture
def instance_home(tmp_path) -> Path:
    """A Dagster instance on disk where ``probe`` ran twice: its range check passed, then failed."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(home))
    # Dagster keeps the current defs-state storage in a context variable; an instance an earlier
    # test in this process opened (and disposed) may still be there, so this one's is set here.
    storage = instance.defs_state_storage
    try:
        with set_defs_state_storage(storage):
            for in_range in (True, False):
                config = {"ops": {"features__indicators": {"config": {"in_range": in_range}}}}
                assert dg.materialize([probe], instance=instance, run_config=config).success
    finally:
        instance.dispose()
    return home


def test_check_results_of_the_instance_appear_with_links(app_env, monkeypatch, instance_home):
    page = run_page(monkeypatch, instance_home)
    assert not page.warning
    checks = frame(page, len(page.dataframe) - 1).select("check", "passed", "severity", "dagster")
    link = f"{UI}/assets/features/indicators"
    assert checks.rows() == [  # the latest evaluation of each check, failing first
        ("values_in_range", False, "WARN", link),
        ("grain_unique", True, "ERROR", link),
    ]
    assert set(frame(page, len(page.dataframe) - 1)["asset"]) == {"features/indicators"}
    assert any("2 checks, 1 failing" in caption.value for caption in page.caption)
