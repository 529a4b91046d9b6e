"""Read one symbol-day of curated klines through the catalog view on a lake of ≥ 500 partitions.

    python bench/bench_catalog_read.py [--symbols 6] [--days 90]

Builds a lake with the simulator (symbols × days raw partitions, each curated to 1m/5m/15m/1h:
4 curated partitions a symbol-day), rebuilds the catalog, then times
`select * from klines where symbol = ? and interval = '1m' and date = ?` through the catalog
(partition pruning on the Hive keys) against the reference, DuckDB reading that one partition's
file directly by path. Median of 30 queries each, on a fresh connection. Goal: ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project.assets.catalog import CATALOG_VIEWS  # noqa: E402
from dagster_project.backfill import ingest_range  # noqa: E402
from dagster_project.core.klines import TimeRange  # noqa: E402
from dagster_project.core.lake import Lake, build_catalog, connect  # noqa: E402
from dagster_project.ingest.sources import SourceSettings, make_source  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT")
VIEWS = {  # view → its lake table
    "klines": ("curated", "klines"),
    "raw_klines": ("raw", "klines"),
}
VIEW_QUERY = "select * from {view} where symbol = $symbol and interval = '1m' and date = $day"
FILE_QUERY = "select * from read_parquet($file)"
REPEATS = 30


def build_lake(root: Path, symbols: int, days: int) -> Lake:
    lake = Lake(root)
    start = dt.date(2024, 1, 1)
    time_range = TimeRange.checked(start, start + dt.timedelta(days=days))
    source = make_source(SourceSettings(), lake.root)
    ingest_range(lake, source, SYMBOLS[:symbols], "1m", time_range, progress=lambda _: None)
    build_catalog(lake, CATALOG_VIEWS)
    return lake


def median_ms(con, query: str, params: dict) -> tuple[float, int]:
    timings, rows = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        rows = len(con.execute(query, params).fetchall())
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=6)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        lake = build_lake(Path(tmp), args.symbols, args.days)
        built_s = time.perf_counter() - started
        day = dt.date(2024, 1, 1) + dt.timedelta(days=args.days // 2)
        keys = {"symbol": "ETHUSDT", "interval": "1m", "date": day}
        con = connect(lake.catalog_path, read_only=True)
        rows = []
        for view, (layer, table) in VIEWS.items():
            partitions = sum(1 for _ in lake.partitions(layer, table))
            query = VIEW_QUERY.replace("{view}", view)  # a view name from VIEWS, not input
            view_ms, view_rows = median_ms(con, query, {"symbol": "ETHUSDT", "day": day})
            file = str(lake.partition_file(layer, table, keys))
            file_ms, file_rows = median_ms(con, FILE_QUERY, {"file": file})
            assert view_rows == file_rows == 1440, (view_rows, file_rows)
            rows.append((view, partitions, view_rows, view_ms, file_ms))
    print(f"lake: {args.symbols} symbols × {args.days} days, built in {built_s:.1f} s")
    print(
        "| view | partitions in its table | rows | view query (median) "
        "| direct file read (reference) | view / reference | goal ≤ 50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for view, partitions, n, view_ms, file_ms in rows:
        print(
            f"| `{view}` | {partitions} | {n} | {view_ms:.1f} ms | {file_ms:.1f} ms | "
            f"{view_ms / file_ms:.2f}x | {'met' if view_ms <= 50 else 'missed'} |"
        )


if __name__ == "__main__":
    main()
