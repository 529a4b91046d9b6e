"""The Dagster UI over the project's instance shows the assets, checks and the main job's runs.

Starts the real `dagster-webserver` (what `dagster dev` serves) in its own process session, so it
can be stopped reliably, and asks its GraphQL API what a user would see.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dagster_project import main_job

pytestmark = pytest.mark.slow

QUERY = """
{
  runsOrError { ... on Runs { results { jobName status tags { key value } } } }
  assetNodes {
    assetKey { path } isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CANDLELAKE_LAKE", str(tmp_path / "lake"))
    instance = main_job.persistent_instance(main_job.dagster_home())
    from dagster_project.definitions import defs

    main_job.run_main_job(
        defs, instance, symbols=["BTCUSDT"], days=["2024-03-01"], progress=lambda _: None
    )
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-m",
            "dagster_project.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("dagster-webserver did not answer within 120 s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_ui_shows_assets_checks_and_main_job_runs(webserver):
    deadline = time.monotonic() + 60
    while True:  # the code location loads in the background after the server answers
        body = httpx.post(f"{webserver}/graphql", json={"query": QUERY}, timeout=30).json()
        assert "errors" not in body, body["errors"]
        data = body["data"]
        if data["assetNodes"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assets = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(assets) == {"raw/klines", "curated/klines", "curated/kline_gaps", "catalog"}
    assert assets["raw/klines"]["isPartitioned"] and not assets["catalog"]["isPartitioned"]
    raw_checks = {c["name"] for c in assets["raw/klines"]["assetChecksOrError"]["checks"]}
    assert "ohlc_consistent" in raw_checks and len(raw_checks) == 5
    runs = data["runsOrError"]["results"]
    assert sorted((r["jobName"], r["status"]) for r in runs) == [
        ("catalog_job", "SUCCESS"),
        ("klines_job", "SUCCESS"),
    ]
    partition_tags = [
        t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"
    ]
    assert partition_tags == ["2024-03-01|BTCUSDT"]
