"""Parse and land one month of 1m klines from a Binance Vision zip; compare with DuckDB.

    python bench/bench_vision_land.py

Ours: ``read_vision_zip`` (unzip + polars parse into the contract) then ``land_klines`` (one
atomic, fsynced Parquet partition per UTC date). DuckDB: ``read_csv`` of the same CSV (already
unzipped: DuckDB cannot read zip) with the same conversions, then ``COPY … TO … (FORMAT parquet,
PARTITION_BY (date))``. Best of 3 runs each. Goal: ours within 2x of DuckDB.

Uses the real FILUSDT-1m-2023-04 month from ../shared/data (never copied into the repository);
skips with a message when it is absent.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project.core.lake import Lake  # noqa: E402
from dagster_project.ingest.binance_vision import read_vision_zip  # noqa: E402
from dagster_project.ingest.landing import land_klines  # noqa: E402
from tests.fakes.vision_server import vision_zip_bytes  # noqa: E402

SOURCE_CSV = REPO.parent / "shared/data/binance/vision_futures_um_1m/FILUSDT-1m-2023-04.csv.gz"
SYMBOL, INTERVAL, NAME = "FILUSDT", "1m", "FILUSDT-1m-2023-04"
RUNS = 3

DUCKDB_LAND = """
copy (
    with raw as (
        select * from read_csv($csv, header = true, columns = {
            'open_time': 'BIGINT', 'open': 'DOUBLE', 'high': 'DOUBLE', 'low': 'DOUBLE',
            'close': 'DOUBLE', 'volume': 'DOUBLE', 'close_time': 'BIGINT',
            'quote_volume': 'DOUBLE', 'count': 'BIGINT', 'taker_buy_volume': 'DOUBLE',
            'taker_buy_quote_volume': 'DOUBLE', 'ignore': 'VARCHAR'})
    ),
    klines as (
        select
            make_timestamp(if(open_time >= 1e14, open_time, open_time * 1000)) as open_time,
            open, high, low, close, volume,
            make_timestamp(if(close_time >= 1e14, close_time, close_time * 1000)) as close_time,
            quote_volume,
            count as trades,
            taker_buy_volume as taker_buy_base_volume,
            taker_buy_quote_volume,
            'binance_vision' as source,
            now() as ingested_at
        from raw
    )
    select *, cast(open_time as date) as date from klines
) to '{out}' (format parquet, partition_by (date), compression zstd, overwrite_or_ignore)
"""


def main() -> int:
    if not SOURCE_CSV.exists():
        print(f"skipped: real Binance data not found at {SOURCE_CSV} (only in the team workspace)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_vision_") as tmp:
        work = Path(tmp)
        csv_bytes = gzip.decompress(SOURCE_CSV.read_bytes())
        zip_path = work / f"{NAME}.zip"
        zip_path.write_bytes(vision_zip_bytes(f"{NAME}.csv", csv_bytes))
        csv_path = work / f"{NAME}.csv"
        csv_path.write_bytes(csv_bytes)

        parse_s, rows = best_of(lambda: read_vision_zip(zip_path).height)
        ours_s, partitions = best_of(lambda: land_ours(zip_path, work / "lake"))
        duck_s, duck_partitions = best_of(lambda: land_duckdb(csv_path, work / "duck"))
        assert partitions == duck_partitions == 30, (partitions, duck_partitions)

    print(f"parse only (unzip + polars into the contract): {parse_s * 1e3:.1f} ms, "
          f"{rows / parse_s / 1e6:.2f} M rows/s")  # fmt: skip
    print()
    print("| benchmark | rows | partitions | ours (zip → land) | ours rows/s "
          "| DuckDB (csv → COPY partitioned) | DuckDB rows/s | ours / DuckDB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| vision land {NAME} | {rows:,} | {partitions} | {ours_s * 1e3:.1f} ms "
        f"| {rows / ours_s / 1e6:.2f} M | {duck_s * 1e3:.1f} ms | {rows / duck_s / 1e6:.2f} M "
        f"| {ours_s / duck_s:.2f}x |"
    )
    return 0


def land_ours(zip_path: Path, root: Path) -> int:
    shutil.rmtree(root, ignore_errors=True)
    frame = read_vision_zip(zip_path)
    return len(land_klines(Lake(root), SYMBOL, INTERVAL, frame))


def land_duckdb(csv_path: Path, out: Path) -> int:
    shutil.rmtree(out, ignore_errors=True)
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        # COPY's target cannot be a parameter; the path is ours (a temp dir), not user input.
        con.execute(DUCKDB_LAND.replace("{out}", str(out)), {"csv": str(csv_path)})
    finally:
        con.close()
    return len(list(out.glob("date=*")))


def best_of(run: Callable[[], int]) -> tuple[float, int]:
    best, result = float("inf"), 0
    for _ in range(RUNS):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


if __name__ == "__main__":
    raise SystemExit(main())
