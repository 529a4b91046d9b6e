"""Lake integrity: content hashes recorded at write time and verified before a file is read to
build another, `candlelake verify`, crash leftovers swept, a copied lake's catalog."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dagster_project.assets.catalog import CATALOG_VIEWS, catalog
from dagster_project.cli import main
from dagster_project.core import lake as lake_module
from dagster_project.core.checks import files_intact
from dagster_project.core.errors import CorruptPartitionError, LakeWriteError
from dagster_project.core.integrity import (
    FileStatus,
    file_status,
    sidecars,
    verify_files,
    verify_lake,
)
from dagster_project.core.lake import (
    CatalogRootWarning,
    CatalogView,
    Lake,
    build_catalog,
    catalog_root_mismatch,
    open_catalog,
    temp_path,
)
from dagster_project.ingest.landing import land_day
from dagster_project.ingest.sources import SourceSettings, make_source
from dagster_project.resources import LakeResource
from dagster_project.transform.curate import curate_day, span_files

DAY = dt.date(2024, 3, 1)
KEYS = {"symbol": "BTCUSDT", "interval": "1m", "date": DAY}


def frame(n: int, value: float = 1.0) -> pl.DataFrame:
    return pl.DataFrame({"x": list(range(n)), "v": [value] * n})


def flip_bit(path: Path, where: str = "middle") -> None:
    """Flip one bit of ``path``: in the middle (column data) or in the footer (its metadata,
    just before the 8-byte length + ``PAR1`` trailer)."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if where == "middle" else len(data) - 12
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def landed_lake(root: Path) -> Lake:
    lake = Lake(root)
    source = make_source(SourceSettings(kind="simulator"), lake.root)
    land_day(lake, source, "BTCUSDT", "1m", DAY)
    return lake


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------------------------
# Hashes: recorded, verified, refused


@pytest.mark.parametrize("where", ["middle", "footer"])
def test_bit_flip_in_raw_klines_stops_curate_naming_the_file(tmp_path, where):
    lake = landed_lake(tmp_path)
    curate_day(lake, "BTCUSDT", DAY)
    curated = lake.partition_file("curated", "klines", KEYS)
    before = curated.read_bytes()
    raw = lake.partition_file("raw", "klines", KEYS)
    flip_bit(raw, where)

    with pytest.raises(CorruptPartitionError, match="re-land") as caught:
        curate_day(lake, "BTCUSDT", DAY)
    assert str(raw) in str(caught.value)
    assert caught.value.paths == [raw]
    assert curated.read_bytes() == before


