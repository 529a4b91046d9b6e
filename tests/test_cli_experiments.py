"""The experiment commands: train one cell, run a grid slice (and skip it on a rerun), export the
seed's CSVs, predict through ONNX, and refuse bad input with one line, exit 2, nothing written."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from dagster_project.assets.experiments import (
    CELLS_PARTITIONS,
    EXPERIMENT_CELLS,
    KNOWN_AT_CHECK,
    SUSPICIOUS_CHECK,
)
from dagster_project.cli import main
from dagster_project.core.lake import open_catalog
from ml.results import read_metrics
from tests.helpers import simulated_dataset_lake

DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
CELL = "BTCUSDT.1m.regular.w5.custom.exp1_t1d"
SEED_CELL = "BTCUSDT.1m.regular.w5.custom.seed_t1d"
# train on the first day, test on the next two; tiny images and one epoch
FAST = ["--blocks", "2", "--image-size", "32", "--epochs", "1", "--batch-size", "128"]
FAST += ["--n-boot", "100"]
TRAIN = ["train", "--symbol", "BTCUSDT", "--model", "custom", "--train-length", "1d", *FAST]

pytestmark = pytest.mark.slow


def candlelake(lake, *args: str, record: bool = False):
    flag = "--record" if record else "--no-record"
    return CliRunner().invoke(main, ["--lake", str(lake.root), flag, *args])


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), "BTCUSDT", DAYS)


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory):
    return tmp_path_factory.mktemp("dagster_home")


@pytest.fixture(scope="module")
def trained(lake, dagster_home):
    """`candlelake train` of one cell, recorded in a Dagster instance of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        result = candlelake(lake, *TRAIN, record=True)
    assert result.exit_code == 0, result.output
    return result


def test_train_prints_the_cells_pooled_scores_beside_the_baselines(lake, trained):
    pooled = read_metrics(lake, [CELL]).filter(
        (pl.col("split") == "test") & pl.col("block").is_null()
    )
    lines = {line.split()[0]: line for line in trained.output.splitlines() if line.strip()}
    for row in pooled.iter_rows(named=True):
        assert f"{row['auroc']:.3f} [{row['auroc_low']:.3f}, {row['auroc_high']:.3f}]" in (
            lines[row["scorer"]]
        )
    assert set(pooled["scorer"]) == {"custom", "majority", "persistence", "logistic_returns"}
    assert f"{CELL}: trained" in trained.output
    with open_catalog(lake) as con:
        assert con.execute("select count(*) from leaderboard").fetchone() == (1,)


def test_a_cell_trained_by_the_cli_shows_in_dagster(dagster_home, trained):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_dynamic_partitions(CELLS_PARTITIONS.name) == [CELL]
        event = instance.get_latest_materialization_event(EXPERIMENT_CELLS)
        checks = {
            name: instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(EXPERIMENT_CELLS, name), limit=1
            )[0]
            for name in (KNOWN_AT_CHECK, SUSPICIOUS_CHECK)
        }
    for name, record in checks.items():
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.partition == CELL and evaluation.passed, name
    assert event.dagster_event.partition == CELL
    metadata = event.asset_materialization.metadata
    assert metadata["outcome"].value == "trained"
    assert metadata["written_by"].value == "candlelake CLI"


def test_experiment_trains_only_the_new_cells_and_a_rerun_trains_none(lake, trained):
    slice_args = [
        "experiment",
        "--symbols",
        "BTCUSDT",
        "--models",
        "custom",
        "--protocols",
        "experiment_i,seed_replica",
        "--train-lengths",
        "1d",
        *FAST,
    ]
    first = candlelake(lake, *slice_args)
    assert first.exit_code == 0, first.output
    assert "2 cells: 1 trained, 1 skipped" in first.output  # `train` ran the experiment_i cell
    assert f"{CELL}: skipped" in first.output and f"{SEED_CELL}: trained" in first.output
    assert CELL in first.output.split("leaderboard")[-1]  # the slice's honest row
    assert read_metrics(lake, [SEED_CELL]).height > 0
    again = candlelake(lake, *slice_args)
    assert again.exit_code == 0, again.output
    assert "2 cells: 0 trained, 2 skipped" in again.output


def test_export_results_writes_the_metrics_tables_values(lake, trained, tmp_path):
    result = candlelake(lake, "export-results", "--out", str(tmp_path / "csv"))
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'csv' / 'BTC_exp1_results.csv'}" in result.output
    exported = pl.read_csv(tmp_path / "csv" / "BTC_exp1_results.csv")
    test_rows = exported.filter((pl.col("Model") == "custom") & (pl.col("Dataset") == "Test"))
    blocks = (
        read_metrics(lake, [CELL])
        .filter((pl.col("role") == "model") & pl.col("block").is_not_null())
        .sort("block")
    )
    assert test_rows.sort("Month")["Month"].to_list() == [1, 2]
    assert test_rows.sort("Month")["AUROC"].to_list() == pytest.approx(blocks["auroc"].to_list())
    assert test_rows.sort("Month")["Accuracy"].to_list() == pytest.approx(
        blocks["accuracy"].to_list()
    )


def test_predict_prints_a_probability_from_the_cells_onnx_export(lake, trained):
    result = candlelake(lake, "predict", "--symbol", "BTCUSDT", "--model", "custom")
    assert result.exit_code == 0, result.output
    probability = float(re.search(r"P\(up\):\s+([0-9.]+)", result.output)[1])
    assert 0.0 <= probability <= 1.0
    assert f"cell:          {CELL}" in result.output
    assert "decision time: 2024-03-0" in result.output and "test AUROC:" in result.output


def lake_files(lake) -> dict[str, int]:
    return {
        str(path.relative_to(lake.root)): path.stat().st_mtime_ns
        for path in lake.root.rglob("*")
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet_nope"], "resnet_nope"),
        (["--window", "7"], "window size 7"),
        (["--first-day", "2024-05-01", "--last-day", "2024-05-03"], "no windows for BTCUSDT 1m"),
        (["--protocol", "experiment_iii"], "unknown protocol 'experiment_iii'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(lake, trained, args, message):
    before = lake_files(lake)
    result = candlelake(lake, *TRAIN, "--force", *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert lake_files(lake) == before
