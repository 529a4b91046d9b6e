"""The main job: materialize the whole asset graph for the default partitions, recorded in Dagster.

Runs go into a persistent Dagster instance under the project (``.dagster_home``), so
``dagster dev`` started afterwards with the same ``DAGSTER_HOME`` shows every run, materialization
and check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from dagster_project.assets.experiments import EXPERIMENT_CELLS, register_cells
from dagster_project.build import QUIET_RUN_CONFIG, BuildReport, range_runs, run_range
from ml.experiment import Cell, grid

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DEFAULT_DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
DAGSTER_HOME_DIR = ".dagster_home"
# The default grid's run config (experiments/cells' CellConfig): Experiment I scaled to the
# default days (train on the first, test on the next two), tiny images, three epochs, and 200
# bootstrap replicates a CI (1,000 would take longer than the training).
DEFAULT_CELL_CONFIG = {"blocks": 2, "image_size": 32, "max_epochs": 3, "n_boot": 200}
DEFAULT_GRID_DAYS = 3  # the fewest days the default grid's folds fit in
INSTANCE_LOCK_FILE = ".candlelake-instance.lock"

# Written once into a new instance: no telemetry (the machines are offline), and a run queue
# (used by `dagster dev` backfills) that runs at most two runs at once, so a large backfill never
# starts dozens of processes on a 2-core machine, and starts a queued run within a second. Runs
# of an op in a pool (experiments/cells, pool "experiments") are queued until the pool has a
# free slot: one at a time, since one training already uses both cores. Granularity "run": the
# queue enforces it before launching, so a run executed in process (the CLI, `candlelake run`)
# never waits on, or leaves behind, a slot.
_INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    granularity: run
    default_limit: 1
"""
# The instance config earlier versions wrote; replaced by the one above when found unchanged.
_OLD_INSTANCE_YAMLS = (
    """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1
""",
)


def dagster_home(project_dir: Path | None = None) -> Path:
    """``$DAGSTER_HOME`` if set, else ``<project>/.dagster_home`` (created with a dagster.yaml)."""
    home = Path(os.environ.get("DAGSTER_HOME") or (project_dir or Path.cwd()) / DAGSTER_HOME_DIR)
    home = home.absolute()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() in _OLD_INSTANCE_YAMLS:
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
    """One ``market_job`` run per symbol over its days, one ``experiments_job`` run per cell of
    the default grid (on the first symbol), then one ``catalog_job`` run."""
    report = BuildReport()
    market_job = defs.resolve_job_def("market_job")
    dates = sorted(to_date(day) for day in days)
    runs = range_runs(symbols, dates)
    for n, run in enumerate(runs, start=1):
        result = run_range(market_job, instance, run)
        report.record(result, str(run))
        progress(f"[{n}/{len(runs)}] market_job {run}: ok")
    if len(dates) >= DEFAULT_GRID_DAYS:
        run_cells(defs, instance, default_grid(symbols[0], dates), report, progress)
    else:
        progress(f"experiments: skipped, the default grid needs {DEFAULT_GRID_DAYS} days")
    catalog_job = defs.resolve_job_def("catalog_job")
    result = catalog_job.execute_in_process(instance=instance, run_config=QUIET_RUN_CONFIG)
    report.record(result, "catalog")
    progress("catalog_job: ok")
    return report


def default_grid(symbol: str, days: Sequence[dt.date]) -> list[tuple[Cell, dict[str, object]]]:
    """The small grid of ``candlelake run``, each cell with its run config: custom and
    mobilenetv3 on Experiment I (train one day, test the next two), and three controls of
    custom: its shuffled-label control, the leaky label drawn in its images, and seed_replica
    (test day before the training day)."""
    config = DEFAULT_CELL_CONFIG | {"first_day": str(days[0]), "last_day": str(days[-1])}
    honest = grid([symbol], ["1m"], ["regular"], [5], ["custom", "mobilenetv3"], ["exp1_t1d"])
    custom = honest[0]
    controls = [
        dataclasses.replace(custom, shuffled=True),
        dataclasses.replace(custom, label="leaky_last_candle_up"),
    ]
    seed_replica = dataclasses.replace(custom, training="seed_t1d")
    return [(cell, config) for cell in honest + controls] + [(seed_replica, config | {"blocks": 1})]


def run_cells(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cells: Sequence[tuple[Cell, dict[str, object]]],
    report: BuildReport,
    progress: Callable[[str], None],
) -> None:
    """Register the cells as partitions of experiments/cells and materialize each in its own
    run (a dynamic partition is one run; the asset takes no ranges)."""
    job = defs.resolve_job_def("experiments_job")
    op_name = EXPERIMENT_CELLS.to_python_identifier()
    register_cells(instance, [cell.key for cell, _ in cells])
    for n, (cell, config) in enumerate(cells, start=1):
        result = job.execute_in_process(
            run_config=QUIET_RUN_CONFIG | {"ops": {op_name: {"config": config}}},
            instance=instance,
            partition_key=cell.key,
            raise_on_error=False,
        )
        report.record(result, cell.key)
        outcome = result.asset_materializations_for_node(op_name)[0].metadata["outcome"].value
        progress(f"[{n}/{len(cells)}] experiments/cells {cell.key}: {outcome}")


def to_date(day: str | dt.date) -> dt.date:
    return day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
