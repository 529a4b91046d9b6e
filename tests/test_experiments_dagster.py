"""experiments/cells in Dagster: cells as dynamic partitions materialized on a small simulated
lake, their metadata and checks, the skip of an unchanged cell, the concurrency pool, and the
grid job that registers a slice."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest
from dagster._core.instance.config import PoolGranularity

from dagster_project.assets.experiments import (
    CELLS_PARTITIONS,
    EXPERIMENT_CELLS,
    EXPERIMENTS_POOL,
    KNOWN_AT_CHECK,
    SUSPICIOUS_CHECK,
    cells,
    known_at_before_test,
    not_suspicious,
)
from dagster_project.definitions import defs
from dagster_project.main_job import dagster_home, default_grid, persistent_instance
from dagster_project.resources import LakeResource
from ml.experiment import Cell
from ml.results import read_metrics
from tests.helpers import simulated_dataset_lake

DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
HONEST = "BTCUSDT.1m.regular.w5.custom.exp1_t1d"
LEAKY = "BTCUSDT.1m.regular.w5.custom.exp1_t1d.leaky_last_candle_up"
OP = EXPERIMENT_CELLS.to_python_identifier()
# one day of training, two test days; tiny images and one epoch keep a cell to seconds
CONFIG = {"blocks": 2, "image_size": 32, "max_epochs": 1, "batch_size": 128, "n_boot": 100}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return simulated_dataset_lake(tmp_path_factory.mktemp("lake"), "BTCUSDT", DAYS)


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as test_instance:
        test_instance.add_dynamic_partitions(CELLS_PARTITIONS.name, [HONEST, LEAKY])
        yield test_instance


def materialize(lake, instance, key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cells],
        partition_key=key,
        instance=instance,
        resources={"lake": LakeResource(root=str(lake.root))},
        run_config={"ops": {OP: {"config": CONFIG}}},
    )


@pytest.fixture(scope="module")
def first_runs(lake, instance):
    return {key: materialize(lake, instance, key) for key in (HONEST, LEAKY)}


def metadata_of(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (materialization,) = result.asset_materializations_for_node(OP)
    return {name: value.value for name, value in materialization.metadata.items()}


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_cell_partition_trains_and_reports_scores_beside_the_baselines(lake, first_runs):
    result = first_runs[HONEST]
    assert result.success
    metadata = metadata_of(result)
    metrics = read_metrics(lake, [HONEST])
    pooled = metrics.filter(
        (pl.col("split") == "test") & pl.col("block").is_null() & (pl.col("role") == "model")
    ).row(0, named=True)
    assert metadata["outcome"] == "trained"
    assert metadata["fingerprint"] == pooled["fingerprint"]
    assert metadata["test_auroc"] == pytest.approx(pooled["auroc"])
    assert metadata["test_auroc_ci"].startswith(f"{pooled['auroc']:.3f} [")
    assert metadata["epochs"] == 1 and metadata["samples_per_s"] > 0
    for baseline in ("majority", "persistence", "logistic_returns"):
        assert f"{baseline}_test_auroc_ci" in metadata
        assert f"| {baseline} | baseline |" in metadata["scores"]
    assert metadata["loss_curve"].splitlines()[2].startswith("| 1 | ")
    assert metadata["checkpoint"] == str(lake.root / "models" / "custom" / HONEST)
    assert (lake.root / "models" / "custom" / HONEST / "model.onnx").is_file()


def test_both_checks_run_on_every_cell_and_pass_on_honest_and_control_cells(first_runs):
    for key, result in first_runs.items():
        checks = checks_of(result)
        assert set(checks) == {KNOWN_AT_CHECK, SUSPICIOUS_CHECK}, key
        assert checks[KNOWN_AT_CHECK].passed, checks[KNOWN_AT_CHECK].description
        assert checks[KNOWN_AT_CHECK].severity == dg.AssetCheckSeverity.ERROR
        assert checks[SUSPICIOUS_CHECK].severity == dg.AssetCheckSeverity.WARN
    assert checks_of(first_runs[HONEST])[KNOWN_AT_CHECK].metadata["honest_test_rows"].value > 0
    # the leaky control learns its label, yet a control is never flagged suspicious
    assert metadata_of(first_runs[LEAKY])["test_auroc"] > 0.9
    assert checks_of(first_runs[LEAKY])[SUSPICIOUS_CHECK].passed


def test_an_unchanged_cell_is_skipped_and_force_retrains_it(lake, instance, first_runs):
    before = read_metrics(lake, [HONEST])["created_at"].max()
    again = materialize(lake, instance, HONEST)
    assert metadata_of(again)["outcome"] == "skipped"
    assert metadata_of(again)["fingerprint"] == metadata_of(first_runs[HONEST])["fingerprint"]
    assert read_metrics(lake, [HONEST])["created_at"].max() == before
    forced = dg.materialize(
        [cells],
        partition_key=HONEST,
        instance=instance,
        resources={"lake": LakeResource(root=str(lake.root))},
        run_config={"ops": {OP: {"config": CONFIG | {"force": True}}}},
    )
    assert metadata_of(forced)["outcome"] == "trained"
    assert read_metrics(lake, [HONEST])["created_at"].max() > before


def test_the_cells_asset_runs_in_the_experiments_pool_limited_to_one(tmp_path, monkeypatch):
    """A UI backfill's runs queue for the pool's one slot; the run queue still runs two."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert defs.resolve_assets_def(EXPERIMENT_CELLS).op.pool == EXPERIMENTS_POOL
    config = persistent_instance(dagster_home()).get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    assert config.pool_config.pool_granularity == PoolGranularity.RUN
    assert config.run_queue_config.max_concurrent_runs == 2


