"""The main job: materialize the whole asset graph for the default partitions, recorded in Dagster.

Runs go into a persistent Dagster instance under the project (``.dagster_home``), so
``dagster dev`` started afterwards with the same ``DAGSTER_HOME`` shows every run, materialization
and check.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg

from dagster_project.build import QUIET_RUN_CONFIG, BuildReport, range_runs, run_range

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DEFAULT_DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
DAGSTER_HOME_DIR = ".dagster_home"

# Written once into a new instance: no telemetry (the machines are offline), and a run queue
# (used by `dagster dev` backfills) that runs at most two runs at once, so a large backfill never
# starts dozens of processes on a 2-core machine, and starts a queued run within a second.
_INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1
"""


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
) -> BuildReport:
    """One ``market_job`` run per symbol over its days, then one ``catalog_job`` run."""
    report = BuildReport()
    market_job = defs.resolve_job_def("market_job")
    runs = range_runs(symbols, [to_date(day) for day in days])
    for n, run in enumerate(runs, start=1):
        result = run_range(market_job, instance, run)
        report.record(result, str(run))
        progress(f"[{n}/{len(runs)}] market_job {run}: ok")
    catalog_job = defs.resolve_job_def("catalog_job")
    result = catalog_job.execute_in_process(instance=instance, run_config=QUIET_RUN_CONFIG)
    report.record(result, "catalog")
    progress("catalog_job: ok")
    return report


def to_date(day: str | dt.date) -> dt.date:
    return day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