def test_every_written_file_is_intact_and_a_flip_anywhere_is_damaged(tmp_path):
    lake = Lake(tmp_path)
    path = lake.write_partition("raw", "t", KEYS, frame(500))
    assert file_status(path) is FileStatus.INTACT
    size = path.stat().st_size
    for at in (0, size // 3, size // 2, size - 9, size - 1):
        data = bytearray(path.read_bytes())
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
        assert file_status(path) is FileStatus.DAMAGED, f"flip at byte {at} of {size}"
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
    assert file_status(path) is FileStatus.INTACT


def test_files_written_before_hashes_are_unverified_not_damaged(tmp_path):
    lake = Lake(tmp_path)
    old = lake.partition_file("raw", "t", KEYS)
    old.parent.mkdir(parents=True)
    pq.write_table(frame(3).to_arrow(), old)  # as the writer did before hashes were recorded
    assert file_status(old) is FileStatus.UNVERIFIED
    assert verify_files([str(old)]) == [str(old)]
    assert lake.read_partition("raw", "t", KEYS).equals(frame(3))
    report = verify_lake(lake)
    assert (report.damaged, report.unverified, report.intact) == ([], [old], 0)


def test_read_partition_and_span_files_refuse_a_damaged_file(tmp_path):
    lake = Lake(tmp_path)
    curated = lake.write_partition("curated", "klines", KEYS, frame(10))
    assert span_files(lake, "BTCUSDT", "1m", DAY, DAY) == [str(curated)]
    flip_bit(curated)
    with pytest.raises(CorruptPartitionError, match=str(curated)):
        lake.read_partition("curated", "klines", KEYS)
    with pytest.raises(CorruptPartitionError, match=str(curated)):
        span_files(lake, "BTCUSDT", "1m", DAY, DAY)


def test_verify_lake_reports_every_damaged_file_across_tables(tmp_path):
    lake = Lake(tmp_path)
    other_day = {**KEYS, "date": DAY + dt.timedelta(days=1)}
    raw = lake.write_partition("raw", "klines", KEYS, frame(200))
    lake.write_partition("raw", "klines", other_day, frame(200))
    curated = lake.write_partition("curated", "klines", KEYS, frame(200))
    indicators = lake.write_partition("features", "indicators", KEYS, frame(200))
    book = {"symbol": "BTCUSDT", "date": DAY}
    lake.append_part("raw", "depth_snapshots", book, frame(50), "c000100")
    part = lake.append_part("raw", "depth_snapshots", book, frame(50), "c000200")
    flip_bit(raw)
    flip_bit(curated, "footer")
    indicators.write_bytes(indicators.read_bytes()[:-100])  # truncated
    flip_bit(part)

    report = verify_lake(lake)
    assert report.damaged == sorted([raw, curated, indicators, part])
    assert report.intact == 2
    assert report.unverified == []
    with pytest.raises(CorruptPartitionError) as caught:
        verify_files(lake.partition_files("raw", "depth_snapshots", book))
    assert caught.value.paths == [part]


# Writes frame(9) to raw/t at KEYS and is killed (SIGKILL) where argv[2] says: at the rename
# (the new sidecar and the temporary file exist) or after it (before the old sidecar goes).
KILLED_WRITER = """
import os, signal, sys
import polars as pl
from dagster_project.core import lake as lake_module

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

where = lake_module.os if sys.argv[2] == "replace" else lake_module
setattr(where, sys.argv[2], die)
keys = {"symbol": "BTCUSDT", "interval": "1m", "date": "2024-03-01"}
frame = pl.DataFrame({"x": list(range(9)), "v": [1.0] * 9})
lake_module.Lake(sys.argv[1]).write_partition("raw", "t", keys, frame)
"""


@pytest.mark.parametrize(
    ("kill_at", "survivor"), [("replace", frame(4)), ("drop_other_sidecars", frame(9))]
)
def test_a_writer_killed_around_the_rename_leaves_a_verified_partition(
    tmp_path, kill_at, survivor
):
    lake = Lake(tmp_path)
    path = lake.write_partition("raw", "t", KEYS, frame(4))
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), kill_at])
    assert killed.returncode == -9
    assert len(sidecars(path)) == 2  # old and new: the data file matches one of them
    assert file_status(path) is FileStatus.INTACT
    assert lake.read_partition("raw", "t", KEYS).equals(survivor)

    lake.write_partition("raw", "t", KEYS, frame(2))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        sidecars(path)[0].name,
        "part-0.parquet",
    ]  # the dead writer's temporary file swept, one sidecar left: the current one


