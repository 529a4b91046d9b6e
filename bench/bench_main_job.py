"""Wall time of the main job (`candlelake run`, what `make run` runs after installing).

    python bench/bench_main_job.py

Runs `candlelake run` in a fresh temporary lake and Dagster instance (3 symbols × 3 days through
Dagster: 9 market_job runs — 1m klines, curation, ~1 M simulated trades and 86,400 book snapshots
a symbol-day, microstructure, indicators, labels, windows, every check — + 1 catalog_job run with
the dataset splits), against a reference:
the klines part alone, landed and curated by `candlelake --no-record ingest` (library code,
without Dagster). Both as subprocesses, so start-up (imports) is included.
Goal: the main job ≤ 5 minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDLELAKE = Path(sys.executable).parent / "candlelake"


def timed(args: list[str], workdir: Path) -> float:
    env = {
        **os.environ,
        "CANDLELAKE_LAKE": str(workdir / "lake"),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
    }
    started = time.perf_counter()
    done = subprocess.run([str(CANDLELAKE), *args], cwd=workdir, env=env, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"candlelake {' '.join(args)} failed:\n{done.stderr.decode()}")
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        main_s = timed(["run"], Path(a))
        reference_s = timed(
            [
                "--no-record",
                "ingest",
                "--symbols",
                "BTCUSDT,ETHUSDT,SOLUSDT",
                "--start",
                "2024-03-01",
                "--end",
                "2024-03-04",
            ],
            Path(b),
        )
    print(
        "| benchmark | main job (Dagster, 10 runs) "
        "| reference: their klines only, via `candlelake ingest` | ratio | goal ≤ 300 s |"
    )
    print("|---|---:|---:|---:|---|")
    print(
        f"| `candlelake run` (make run after install) | {main_s:.1f} s | {reference_s:.1f} s | "
        f"{main_s / reference_s:.1f}x | {'met' if main_s <= 300 else 'missed'} |"
    )


if __name__ == "__main__":
    main()
