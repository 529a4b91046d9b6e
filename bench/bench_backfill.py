"""Backfills of Binance Vision history through Dagster: the CLI, the UI's job and asset backfills.

    python bench/bench_backfill.py [--quick]

A local server publishes Binance Vision archives (spot CSV layout, monthly and daily, with their
.CHECKSUM files) made from the project's simulator for 6 symbols over 2024-01..2024-03. Each
measurement starts from nothing: a fresh lake and a fresh Dagster instance
(``main_job.dagster_home``, whose queued run coordinator runs at most 2 runs at once).

1. CLI: ``candlelake build --source vision --through windows`` of BTCUSDT over 30 days (one
   in-process ``windows_job`` run).
2. UI, job backfill: ``dagster dev`` (webserver + daemon) with ``CANDLELAKE_SOURCE=vision``; the
   symbol added with the ``addDynamicPartition`` mutation (the UI's "+"), then the same 30
   partitions launched with ``launchPartitionBackfill`` and ``windows_job``'s partition set, as
   the job's Partitions tab does. Timed from the mutation to the last run's end and to the
   backfill's COMPLETED_SUCCESS (the daemon notices finished runs on its ticks).
3. UI, asset backfill: the same partitions with ``assetSelection`` = windows_job's assets, as the
   asset graph's "Materialize" launches it; Dagster extends the targets downstream along the
   partition mappings (indicators read 124 days of warm-up), so the targeted partitions per asset
   are reported.
4. Scale: ``candlelake build --source vision --through images`` of 6 symbols x 90 days (stopped
   after an hour, reporting what it had done).

Each result lists the seconds spent in each step (from the instance's event log) and the lake's
partitions and rows per table; the job backfill's lake must equal the CLI's. Goals: (2) completes
within 1.5x of (1) with the same lake; (4) within 10 minutes on 2 cores. ``--quick``: 2 symbols,
5 days (for development). The archive tree is built once and cached in the temp folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project import main_job  # noqa: E402
from dagster_project.core.klines import TimeRange  # noqa: E402
from dagster_project.core.lake import Lake  # noqa: E402
from dagster_project.ingest import simulator  # noqa: E402
from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key  # noqa: E402
from tests.fakes import vision_server  # noqa: E402
from tests.fakes.local_server import free_port, poll_until  # noqa: E402
from tests.fakes.vision_server import VisionServer, build_vision_tree  # noqa: E402

BIN = Path(sys.executable).parent
TIME = Path("/usr/bin/time")  # GNU time: -v reports the peak RSS
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT")
INTERVAL = "1m"
JOB = "windows_job"
UI_TIMEOUT_S = 30 * 60
CLI_TIMEOUT_S = 60 * 60
POLL_S = 1.0  # how often the backfill's status is asked for (its resolution)


@dataclass(frozen=True)
class Plan:
    """What is backfilled: one symbol over ``backfill_days`` (1-3), every symbol over
    ``scale_days`` (4), all from ``first_day``."""

    symbols: tuple[str, ...]
    first_day: dt.date
    backfill_days: int
    scale_days: int

    @property
    def backfill_symbol(self) -> str:
        return self.symbols[0]

    def days(self, count: int) -> list[dt.date]:
        return [self.first_day + dt.timedelta(days=n) for n in range(count)]

    def end(self, count: int) -> dt.date:
        """The exclusive end of ``count`` days, as ``--end`` takes it."""
        return self.first_day + dt.timedelta(days=count)

    def months(self) -> list[dt.date]:
        """The first day of every calendar month the plan touches (published whole)."""
        firsts = {day.replace(day=1) for day in self.days(max(self.backfill_days, self.scale_days))}
        return sorted(firsts)


FULL = Plan(SYMBOLS, dt.date(2024, 1, 1), backfill_days=30, scale_days=90)
QUICK = Plan(SYMBOLS[:2], dt.date(2024, 1, 1), backfill_days=5, scale_days=5)


class BenchmarkFailure(RuntimeError):
    """A measurement could not finish (a failed run, a timeout); its message says why."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 symbols, 5 days")
    plan = QUICK if parser.parse_args(argv).quick else FULL
    tree = vision_tree(plan)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench_backfill_") as tmp, VisionServer(tree) as server:
        work = Path(tmp)
        measurements: dict[str, Callable[[], object]] = {
            "cli": lambda: measure_cli(plan, server, work / "cli"),
            "job": lambda: measure_ui_backfill(plan, server, work / "job", by_assets=False),
            "assets": lambda: measure_ui_backfill(plan, server, work / "assets", by_assets=True),
            "scale": lambda: measure_scale(plan, server, work / "scale"),
        }
        for name, measure in measurements.items():
            server.clear()
            say(f"measuring {name} ...")
            try:
                results[name] = measure()
            except BenchmarkFailure as exc:
                say(f"{name} FAILED: {exc}")
                results[name] = exc
            say(describe(name, results[name]))
    print()
    print_table(plan, results)
    return 0 if not any(isinstance(r, BenchmarkFailure) for r in results.values()) else 1


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the archive tree ------------------------------------------------------------------------------