def test_a_failure_after_the_rename_keeps_the_new_files_sidecar(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    path = lake.write_partition("raw", "t", KEYS, frame(4))
    renamed = []
    real_replace, real_fsync = os.replace, lake_module.fsync

    def replace(*args):
        real_replace(*args)
        renamed.append(True)

    def fsync(target):
        if renamed:
            raise OSError("I/O error syncing the directory")
        real_fsync(target)

    monkeypatch.setattr(lake_module.os, "replace", replace)
    monkeypatch.setattr(lake_module, "fsync", fsync)
    with pytest.raises(LakeWriteError):
        lake.write_partition("raw", "t", KEYS, frame(9))
    monkeypatch.undo()
    assert file_status(path) is FileStatus.INTACT
    assert lake.read_partition("raw", "t", KEYS).equals(frame(9))


def test_replacing_a_collector_partition_drops_the_parts_sidecars(tmp_path):
    lake = Lake(tmp_path)
    book = {"symbol": "BTCUSDT", "date": DAY}
    lake.append_part("raw", "t", book, frame(2), "c000100")
    lake.append_part("raw", "t", book, frame(2), "c000200")
    path = lake.write_partition("raw", "t", book, frame(1))
    assert len(list(path.parent.iterdir())) == 2  # part-0.parquet and its sidecar


# ---------------------------------------------------------------------------------------------
# `candlelake verify` and the asset check


def test_verify_command_lists_damaged_files_and_exits_2(tmp_path):
    lake = Lake(tmp_path)
    good = lake.write_partition("curated", "klines", KEYS, frame(10))
    bad = lake.write_partition("raw", "klines", KEYS, frame(10))
    runner = CliRunner()
    clean = runner.invoke(main, ["--lake", str(tmp_path), "verify"])
    assert clean.exit_code == 0, clean.output
    assert "2 files intact" in clean.output
    flip_bit(bad)
    result = runner.invoke(main, ["--lake", str(tmp_path), "verify"])
    assert result.exit_code == 2, result.output
    assert f"DAMAGED {bad}" in result.output
    assert str(good) not in result.output


def test_catalog_asset_check_fails_naming_damaged_files(tmp_path):
    lake = Lake(tmp_path)
    lake.write_partition("raw", "klines", KEYS, frame(10))
    bad = lake.write_partition("raw", "klines", {**KEYS, "date": "2024-03-02"}, frame(10))
    flip_bit(bad)  # not the file DuckDB reads to bind the view: the catalog still builds
    outcome = files_intact(verify_lake(lake))
    assert not outcome.passed
    assert outcome.metadata["damaged"] == [str(bad)]

    result = dg.materialize([catalog], resources={"lake": LakeResource(root=str(tmp_path))})
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "lake_files_intact"
    assert not check.passed
    assert check.metadata["damaged"].value == [str(bad)]


def test_a_catalog_view_over_a_damaged_file_fails_naming_it(tmp_path):
    lake = Lake(tmp_path)
    bad = lake.write_partition("raw", "klines", KEYS, frame(10))
    flip_bit(bad, "footer")
    with pytest.raises(CorruptPartitionError, match=str(bad)):
        build_catalog(lake, CATALOG_VIEWS)


# ---------------------------------------------------------------------------------------------
# Crash leftovers


def test_stale_temp_files_of_the_leaf_are_swept_but_a_live_writers_are_kept(tmp_path):
    lake = Lake(tmp_path)
    target = lake.partition_file("raw", "t", KEYS)
    target.parent.mkdir(parents=True)
    live_writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hour_ago = time.time() - 2 * 3600
        dead = temp_path(target, pid=dead_pid())
        live = temp_path(target, pid=live_writer.pid)
        foreign_old = temp_path(target, pid=1, host="otherhost")
        foreign_new = temp_path(target, pid=1, host="otherhost")
        legacy_old = target.parent / f".{target.name}.{'a' * 32}.tmp"  # before pid and host
        other_target = lake.partition_file("raw", "t", {**KEYS, "date": "2024-03-02"})
        other_target.parent.mkdir(parents=True)
        other_dead = temp_path(other_target, pid=dead_pid())
        for path in (dead, live, foreign_old, foreign_new, legacy_old, other_dead):
            path.write_bytes(b"PAR1 half")
        for path in (foreign_old, legacy_old):
            os.utime(path, (hour_ago, hour_ago))

        lake.write_partition("raw", "t", KEYS, frame(3))

        left = {p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")}
        assert left == {live.name, foreign_new.name}
        assert other_dead.exists()  # another partition's leftovers wait for its own writer
    finally:
        live_writer.kill()
        live_writer.wait()


def test_catalog_build_sweeps_its_dead_temp_and_wal(tmp_path):
    lake = Lake(tmp_path)
    lake.write_partition("curated", "klines", KEYS, frame(3))
    dead = temp_path(lake.catalog_path, pid=dead_pid())
    live = temp_path(lake.catalog_path)  # this process: a build in another thread
    for path in (dead, Path(f"{dead}.wal"), live, Path(f"{live}.wal")):
        path.write_bytes(b"half a catalog")
    build_catalog(lake, (CatalogView("klines", "curated", "klines"),))
    hidden = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert hidden == {live.name, f"{live.name}.wal"}


# ---------------------------------------------------------------------------------------------
# A copied lake's catalog


def test_a_copied_lakes_catalog_warns_naming_both_lakes(tmp_path):
    original = Lake(tmp_path / "original")
    original.write_partition("curated", "klines", KEYS, frame(3))
    build_catalog(original, CATALOG_VIEWS)
    copy = Lake(tmp_path / "copy")
    shutil.copytree(original.root, copy.root)

    assert catalog_root_mismatch(original) is None
    mismatch = catalog_root_mismatch(copy)
    assert str(original.root) in mismatch and str(copy.root) in mismatch
    assert "candlelake" in mismatch and "catalog" in mismatch
    with pytest.warns(CatalogRootWarning, match="built for the lake at"):
        open_catalog(copy).close()

    build_catalog(copy, CATALOG_VIEWS)
    assert catalog_root_mismatch(copy) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        con = open_catalog(copy)
    views = con.sql("select view_name from duckdb_views() where not internal").fetchall()
    assert views == [("klines",)]
    con.close()
