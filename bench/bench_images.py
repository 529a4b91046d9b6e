"""Candlestick images per second: ``ml.rendering.render`` against mplfinance on the same windows.

    python bench/bench_images.py [--windows 4096] [--mpl-seconds 2.5]

Simulates BTCUSDT 1m klines and cuts sliding windows of 5, 15 and 30 candles from them
(``ml.image_preview.windows_from_klines``, stride 1). For each size at 64 x 64 and 224 x 224 px,
in the same run, pinned to one CPU core: our renderer (``CandleStyle``, no volume panel) on
``--windows`` windows (best of 5), and ``ml.mpl_reference.MplfinanceCandles`` (mplfinance
``type='candle'``, one reused figure, no volume panel) on the first of the same windows for about
``--mpl-seconds``. Then our renderer on two cores (two worker processes, each rendering half the
windows; they keep the images and return their size only), its peak memory (tracemalloc: the
largest total of live Python and numpy allocations while it renders the batch), and
``OhlcBarStyle`` images per second for information. Prints markdown table rows.
Goal: ≥ 100× mplfinance's images per second at the same size, on one core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project.core.klines import TimeRange  # noqa: E402
from dagster_project.ingest.simulator import simulate_klines  # noqa: E402
from ml.image_preview import windows_from_klines  # noqa: E402
from ml.mpl_reference import MplfinanceCandles  # noqa: E402
from ml.rendering import CandleStyle, OhlcBarStyle, WindowBatch, render  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CANDLES = (5, 15, 30)
SIZES = (64, 224)
GOAL = 100
RUNS = 5  # best of, for our renderer on one and on two cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4096)
    parser.add_argument("--mpl-seconds", type=float, default=2.5)
    args = parser.parse_args()

    minutes = args.windows + 2 * max(CANDLES)
    klines = simulate_klines(
        "BTCUSDT", "1m", TimeRange(START, START + dt.timedelta(minutes=minutes))
    )
    batches = {n: windows_from_klines(klines, n, args.windows, stride=1) for n in CANDLES}
    all_cores = os.sched_getaffinity(0)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_render_count, [(batches[5].take(slice(0, 8)), CandleStyle(64, 64, False))] * 2)
        for size in SIZES:
            for n in CANDLES:
                os.sched_setaffinity(0, {min(all_cores)})  # one core for both sides of the ratio
                ours = best_rate(batches[n], CandleStyle(size, size, volume=False))
                theirs, rendered = mplfinance_rate(batches[n], size, args.mpl_seconds)
                os.sched_setaffinity(0, all_cores)
                two_cores = two_core_rate(pool, batches[n], CandleStyle(size, size, volume=False))
                print_row(n, size, batches[n].size, ours, two_cores, theirs, rendered)
    os.sched_setaffinity(0, {min(all_cores)})
    print_memory(batches[30], args.windows)
    print_ohlc_bars(batches)


def best_rate(batch: WindowBatch, style, runs: int = RUNS) -> float:
    """Images per second, best of ``runs`` renders of the whole batch."""
    render(batch.take(slice(0, 16)), style)  # warm-up
    best = min(timed(lambda: render(batch, style)) for _ in range(runs))
    return batch.size / best


def mplfinance_rate(batch: WindowBatch, size: int, seconds: float) -> tuple[float, int]:
    """Images per second of one reused mplfinance figure, over the first windows of the batch
    rendered until ``seconds`` have passed (after two warm-up windows)."""
    renderer = MplfinanceCandles(height=size, width=size, volume=False)
    renderer.render(batch.take(slice(0, 2)))
    started, rendered = time.perf_counter(), 0
    while time.perf_counter() - started < seconds and rendered < batch.size:
        renderer.render_frame(renderer.frame(batch, rendered))
        rendered += 1
    return rendered / (time.perf_counter() - started), rendered


def two_core_rate(pool, batch: WindowBatch, style, runs: int = RUNS) -> float:
    half = batch.size // 2
    parts = [(batch.take(slice(0, half)), style), (batch.take(slice(half, None)), style)]
    best = min(timed(lambda: pool.map(_render_count, parts)) for _ in range(runs))
    return batch.size / best


def _render_count(job: tuple[WindowBatch, CandleStyle]) -> int:
    batch, style = job
    return render(batch, style).nbytes


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def print_row(n, size, windows, ours, two_cores, theirs, rendered) -> None:
    ratio = ours / theirs
    print(
        f"| Candle images, {n} candles, {size}² RGB, no volume panel (sliding windows of "
        f"simulated BTCUSDT 1m) — `bench_images.py` | {ours:,.0f} images/s on one core (best of "
        f"{RUNS} × {windows:,} windows); two processes: {two_cores:,.0f} images/s | mplfinance "
        f"`type='candle'`, one reused figure, first {rendered} of the same windows, one core: "
        f"{theirs:.0f} images/s | {ratio:,.0f}× | ≥ {GOAL}× on one core | "
        f"{'yes' if ratio >= GOAL else '**no**'} |"
    )


def print_memory(batch: WindowBatch, windows: int) -> None:
    parts = []
    for size in SIZES:
        style = CandleStyle(size, size, volume=False)
        tracemalloc.start()
        images = render(batch, style)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        parts.append(
            f"{size}²: {peak / 2**20:,.0f} MiB peak, of which the images "
            f"{images.nbytes / 2**20:,.0f} MiB"
        )
        del images
    print(
        f"| Memory of `render` for {windows:,} windows of 30 candles (tracemalloc peak of live "
        f"allocations; 8 MiB render chunks) | {'; '.join(parts)} | — | — | — | — |"
    )


def print_ohlc_bars(batches: dict[int, WindowBatch]) -> None:
    parts = []
    for n, batch in batches.items():
        style = OhlcBarStyle()
        height, width = style.size_for(n)
        parts.append(f"{n} candles ({height}×{width}): {best_rate(batch, style):,.0f}/s")
    print(
        "| `ohlc_bar` images (Jiang–Kelly–Xiu, 1 channel, MA line and volume, default heights), "
        f"one core, for information | {'; '.join(parts)} | — | — | — | — |"
    )


if __name__ == "__main__":
    main()
