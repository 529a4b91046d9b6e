"""Run every benchmark in this folder, one after another, and print their tables.

    python bench/run_all.py            (or: make bench)

Each benchmark measures itself against a named reference in the same run; see bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "bench_vision_land.py",
    "bench_rest_paging.py",
    "bench_orderbook_replay.py",
    "bench_catalog_read.py",
    "bench_integrity.py",
    "bench_onnx.py",
    "bench_train.py",
    "bench_experiment.py",
    "bench_bootstrap.py",
    "bench_indicators.py",
    "bench_images.py",
    "bench_main_job.py",
    "bench_backfill.py",
    "bench_explorer.py",
)


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in BENCHMARKS:
        print(f"\n## {name}\n", flush=True)
        if subprocess.run([sys.executable, str(here / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
