"""Materialize a job over ranges of days through Dagster: the main job and ``candlelake build``.

Each symbol's run of consecutive days is one run (the assets' backfill policy is a single run per
range), recorded in the persistent Dagster instance like a run launched from the UI, with the
same range tags a UI backfill gives its runs. Within a run, Dagster executes the steps in
dependency order over the whole range: every day is landed and curated before any day's
indicators or labels are computed, so warm-up history and label horizons inside the range are
complete.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg

from dagster_project.backfill import register_symbols
from dagster_project.core.days import consecutive_stretches
from dagster_project.core.errors import RunFailedError
from dagster_project.partitions import RANGE_END_TAG, RANGE_START_TAG, day_symbol_key

# Step-by-step DEBUG events go to the instance (and the UI), not to the terminal.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

STEP_ENDS = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
}
# Called with (steps finished so far in this run, steps in the run) while a run executes.
StepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class RangeRun:
    """One run: a symbol's consecutive days."""

    symbol: str
    first: dt.date
    last: dt.date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def tags(self) -> dict[str, str]:
        return {
            RANGE_START_TAG: str(day_symbol_key(self.first, self.symbol)),
            RANGE_END_TAG: str(day_symbol_key(self.last, self.symbol)),
        }

    def __str__(self) -> str:
        return f"{self.symbol} {self.first}..{self.last}"


@dataclass
class BuildReport:
    runs: int = 0
    failed_checks: list[str] = field(default_factory=list)
    warned_checks: list[str] = field(default_factory=list)

    def record(self, result: dg.ExecuteInProcessResult, label: str) -> None:
        """Count a successful run and its failed checks; a failed run raises."""
        self.runs += 1
        if not result.success:
            raise RunFailedError(
                f"run {result.run_id} for {label} failed: {step_failure(result)} "
                "(its logs are in `dagster dev`)"
            )
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                continue
            name = f"{label} {evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            if evaluation.severity == dg.AssetCheckSeverity.WARN:
                self.warned_checks.append(name)
            else:
                self.failed_checks.append(name)


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and its innermost error message (the library's own exception)."""
    failures = result.get_step_failure_events()
    if not failures:
        return "no step failed (the run itself did)"
    error = failures[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    qualified_name, _, text = message.partition(": ")
    if error.cls_name and qualified_name.endswith(error.cls_name):
        message = text  # "dagster_project.core.errors.UnknownSymbolError: …" → "…"
    return f"step {failures[0].step_key}: {message}"


def range_runs(symbols: Sequence[str], days: Sequence[dt.date]) -> list[RangeRun]:
    """One run per symbol and stretch of consecutive ``days``, symbols in the order given."""
    stretches = consecutive_stretches(days)
    return [RangeRun(symbol, s[0], s[-1]) for symbol in symbols for s in stretches]


def run_range(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    run: RangeRun,
    run_config: dict | None = None,
    on_step: StepProgress | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute ``job`` in process over one range, recorded in ``instance``. ``on_step`` is told
    how many of the run's steps have finished while it runs (read from the event log)."""
    register_symbols(instance, [run.symbol])
    run_id = str(uuid.uuid4())
    steps = len(job.graph.node_defs)
    with watching_steps(instance, run_id, steps, on_step):
        return job.execute_in_process(
            run_config=run_config or QUIET_RUN_CONFIG,
            instance=instance,
            tags=run.tags,
            run_id=run_id,
            raise_on_error=False,
        )


@contextmanager
def watching_steps(
    instance: dg.DagsterInstance, run_id: str, steps: int, on_step: StepProgress | None
) -> Iterator[None]:
    """Poll the run's finished steps every half second in a thread (the run itself must execute
    in the main thread), and once more at the end."""
    if on_step is None:
        yield
        return
    stop = threading.Event()

    def finished() -> int:
        return len(instance.get_records_for_run(run_id, of_type=STEP_ENDS, limit=steps).records)

    def poll() -> None:
        while not stop.wait(0.5):
            on_step(finished(), steps)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        on_step(finished(), steps)