def vision_tree(plan: Plan) -> Path:
    """The published archives of every symbol over the plan's months, built once and cached in
    the temp folder under a key of what makes them (symbols, months, the simulator's code)."""
    recipe = [*plan.symbols, *map(str, plan.months()), str(simulator.SimulatorConfig())]
    digest = hashlib.sha256("\n".join(recipe).encode())
    code = [*sorted(Path(simulator.__file__).parent.glob("*.py")), Path(vision_server.__file__)]
    for source in code:
        digest.update(source.read_bytes())
    tree = Path(tempfile.gettempdir()) / "candlelake_bench_backfill" / digest.hexdigest()[:16]
    if tree.exists():
        return tree
    say(f"building the Vision archive tree in {tree} (once) ...")
    building = tree.with_name(tree.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    months = plan.months()
    span = TimeRange.checked(months[0].isoformat(), next_month(months[-1]).isoformat())
    for symbol in plan.symbols:
        klines = simulator.simulate_klines(symbol, INTERVAL, span)
        build_vision_tree(building, vision_server.spot_kline_archives(symbol, INTERVAL, klines))
    building.rename(tree)
    return tree


def next_month(first: dt.date) -> dt.date:
    return (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


# -- a project from nothing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A fresh project folder: its lake and its Dagster instance (the project's dagster.yaml)."""

    root: Path

    @classmethod
    def fresh(cls, root: Path) -> Project:
        root.mkdir(parents=True)
        # dagster_home creates <root>/.dagster_home only when DAGSTER_HOME names no other one;
        # the subprocesses get this project's home through env()
        os.environ.pop("DAGSTER_HOME", None)
        main_job.dagster_home(root)
        return cls(root)

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def home(self) -> Path:
        return self.root / main_job.DAGSTER_HOME_DIR

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CANDLELAKE_LAKE": str(self.lake),
            "DAGSTER_HOME": str(self.home),
            **extra,
        }

    def runs(self) -> Counter[tuple[str, str]]:
        """(job, status) -> how many runs the instance recorded."""
        import dagster as dg

        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            return Counter((r.job_name, r.status.value) for r in instance.get_runs())

    def step_seconds(self) -> dict[str, float]:
        """Seconds spent in each step (asset), summed over the instance's runs (event log)."""
        import dagster as dg

        ends = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
        kinds = {dg.DagsterEventType.STEP_START, *ends}
        took: Counter[str] = Counter()
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            for run in instance.get_runs():
                started: dict[str, float] = {}
                for record in instance.get_records_for_run(run.run_id, of_type=kinds).records:
                    entry = record.event_log_entry
                    if entry.dagster_event.event_type in ends:
                        took[entry.step_key] += entry.timestamp - started[entry.step_key]
                    else:
                        started[entry.step_key] = entry.timestamp
        return dict(took.most_common())

    def tables(self) -> dict[str, TableSize]:
        """Partitions and rows of every lake table, as ``layer/table``."""
        lake = Lake(self.lake)
        sizes = {}
        for table_dir in sorted(self.lake.glob("[!.]*/[!.]*")):
            layer, table = table_dir.parent.name, table_dir.name
            keys = list(lake.partitions(layer, table)) if table_dir.is_dir() else []
            if keys:
                files = [f for k in keys for f in lake.partition_files(layer, table, k)]
                rows = sum(pq.read_metadata(f).num_rows for f in files)
                sizes[f"{layer}/{table}"] = TableSize(len(keys), rows)
        return sizes


@dataclass(frozen=True)
class TableSize:
    partitions: int
    rows: int


# -- 1 and 4: the CLI ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    wall_s: float
    peak_rss_mib: float | None  # of the candlelake process (GNU time), None without it
    runs: Counter[tuple[str, str]]
    steps: dict[str, float]  # seconds in each step, most first
    tables: dict[str, TableSize]
    archives: Counter[str]  # archives downloaded, by period (monthly, daily)
    finished: bool  # False: stopped at CLI_TIMEOUT_S, the rest is what it had done by then


def measure_cli(plan: Plan, server: VisionServer, root: Path) -> CliResult:
    return build(
        plan, server, Project.fresh(root), [plan.backfill_symbol], plan.backfill_days, "windows"
    )


def measure_scale(plan: Plan, server: VisionServer, root: Path) -> CliResult:
    return build(plan, server, Project.fresh(root), plan.symbols, plan.scale_days, "images")


def build(
    plan: Plan,
    server: VisionServer,
    project: Project,
    symbols: Sequence[str],
    days: int,
    through: str,
) -> CliResult:
    """``candlelake build`` from the Vision server as a subprocess (start-up included)."""
    args = [
        "build", "--source", "vision", "--base-url", server.base_url,
        "--symbols", ",".join(symbols), "--interval", INTERVAL,
        "--start", plan.first_day.isoformat(), "--end", plan.end(days).isoformat(),
        "--through", through,
    ]  # fmt: skip
    command = [str(BIN / "candlelake"), *args]
    if TIME.exists():
        command = [str(TIME), "-v", *command]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(process)
        say(f"candlelake {' '.join(args)} stopped after {CLI_TIMEOUT_S} s")
        return cli_result(project, server, CLI_TIMEOUT_S, None, finished=False)
    wall_s = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchmarkFailure(
            f"candlelake {' '.join(args)} exited {process.returncode}:\n{tail(stderr)}"
        )
    return cli_result(project, server, wall_s, peak_rss_mib(stderr), finished=True)


def cli_result(
    project: Project,
    server: VisionServer,
    wall_s: float,
    peak_rss_mib: float | None,
    finished: bool,
) -> CliResult:
    return CliResult(
        wall_s,
        peak_rss_mib,
        project.runs(),
        project.step_seconds(),
        project.tables(),
        archives_downloaded(server),
        finished,
    )


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with everything it started."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def peak_rss_mib(time_output: str) -> float | None:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output)
    return int(found.group(1)) / 1024 if found else None


def archives_downloaded(server: VisionServer) -> Counter[str]:
    """Archives the server sent whole or in part, by period (``monthly``/``daily``)."""
    return Counter(
        r.path.split("/")[2]
        for r in server.requests
        if r.method == "GET" and r.path.endswith(".zip") and r.status in (200, 206)
    )


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# -- 2 and 3: backfills through dagster dev --------------------------------------------------------

ADD_PARTITION = """
mutation($repositorySelector: RepositorySelector!, $partitionsDefName: String!,
         $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector,
                      partitionsDefName: $partitionsDefName, partitionKey: $partitionKey) {
    __typename ... on PythonError { message } ... on UnauthorizedError { message }
  }
}
"""
LAUNCH_BACKFILL = """
mutation($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
    ... on PartitionSetNotFoundError { message } ... on PartitionKeysNotFoundError { message }
  }
}
"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}
"""
BACKFILL_DETAIL = """
query($id: String!, $tags: [ExecutionTag!]) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      status
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsMaterialized
            numPartitionsFailed numPartitionsInProgress
          }
        }
      }
    }
  }
  runsOrError(filter: {tags: $tags}) {
    ... on Runs {
      results {
        runId status creationTime startTime endTime
        assetSelection { path }
        tags { key value }
      }
    }
  }
}
"""
REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }
"""
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class BackfillRun:
    status: str
    queued_s: float  # launch mutation -> the run's creation
    started_s: float  # launch mutation -> the run's start
    ended_s: float  # launch mutation -> the run's end
    assets: tuple[str, ...]
    partitions: str  # its range, or its one partition


@dataclass
class BackfillResult:
    status: str
    completed_s: float  # launch mutation -> a finished status seen (POLL_S resolution)
    runs: list[BackfillRun]
    targeted: dict[str, int] = field(default_factory=dict)  # asset backfills: per asset
    materialized: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    error: str = ""
    steps: dict[str, float] = field(default_factory=dict)  # seconds in each step, most first
    tables: dict[str, TableSize] = field(default_factory=dict)  # what the lake holds after it

    @property
    def runs_done_s(self) -> float:
        return max((r.ended_s for r in self.runs), default=float("nan"))


def measure_ui_backfill(
    plan: Plan, server: VisionServer, root: Path, by_assets: bool
) -> BackfillResult:
    """Launch the plan's backfill days through ``dagster dev`` as the UI does; wait for the end."""
    project = Project.fresh(root)
    env = project.env(CANDLELAKE_SOURCE="vision", CANDLELAKE_VISION_URL=server.base_url)
    symbol = plan.backfill_symbol
    names = [str(day_symbol_key(day, symbol)) for day in plan.days(plan.backfill_days)]
    with dagster_dev(project, env) as dev:
        repository = dev.repository()
        added = dev.graphql(
            ADD_PARTITION,
            {
                "repositorySelector": repository,
                "partitionsDefName": SYMBOLS_PARTITION_NAME,
                "partitionKey": symbol,
            },
        )["addDynamicPartition"]
        if added["__typename"] != "AddDynamicPartitionSuccess":
            raise BenchmarkFailure(f"adding symbol {symbol} failed: {added}")
        params: dict[str, object] = {"partitionNames": names, "fromFailure": False, "tags": []}
        if by_assets:
            params["assetSelection"] = [{"path": key.split("/")} for key in job_assets()]
        else:
            params["selector"] = {
                "partitionSetName": f"{JOB}_partition_set",
                "repositorySelector": repository,
            }
        launched_at = time.time()
        launched = dev.graphql(LAUNCH_BACKFILL, {"backfillParams": params})
        launched = launched["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise BenchmarkFailure(f"launchPartitionBackfill answered {launched}")
        backfill_id = launched["backfillId"]
        status = dev.wait_for(lambda: finished_status(dev, backfill_id), "the backfill finishing")
        completed_s = time.time() - launched_at
        result = backfill_result(dev, backfill_id, status, completed_s, launched_at)
    result.steps, result.tables = project.step_seconds(), project.tables()
    return result


def finished_status(dev: DagsterDev, backfill_id: str) -> str | None:
    answer = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    return answer["status"] if answer["status"] in FINISHED else None


def backfill_result(
    dev: DagsterDev, backfill_id: str, status: str, completed_s: float, launched_at: float
) -> BackfillResult:
    tags = [{"key": "dagster/backfill", "value": backfill_id}]
    data = dev.graphql(BACKFILL_DETAIL, {"id": backfill_id, "tags": tags})
    backfill, runs = data["partitionBackfillOrError"], data["runsOrError"]["results"]
    result = BackfillResult(status, completed_s, [backfill_run(r, launched_at) for r in runs])
    result.error = (backfill.get("error") or {}).get("message", "")
    for counts in (backfill.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
        key = "/".join(counts["assetKey"]["path"])
        result.targeted[key] = counts["numPartitionsTargeted"]
        result.materialized[key] = counts["numPartitionsMaterialized"]
        result.failed[key] = counts["numPartitionsFailed"]
    return result


def backfill_run(run: dict, launched_at: float) -> BackfillRun:
    tags = {t["key"]: t["value"] for t in run["tags"]}
    partitions = (
        f"{tags[RANGE_START]}..{tags[RANGE_END]}"
        if RANGE_START in tags
        else tags.get("dagster/partition", "?")
    )

    def since_launch(value: float | None) -> float:
        return value - launched_at if value else float("nan")

    return BackfillRun(
        status=run["status"],
        queued_s=since_launch(run["creationTime"]),
        started_s=since_launch(run["startTime"]),
        ended_s=since_launch(run["endTime"]),
        assets=tuple(sorted("/".join(a["path"]) for a in run["assetSelection"] or [])),
        partitions=partitions,
    )


def job_assets() -> list[str]:
    """The asset keys of windows_job, as the asset graph selects them for "Materialize"."""
    from dagster_project.definitions import defs
    from dagster_project.jobs import WINDOWS

    return sorted(k.to_user_string() for k in WINDOWS.resolve(defs.resolve_asset_graph()))


class DagsterDev:
    """A running ``dagster dev``, spoken to through its GraphQL API as the UI does."""

    def __init__(self, url: str, log: Path):
        self.url = url
        self.log = log

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=120
        )
        body = response.json()
        if body.get("errors"):
            raise BenchmarkFailure(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def repository(self) -> dict[str, str]:
        """The repository selector of the project's one code location."""
        nodes = self.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
        return {
            "repositoryName": nodes[0]["name"],
            "repositoryLocationName": nodes[0]["location"]["name"],
        }

    def wait_for(self, condition: Callable[[], object], what: str, timeout_s: float = UI_TIMEOUT_S):
        result = poll_until(condition, timeout_s, POLL_S)
        if result:
            return result
        raise BenchmarkFailure(
            f"{what} did not happen within {timeout_s} s; log:\n"
            f"{tail(self.log.read_text(errors='replace'))}"
        )


@contextmanager
def dagster_dev(project: Project, env: dict[str, str]) -> Iterator[DagsterDev]:
    """``dagster dev`` over the project in its own process session, stopped with it whole."""
    port = free_port()
    log = project.root / "dagster_dev.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                str(BIN / "dagster"),
                "dev",
                "-m",
                "dagster_project.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=project.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        dev = DagsterDev(f"http://127.0.0.1:{port}", log)
        dev.wait_for(
            lambda: httpx.get(f"{dev.url}/server_info", timeout=2).status_code == 200,
            "dagster dev answering",
            180,
        )
        # the code location loads in the background after the server answers
        dev.wait_for(
            lambda: dev.graphql(REPOSITORIES)["repositoriesOrError"].get("nodes"),
            "the code location loading",
            180,
        )
        yield dev
    finally:
        stop(server)


# -- reporting -------------------------------------------------------------------------------------


def describe(name: str, result: object) -> str:
    if isinstance(result, BenchmarkFailure):
        return f"{name}: failed"
    if isinstance(result, CliResult):
        lines = [
            f"{name}: {wall(result)}, runs {dict(result.runs)}, peak RSS "
            f"{fmt_mib(result.peak_rss_mib)}, archives downloaded {dict(result.archives)}"
        ]
    else:
        assert isinstance(result, BackfillResult)
        lines = [
            f"{name}: {result.status} after {result.completed_s:.1f} s; runs done at "
            f"{result.runs_done_s:.1f} s; {len(result.runs)} run(s) {result.error}"
        ]
        for run in sorted(result.runs, key=lambda r: r.queued_s):
            lines.append(
                f"  run {run.status}: created {run.queued_s:.1f} s, started {run.started_s:.1f} "
                f"s, ended {run.ended_s:.1f} s; {run.partitions}; {', '.join(run.assets) or 'job'}"
            )
        for key, targeted in result.targeted.items():
            lines.append(
                f"  {key}: {targeted} targeted, {result.materialized[key]} materialized, "
                f"{result.failed[key]} failed"
            )
    lines.append("  steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.steps.items()))
    lines.append(
        "  lake: "
        + ", ".join(
            f"{k} {v.partitions} partitions / {v.rows:,} rows" for k, v in result.tables.items()
        )
    )
    return "\n".join(lines)


def same_lake(result: object, cli: object) -> str:
    """Whether a backfill left the lake the CLI build left (partitions and rows per table)."""
    if not (isinstance(result, BackfillResult) and finished(cli)):
        return ""
    empty = TableSize(0, 0)
    differing = [
        f"{key} {result.tables.get(key, empty).partitions} of {size.partitions} partitions"
        for key, size in cli.tables.items()
        if result.tables.get(key) != size
    ]
    if differing:
        return "; lake NOT the CLI's: " + ", ".join(differing)
    return "; lake = the CLI's"


def fmt_mib(value: float | None) -> str:
    return f"{value:,.0f} MiB" if value is not None else "n/a"


SCALE_TABLES = (
    "raw/klines",
    "curated/klines",
    "features/indicators",
    "labels/labels",
    "windows/windows",
    "images/*",
)


def print_table(plan: Plan, results: dict[str, object]) -> None:
    days, symbol = plan.backfill_days, plan.backfill_symbol
    cli, job, assets, scale = (results[k] for k in ("cli", "job", "assets", "scale"))
    cli_text = (
        f"`candlelake build --through windows`: {wall(cli)}, {sum(cli.runs.values())} run"
        if isinstance(cli, CliResult)
        else "failed"
    )
    print("| benchmark | candlelake | reference (same run) | ratio | goal | met |")
    print("|---|---:|---:|---:|---|---|")
    print(
        f"| Backfill {days} days of {symbol} through `{JOB}` from Vision archives (local "
        "server), launched from the job's Partitions tab (`dagster dev`, GraphQL "
        f"`launchPartitionBackfill`) — `bench_backfill.py` | {backfill_cell(job)}"
        f"{same_lake(job, cli)} | {cli_text} "
        f"| {ratio(job, cli)} | COMPLETED_SUCCESS ≤ 1.5× the CLI | {met_job(job, cli)} |"
    )
    print(
        f'| Same {days} partitions as an asset backfill (asset graph "Materialize" of '
        f"`{JOB}`'s assets); targeted partitions per asset: {targeted_cell(assets)} "
        f"| {backfill_cell(assets)} | {cli_text} | {ratio(assets, cli)} | — | — |"
    )
    print(
        f"| `candlelake build --through images` from Vision, {len(plan.symbols)} symbols × "
        f"{plan.scale_days} days, from nothing | {scale_cell(scale)} | — | — | ≤ 10 min on "
        f"2 cores | {met_scale(scale)} |"
    )


def backfill_cell(result: object) -> str:
    if not isinstance(result, BackfillResult):
        return "failed"
    statuses = Counter(r.status for r in result.runs)
    runs = ", ".join(f"{n} {s}" for s, n in statuses.items()) or "none"
    first = min((r.queued_s for r in result.runs), default=float("nan"))
    return (
        f"{result.status} at {result.completed_s:.1f} s; first run created at {first:.1f} s, "
        f"runs done at {result.runs_done_s:.1f} s; {len(result.runs)} run(s): {runs}"
    )


def targeted_cell(result: object) -> str:
    if not isinstance(result, BackfillResult) or not result.targeted:
        return "n/a"
    return ", ".join(f"{k} {n}" for k, n in result.targeted.items())


def scale_cell(result: object) -> str:
    if not isinstance(result, CliResult):
        return "failed"
    sizes = dict(result.tables)
    images = [sizes.pop(k) for k in list(sizes) if k.startswith("images/")]
    if images:
        sizes["images/*"] = TableSize(
            sum(s.partitions for s in images), sum(s.rows for s in images)
        )
    shown = ", ".join(
        f"{k} {sizes[k].rows:,} / {sizes[k].partitions}" for k in SCALE_TABLES if k in sizes
    )
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.steps.items())
    return (
        f"{wall(result)}, {sum(result.runs.values())} runs, peak RSS "
        f"{fmt_mib(result.peak_rss_mib)}; steps: {steps}; rows / partitions: {shown}"
    )


def wall(result: CliResult) -> str:
    return f"{result.wall_s:.1f} s" if result.finished else f"> {result.wall_s:.0f} s (stopped)"


def finished(cli: object) -> bool:
    return isinstance(cli, CliResult) and cli.finished


def ratio(result: object, cli: object) -> str:
    if isinstance(result, BackfillResult) and finished(cli):
        return f"{result.completed_s / cli.wall_s:.2f}×"
    return "—"


def met_job(result: object, cli: object) -> str:
    if not (isinstance(result, BackfillResult) and finished(cli)):
        return "**no** (failed)"
    if result.status != "COMPLETED_SUCCESS" or result.tables != cli.tables:
        return "**no** (wrong result)"
    return "yes" if result.completed_s <= 1.5 * cli.wall_s else "**no**"


def met_scale(result: object) -> str:
    if not isinstance(result, CliResult):
        return "**no** (failed)"
    return "yes" if result.finished and result.wall_s <= 600 else "**no**"


if __name__ == "__main__":
    raise SystemExit(main())
