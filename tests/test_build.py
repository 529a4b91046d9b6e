"""`candlelake build`: the asset graph for a range of days through Dagster, one run per symbol."""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner

from dagster_project.cli import main
from dagster_project.core.lake import Lake, connect
from dagster_project.main_job import dagster_home, persistent_instance

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("CANDLELAKE_LAKE", raising=False)
    return tmp_path


def candlelake(project, *args: str):
    return CliRunner().invoke(
        main, ["--lake", str(project / "lake"), *args], catch_exceptions=False
    )


def catalog_rows(project, query: str):
    con = connect(Lake(project / "lake").catalog_path, read_only=True)
    try:
        return con.sql(query).fetchall()
    finally:
        con.close()


def test_build_through_windows_is_one_recorded_run_per_symbol(project):
    result = candlelake(
        project,
        "build",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-03",
    )
    assert result.exit_code == 0, result.output
    assert "2 windows_job runs (4 symbol-days)" in result.output
    assert "0 failed checks" in result.output

    runs = persistent_instance(dagster_home()).get_runs()
    assert sorted(
        (r.job_name, r.tags["dagster/asset_partition_range_start"]) for r in runs
    ) == [("windows_job", "2024-03-01|BTCUSDT"), ("windows_job", "2024-03-01|ETHUSDT")]
    assert all(r.tags["dagster/asset_partition_range_end"].startswith("2024-03-02|") for r in runs)

    instance = dg.DagsterInstance.get()
    windows = instance.get_materialized_partitions(dg.AssetKey(["windows", "windows"]))
    assert windows == {f"2024-03-0{d}|{s}" for d in (1, 2) for s in ("BTCUSDT", "ETHUSDT")}
    days = catalog_rows(
        project,
        "select symbol, count(distinct cast(decision_time - interval 1 microsecond as date)) "
        "from windows where interval = '1m' group by all order by all",
    )
    assert days == [("BTCUSDT", 2), ("ETHUSDT", 2)]
    # labels of the first day whose horizons reach into the second are there: the range run
    # curates both days before labelling either
    late = catalog_rows(
        project,
        "select count(*) from labels where symbol = 'BTCUSDT' and interval = '1m' "
        "and label = 'next_up_15' and decision_time between '2024-03-01 23:50:00+00' "
        "and '2024-03-01 23:59:00+00'",
    )
    assert late == [(10,)]


def test_build_through_curated_runs_the_klines_job_only(project):
    result = candlelake(
        project, "build", "--symbols", "SOLUSDT", "--start", "2024-03-01", "--end", "2024-03-02",
        "--through", "curated",
    )
    assert result.exit_code == 0, result.output
    assert "1 klines_job runs (1 symbol-days)" in result.output
    lake = Lake(project / "lake")
    assert list(lake.partitions("curated", "klines"))
    assert not lake.table_dir("features", "indicators").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--symbols", " , ,"], "no symbols in --symbols"),
        (["--symbols", "btc-usdt"], "bad symbol"),
        (["--symbols", "BTCUSDT", "--start", "2999-01-01", "--end", "2999-01-02"], "future"),
        (["--symbols", "BTCUSDT", "--start", "2024-03-05", "--end", "2024-03-01"], "start"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(project, args, message):
    defaults = {"--start": "2024-03-01", "--end": "2024-03-02"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    options = [x for k, v in (defaults | given).items() for x in (k, v)]
    result = CliRunner().invoke(main, ["--lake", str(project / "lake"), "build", *options])
    assert result.exit_code == 2, result.output
    assert message in result.output.lower() or message in result.output
    assert not (project / "lake").exists()


def test_a_failing_source_fails_its_run_in_one_line_and_lands_nothing(project):
    result = CliRunner().invoke(
        main,
        [
            "--lake", str(project / "lake"), "build", "--source", "freqtrade",
            "--freqtrade-dir", str(project), "--symbols", "BTCUSDT",
            "--start", "2024-03-01", "--end", "2024-03-02",
        ],
    )
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "BTCUSDT 2024-03-01..2024-03-01 failed: step raw_klines: " in error[0]
    assert "freqtrade" in error[0] and "BTC_USDT-1h.feather" in error[0]
    assert "Traceback" not in result.output
    assert not list(Lake(project / "lake").partitions("raw", "klines"))


def test_a_new_instance_runs_at_most_two_queued_runs_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    instance = persistent_instance(dagster_home())
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
    assert instance.run_coordinator.dequeue_interval_seconds == 1
