"""The main job: materialize the whole asset graph for the default partitions, recorded in Dagster.

Runs go into a persistent Dagster instance under the project (``.dagster_home``), so
``dagster dev`` started afterwards with the same ``DAGSTER_HOME`` shows every run, materialization
and check.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from dagster_project.backfill import register_symbols
from dagster_project.partitions import day_symbol_key

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DEFAULT_DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
DAGSTER_HOME_DIR = ".dagster_home"

# Step-by-step DEBUG events go to the instance (and the UI), not to the terminal.
_QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

# Written once into a new instance: no telemetry (the machines are offline) and no run queue
# needed for in-process runs.
_INSTANCE_YAML = """\
telemetry:
  enabled: false
"""


@dataclass
class MainJobReport:
    runs: int = 0
    failed_checks: list[str] = field(default_factory=list)
    warned_checks: list[str] = field(default_factory=list)


def dagster_home(project_dir: Path | None = None) -> Path:
    """``$DAGSTER_HOME`` if set, else ``<project>/.dagster_home`` (created with a dagster.yaml)."""
    home = Path(os.environ.get("DAGSTER_HOME") or (project_dir or Path.cwd()) / DAGSTER_HOME_DIR)
    home = home.absolute()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(_INSTANCE_YAML)
    return home


def persistent_instance(home: Path) -> dg.DagsterInstance:
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_main_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    days: Sequence[str | dt.date] = DEFAULT_DAYS,
    progress: Callable[[str], None] = print,
) -> MainJobReport:
    """One ``market_job`` run per day × symbol partition, then one ``catalog_job`` run."""
    register_symbols(instance, symbols)
    report = MainJobReport()
    market_job = defs.resolve_job_def("market_job")
    keys = [day_symbol_key(day, symbol) for day in days for symbol in symbols]
    for n, key in enumerate(keys, start=1):
        result = market_job.execute_in_process(
            partition_key=str(key), instance=instance, run_config=_QUIET_RUN_CONFIG
        )
        record(report, result, str(key))
        progress(f"[{n}/{len(keys)}] market_job {key}: {'ok' if result.success else 'FAILED'}")
    catalog_job = defs.resolve_job_def("catalog_job")
    result = catalog_job.execute_in_process(instance=instance, run_config=_QUIET_RUN_CONFIG)
    record(report, result, "catalog")
    progress(f"catalog_job: {'ok' if result.success else 'FAILED'}")
    return report


def record(report: MainJobReport, result: dg.ExecuteInProcessResult, label: str) -> None:
    report.runs += 1
    if not result.success:
        raise RuntimeError(
            f"run {result.run_id} for {label} failed; see `dagster dev` for its logs"
        )
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        name = f"{label} {evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        if evaluation.severity == dg.AssetCheckSeverity.WARN:
            report.warned_checks.append(name)
        else:
            report.failed_checks.append(name)
