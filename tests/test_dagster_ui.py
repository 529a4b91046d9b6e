"""`dagster dev` over the project's instance: the UI shows what the main job did, and a backfill
launched the way the UI launches one (its GraphQL mutation) is run by the daemon.

Starts the real `dagster dev` in its own process session, so it can be stopped reliably.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dagster_project import main_job
from dagster_project.core.lake import Lake
from tests.fakes.local_server import free_port, poll_until
from tests.helpers import ALL_ASSET_KEYS

pytestmark = pytest.mark.slow

OVERVIEW = """
{
  runsOrError { ... on Runs { results { jobName status tags { key value } } } }
  assetNodes {
    assetKey { path } isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 100) { tags { key value } } }
  }
}
"""


class DagsterDev:
    def __init__(self, url: str):
        self.url = url

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        ).json()
        assert "errors" not in body, body["errors"]
        return body["data"]



def wait_for(condition, timeout_s: float, what: str):
    result = poll_until(condition, timeout_s, interval_s=1)
    if not result:
        pytest.fail(f"{what} did not happen within {timeout_s} s")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project directory after the main job ran (one partition), with its instance and lake."""
    root = tmp_path_factory.mktemp("project")
    env = {"DAGSTER_HOME": str(root / ".dagster_home"), "CANDLELAKE_LAKE": str(root / "lake")}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        instance = main_job.persistent_instance(main_job.dagster_home())
        from dagster_project.definitions import defs

        main_job.run_main_job(
            defs, instance, symbols=["BTCUSDT"], days=["2024-03-01"], progress=lambda _: None
        )
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return root, env


@pytest.fixture(scope="module")
def dagster_dev(project):
    root, env = project
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-m",
            "dagster_project.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=root,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        dev = DagsterDev(f"http://127.0.0.1:{port}")
        wait_for(
            lambda: httpx.get(f"{dev.url}/server_info", timeout=2).status_code == 200,
            120,
            "dagster dev answering",
        )
        # the code location loads in the background after the server answers
        wait_for(lambda: dev.graphql(OVERVIEW)["assetNodes"], 60, "the code location loading")
        yield dev
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_ui_shows_assets_checks_and_main_job_runs(dagster_dev):
    data = dagster_dev.graphql(OVERVIEW)
    assets = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(assets) == ALL_ASSET_KEYS
    assert assets["raw/klines"]["isPartitioned"] and not assets["catalog"]["isPartitioned"]
    raw_checks = {c["name"] for c in assets["raw/klines"]["assetChecksOrError"]["checks"]}
    assert "ohlc_consistent" in raw_checks and len(raw_checks) == 5
    runs = data["runsOrError"]["results"]
    assert sorted((r["jobName"], r["status"]) for r in runs) == [
        ("catalog_job", "SUCCESS"),
        ("market_job", "SUCCESS"),
    ]
    ranges = [
        (t["key"].rsplit("_", 1)[-1], t["value"])
        for r in runs
        for t in r["tags"]
        if t["key"].startswith("dagster/asset_partition_range_")
    ]
    assert sorted(ranges) == [("end", "2024-03-01|BTCUSDT"), ("start", "2024-03-01|BTCUSDT")]


def test_backfill_launched_like_the_ui_is_run_by_the_daemon(dagster_dev, project):
    params = {
        "partitionNames": ["2024-03-02|BTCUSDT", "2024-03-03|BTCUSDT"],
        "assetSelection": [
            {"path": ["raw", "klines"]},
            {"path": ["curated", "klines"]},
            {"path": ["curated", "kline_gaps"]},
        ],
    }
    launched = dagster_dev.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    def finished():
        backfill = dagster_dev.graphql(BACKFILL_STATUS, {"id": launched["backfillId"]})
        backfill = backfill["partitionBackfillOrError"]
        status = backfill["status"]
        done = status.startswith("COMPLETED") or status in ("FAILED", "CANCELED")
        return backfill if done else None

    backfill = wait_for(finished, 240, "the backfill finishing")
    assert backfill["status"] == "COMPLETED_SUCCESS"
    # both days in one run: the assets' single-run backfill policy
    (run,) = backfill["runs"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == "2024-03-02|BTCUSDT"
    assert tags["dagster/asset_partition_range_end"] == "2024-03-03|BTCUSDT"
    lake = Lake(project[0] / "lake")
    days = sorted(k["date"] for k in lake.partitions("curated", "klines") if k["interval"] == "1h")
    assert days == ["2024-03-01", "2024-03-02", "2024-03-03"]