def test_an_instance_config_an_earlier_version_wrote_gets_the_pool_limit(tmp_path, monkeypatch):
    from dagster_project.main_job import _OLD_INSTANCE_YAMLS

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (home / "dagster.yaml").write_text(_OLD_INSTANCE_YAMLS[0])
    assert "default_limit: 1" in (dagster_home() / "dagster.yaml").read_text()
    edited = "telemetry:\n  enabled: false\n"  # a user's own config is left alone
    (home / "dagster.yaml").write_text(edited)
    assert (dagster_home() / "dagster.yaml").read_text() == edited


def test_the_grid_job_registers_a_slice_once():
    slice_config = {
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "window_sizes": [5, 15],
        "models": ["custom"],
        "trainings": ["exp1_t1d"],
        "shuffled": [False, True],
    }
    job = defs.resolve_job_def("experiment_grid_job")
    run_config = {"ops": {"register_experiment_cells": {"config": slice_config}}}
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(run_config=run_config, instance=instance).success
        assert job.execute_in_process(run_config=run_config, instance=instance).success
        keys = instance.get_dynamic_partitions(CELLS_PARTITIONS.name)
    assert len(keys) == 8 and len(set(keys)) == 8
    assert "ETHUSDT.1m.regular.w15.custom.exp1_t1d.shuffled" in keys
    assert all(Cell.from_key(key).key == key for key in keys)


def test_the_default_grid_has_two_honest_models_and_three_controls():
    cells_and_configs = default_grid("BTCUSDT", DAYS)
    keys = [cell.key for cell, _ in cells_and_configs]
    assert keys == [
        "BTCUSDT.1m.regular.w5.custom.exp1_t1d",
        "BTCUSDT.1m.regular.w5.mobilenetv3.exp1_t1d",
        "BTCUSDT.1m.regular.w5.custom.exp1_t1d.shuffled",
        "BTCUSDT.1m.regular.w5.custom.exp1_t1d.leaky_last_candle_up",
        "BTCUSDT.1m.regular.w5.custom.seed_t1d",
    ]
    assert [cell.is_control for cell, _ in cells_and_configs] == [False, False, True, True, True]
    assert {config["max_epochs"] for _, config in cells_and_configs} == {3}
    assert cells_and_configs[-1][1]["blocks"] == 1


# --- the checks on crafted metrics rows -------------------------------------------------------


def metrics_rows(**columns) -> pl.DataFrame:
    base = {
        "scorer": ["custom", "custom", "majority"],
        "fold": ["exp1_t1d_b0", "exp1_t1d", "exp1_t1d_b0"],
        "split": ["test", "test", "test"],
        "is_honest": [True, True, True],
        "known_at_ok": [True, True, True],
        "test_start": [dt.datetime(2024, 3, 2)] * 3,
        "embargo_end": [dt.datetime(2024, 3, 1, 23)] * 3,
        "suspicious": [False, False, False],
        "suspicious_reason": [None, None, None],
    }
    return pl.DataFrame(base | columns)


def test_known_at_before_test_fails_on_an_honest_row_whose_block_starts_too_early():
    assert known_at_before_test(metrics_rows()).passed
    late = known_at_before_test(metrics_rows(known_at_ok=[False, True, True]))
    assert not late.passed and not late.warn_only
    assert late.metadata["failing"] == [
        "custom exp1_t1d_b0: test starts 2024-03-02 00:00:00, not after the embargo's end "
            "2024-03-01 23:00:00"
    ]
    # seed_replica rows are dishonest by design: known_at_ok is false, and not checked
    seed = metrics_rows(is_honest=[False] * 3, known_at_ok=[False] * 3)
    assert known_at_before_test(seed).passed


def test_not_suspicious_warns_with_each_reason():
    assert not_suspicious(metrics_rows()).passed
    reason = "beats every baseline by more than its CI: 0.71 > 0.52"
    flagged = not_suspicious(
        metrics_rows(suspicious=[False, True, False], suspicious_reason=[None, reason, None])
    )
    assert not flagged.passed and flagged.warn_only
    assert flagged.metadata["reasons"] == [f"custom exp1_t1d: {reason}"]
