"""The main job: materialize the whole asset graph for the default partitions, recorded in Dagster.

Runs go into a persistent Dagster instance under the project (``.dagster_home``), so
``dagster dev`` started afterwards with the same ``DAGSTER_HOME`` shows every run, materialization
and check.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from dagster_project.build import QUIET_RUN_CONFIG, BuildReport, range_runs, run_range

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DEFAULT_DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
DAGSTER_HOME_DIR = ".dagster_home"
INSTANCE_LOCK_FILE = ".candlelake-instance.lock"

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
        write_config_atomically(config, _INSTANCE_YAML)
    return home


def write_config_atomically(path: Path, text: str) -> None:
    """Write ``path`` under a temporary name and rename it, so no reader sees it half-written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def persistent_instance(home: Path) -> dg.DagsterInstance:
    """The Dagster instance in ``home``; every caller opens it here.

    Opening a new instance creates its SQLite databases and stamps their schema version; two
    processes doing that at once leave a broken instance (duplicate ``alembic_version`` rows,
    ``table runs already exists``), so the opening is serialised by a lock file in ``home``.
    """
    os.environ["DAGSTER_HOME"] = str(home)
    with instance_lock(home):
        return dg.DagsterInstance.get()


@contextmanager
def instance_lock(home: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``home``'s lock file, held for the ``with`` block."""
    with open(home / INSTANCE_LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
