"""The lake writer: paths, atomic replacement, failure safety, concurrency, catalog."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from dagster_project.core.errors import InvalidRequestError, LakeWriteError
from dagster_project.core.lake import CatalogView, Lake, build_catalog, connect

KEYS = {"date": dt.date(2024, 3, 1), "symbol": "BTCUSDT", "interval": "1m"}


def frame(n: int, value: float = 1.0) -> pl.DataFrame:
    return pl.DataFrame({"x": list(range(n)), "v": [value] * n})


def data_files(leaf: Path) -> list[str]:
    """Every file of a leaf but the hash sidecars (``tests/test_integrity.py`` covers those)."""
    return sorted(p.name for p in leaf.iterdir() if ".sha256-" not in p.name)


def test_partition_path_orders_keys_symbol_interval_date(tmp_path):
    lake = Lake(tmp_path)
    path = lake.partition_file("raw", "klines", KEYS)
    assert path == tmp_path / "raw/klines/symbol=BTCUSDT/interval=1m/date=2024-03-01/part-0.parquet"


@pytest.mark.parametrize("bad", [{"symbol": "BTC/USDT"}, {"symbol": "../x"}, {"Date": "2024"}])
def test_bad_partition_keys_are_rejected_by_name(tmp_path, bad):
    with pytest.raises(InvalidRequestError, match="bad partition key"):
        Lake(tmp_path).partition_dir("raw", "klines", bad)


def test_write_replaces_partition_whole_and_is_idempotent(tmp_path):
    lake = Lake(tmp_path)
    lake.write_partition("raw", "t", KEYS, frame(5))
    lake.write_partition("raw", "t", KEYS, frame(3, 2.0))
    assert lake.read_partition("raw", "t", KEYS).equals(frame(3, 2.0))
    lake.write_partition("raw", "t", KEYS, frame(3, 2.0))
    assert data_files(lake.partition_dir("raw", "t", KEYS)) == ["part-0.parquet"]


def test_partition_columns_are_kept_out_of_the_file(tmp_path):
    lake = Lake(tmp_path)
    path = lake.write_partition(
        "raw", "t", KEYS, frame(2).with_columns(pl.lit("BTCUSDT").alias("symbol"))
    )
    assert pq.read_schema(path).names == ["x", "v"]


def test_failed_write_leaves_previous_version_readable(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    lake.write_partition("raw", "t", KEYS, frame(4))

    def write_half_then_crash(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", write_half_then_crash)
    with pytest.raises(LakeWriteError, match="previous version is intact"):
        lake.write_partition("raw", "t", KEYS, frame(9))
    monkeypatch.undo()
    assert lake.read_partition("raw", "t", KEYS).equals(frame(4))
    assert data_files(lake.partition_dir("raw", "t", KEYS)) == ["part-0.parquet"]


def test_concurrent_writes_to_different_partitions_do_not_interfere(tmp_path):
    lake = Lake(tmp_path)
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(16)]

    def write(day):
        for value in range(5):
            lake.write_partition("raw", "t", {**KEYS, "date": day}, frame(100, float(value)))

    threads = [threading.Thread(target=write, args=(d,)) for d in days]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for day in days:
        assert lake.read_partition("raw", "t", {**KEYS, "date": day}).equals(frame(100, 4.0))


def test_catalog_has_one_view_per_table_with_typed_partition_keys(tmp_path):
    lake = Lake(tmp_path)
    for symbol in ("BTCUSDT", "1INCHUSDT"):
        for day in (dt.date(2024, 3, 1), dt.date(2024, 3, 2)):
            lake.write_partition(
                "curated", "klines", {**KEYS, "symbol": symbol, "date": day}, frame(3)
            )
    views = build_catalog(
        lake,
        (CatalogView("klines", "curated", "klines"), CatalogView("absent", "raw", "nothing_here")),
    )
    assert views == ["klines"]
    con = connect(lake.catalog_path, read_only=True)
    rows = con.sql("select symbol, date, count(*) from klines group by all order by all").fetchall()
    assert rows[0] == ("1INCHUSDT", dt.date(2024, 3, 1), 3)
    assert len(rows) == 4
    plan = con.sql(
        "explain analyze select count(*) from klines where symbol = 'BTCUSDT' "
        "and date = '2024-03-02'"
    ).fetchall()[0][1]
    assert "Total Files Read: 1" in plan


def test_catalog_opens_with_the_duckdb_command(tmp_path):
    duckdb_cli = Path(sys.executable).parent / "duckdb"
    if not duckdb_cli.exists():
        pytest.skip(f"duckdb command not installed beside {sys.executable}")
    lake = Lake(tmp_path)
    lake.write_partition("curated", "klines", KEYS, frame(7))
    build_catalog(lake, (CatalogView("klines", "curated", "klines"),))
    out = subprocess.run(
        [
            str(duckdb_cli),
            str(lake.catalog_path),
            "-csv",
            "-c",
            "select symbol, count(*) as n from klines group by all",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["symbol,n", "BTCUSDT,7"]


def test_appended_parts_add_up_and_a_replace_removes_them(tmp_path):
    lake = Lake(tmp_path)
    keys = {"symbol": "BTCUSDT", "date": dt.date(2024, 3, 1)}
    lake.append_part("raw", "t", keys, frame(2, 1.0), "c000100")
    lake.append_part("raw", "t", keys, frame(3, 2.0), "c000200")
    assert lake.read_partition("raw", "t", keys)["v"].to_list() == [1.0, 1.0, 2.0, 2.0, 2.0]
    assert list(lake.partitions("raw", "t")) == [{"symbol": "BTCUSDT", "date": "2024-03-01"}]
    lake.write_partition("raw", "t", keys, frame(1, 9.0))
    assert lake.read_partition("raw", "t", keys)["v"].to_list() == [9.0]
    with pytest.raises(InvalidRequestError, match="bad part label"):
        lake.append_part("raw", "t", keys, frame(1), "../x")
