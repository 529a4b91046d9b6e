"""What the lake's integrity guard costs: sha256 sidecars at write time, and `candlelake verify`.

    python bench/bench_integrity.py [--partitions 200]

1. Writes: `Lake.write_partition` of one simulated 1m symbol-day (1,440 rows) to ``--partitions``
   leaves (hash recorded in a sidecar, extra directory fsync), against the reference, the write
   path before integrity: `pq.write_table` to a temporary file, fsync, `os.replace`, fsync of the
   directory, on the same rows and the same disk. Median per write, in the same run.
2. Verification: `verify_lake` over those partitions against reading every file's bytes once
   (the I/O floor of any whole-lake check). Best of 3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project.core.integrity import verify_lake  # noqa: E402
from dagster_project.core.klines import TimeRange  # noqa: E402
from dagster_project.core.lake import Lake, fsync  # noqa: E402
from dagster_project.ingest.simulator import simulate_klines  # noqa: E402

DAY = dt.date(2024, 3, 1)


def one_day_of_klines():
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    frame = simulate_klines("BTCUSDT", "1m", TimeRange.checked(start, start + dt.timedelta(days=1)))
    return frame.to_arrow()


def plain_write(target: Path, table) -> None:
    """The reference: the atomic write without a hash or sidecar."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    fsync(tmp)
    os.replace(tmp, target)
    fsync(target.parent)


def time_writes(root: Path, table, partitions: int) -> tuple[list[float], list[float]]:
    lake = Lake(root / "lake")
    guarded, plain = [], []
    for n in range(partitions):  # interleaved, so both see the same disk state
        keys = {"symbol": "BTCUSDT", "interval": "1m", "date": DAY + dt.timedelta(days=n)}
        begin = time.perf_counter()
        lake.write_partition("raw", "klines", keys, table)
        guarded.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        plain_write(root / "plain" / f"date={keys['date']}" / "part-0.parquet", table)
        plain.append(time.perf_counter() - begin)
    return guarded, plain


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        work()
        times.append(time.perf_counter() - begin)
    return min(times)


def read_every_file(root: Path) -> int:
    return sum(len(path.read_bytes()) for path in root.rglob("part-*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=200)
    args = parser.parse_args()
    table = one_day_of_klines()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        guarded, plain = time_writes(root, table, args.partitions)
        lake = Lake(root / "lake")
        report = verify_lake(lake)
        assert report.ok and report.intact == args.partitions, report
        verify_s = best_of(3, lambda: verify_lake(lake))
        read_s = best_of(3, lambda: read_every_file(lake.root))
        size_mb = read_every_file(lake.root) / 1e6
    write_ms, plain_ms = statistics.median(guarded) * 1e3, statistics.median(plain) * 1e3
    print(
        "| Write one 1m symbol-day (1,440 rows) with its sha256 sidecar (`Lake.write_partition`), "
        f"median of {args.partitions} — `bench_integrity.py` | {write_ms:.1f} ms | the same atomic "
        f"write without hash or sidecar: {plain_ms:.1f} ms | {write_ms / plain_ms:.2f}× | ≤ 1.5× | "
        f"{'yes' if write_ms <= 1.5 * plain_ms else '**no**'} |"
    )
    print(
        f"| `verify_lake` over those {args.partitions} files ({size_mb:.1f} MB), best of 3 | "
        f"{verify_s * 1e3:.0f} ms | reading every file's bytes once: {read_s * 1e3:.0f} ms | "
        f"{verify_s / read_s:.1f}× | — | — |"
    )


if __name__ == "__main__":
    main()
