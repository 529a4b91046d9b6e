"""The project's Dagster instance: opened by several commands at once on a new DAGSTER_HOME."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import dagster as dg
import pytest

from dagster_project.main_job import dagster_home, persistent_instance
from tests.conftest import REPO_ROOT

# Each process opens the instance (creating its databases when it is the first) and records an
# asset event, as `candlelake ingest` does for every partition it lands.
_OPEN_AND_RECORD = """\
import sys
import dagster as dg
from dagster_project.main_job import dagster_home, persistent_instance
instance = persistent_instance(dagster_home())
instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=f"probe_{sys.argv[1]}"))
"""
PROCESSES = 6


@pytest.mark.slow
def test_concurrent_first_opens_create_one_sound_instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = dict(os.environ)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_RECORD, str(n)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    failed = [out for p, out in zip(processes, outputs, strict=True) if p.returncode != 0]
    assert not failed, failed[0][-2000:]
    runs_db = sqlite3.connect(home / "history" / "runs.db")
    try:
        assert runs_db.execute("select count(*) from alembic_version").fetchone() == (1,)
    finally:
        runs_db.close()
    instance = persistent_instance(dagster_home())  # a later command still opens it
    recorded = {key.to_user_string() for key in instance.get_asset_keys()}
    assert recorded == {f"probe_{n}" for n in range(PROCESSES)}


def test_dagster_home_writes_its_config_once_and_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    home = dagster_home()
    config = home / "dagster.yaml"
    config.write_text("telemetry:\n  enabled: false\n")  # a user's own config is kept
    assert dagster_home() == home
    assert config.read_text() == "telemetry:\n  enabled: false\n"
    assert [p.name for p in home.iterdir() if p.name.startswith(".dagster.yaml")] == []
    assert isinstance(persistent_instance(home), dg.DagsterInstance)
