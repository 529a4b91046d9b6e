"""Order-book replay throughput, in depth events per second on one core, and landing a day of
sampled snapshots.

    python bench/bench_orderbook_replay.py

Streams: the real BTCUSDT recording in ../shared/data (2024-08-08/09, 6,495 depth events averaging
46 level updates each; skipped with a message when absent), and, so the figure does not depend on
../shared, a synthetic day: 864,000 ``@depth@100ms`` events (one every 100 ms) of 10-30 level
updates each (mean 20) around a random-walk mid, most near the touch and some far away, with the
levels the mid sweeps through removed (the book never crosses).

Rows, best of several runs each:
- parse only (the reference, same run): the JSON lines decoded into ``DepthEvent``s;
- synchronizer + book: ``BookSynchronizer.on_event`` over already-parsed events (sequence checks,
  level updates, crossed-book check), no observers;
- + sampler: the same with the 1 s / 50-level ``BookSampler`` attached;
- full replay: ``replay_messages`` end to end: route every line, parse, synchronizer, book,
  sampler, updates recorder, both frames (and, on a second row for the real recording, the
  bookTicker check of its 73,174 tickers too).
Goal: >= 100,000 events/s through synchronizer + book.

Then the synthetic day's 86,400 one-second snapshots (50 levels a side) are landed with
``Lake.write_partition`` (atomic, fsynced, zstd Parquet): time and file size.

Everything runs on one thread (polars and Arrow limited to one), i.e. on one core.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import datetime as dt  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project.core.lake import Lake  # noqa: E402
from dagster_project.ingest.orderbook.messages import (  # noqa: E402
    DepthSnapshot,
    decode_depth_event_payload,
)
from dagster_project.ingest.orderbook.replay import read_recording, replay_messages  # noqa: E402
from dagster_project.ingest.orderbook.sampling import BookSampler  # noqa: E402
from dagster_project.ingest.orderbook.sync import BookSynchronizer  # noqa: E402

RECORDING = [
    REPO.parent / "shared/data/binance/streams/spot_btcusdt_20240808.gz",
    REPO.parent / "shared/data/binance/streams/spot_btcusdt_20240809.gz",
]
SYMBOL = "BTCUSDT"
DEPTH_PREFIX = b'{"stream":"btcusdt@depth'
SNAPSHOT_PREFIX = b'{"lastUpdateId"'
DAY_EVENTS = 864_000  # one event every 100 ms for a day
BATCH = 50_000  # events parsed at a time for the book-only rows (bounded memory)
GOAL = 100_000


def main() -> int:
    one_thread()
    print("| stream | depth events | levels/event | parse only (reference) | synchronizer + book "
          "| + sampler (1 s, 50 levels) | full replay | book share of parse + book | goal "
          "≥ 100k ev/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    if all(p.exists() for p in RECORDING):
        real = list(read_recording(RECORDING))
        gc.freeze()  # the lines held in memory (a file replay streams them) stay out of GC passes
        print(bench_stream("real BTCUSDT recording (2024-08-08/09)", real, runs=5, tickers=True))
        del real
    else:
        print(f"| real recording: skipped, not found at {RECORDING[0].parent} (only in the team "
              "workspace) | | | | | | | | |")  # fmt: skip
    start = time.perf_counter()
    day = synthetic_day(DAY_EVENTS)
    made = time.perf_counter() - start
    gc.freeze()
    print(bench_stream(f"synthetic day ({DAY_EVENTS:,} events)", day, runs=2, tickers=False))
    print(f"\n(synthetic day generated in {made:.1f} s; "
          f"{sum(len(p) for _, p in day) / 1e6:.0f} MB of JSON)")  # fmt: skip
    print()
    land_day(day)
    return 0


def bench_stream(name: str, lines: list[tuple[int, bytes]], runs: int, tickers: bool) -> str:
    depth = [(ns, p) for ns, p in lines if p.startswith(DEPTH_PREFIX)]
    snap_line = next(p for _, p in lines if p.startswith(SNAPSHOT_PREFIX))
    snap = DepthSnapshot.from_binance(snap_line)
    n = len(depth)

    parse_s = best_of(runs, lambda: parse_all(depth))
    book_s, levels = best_of_pair(runs, lambda: book_only(depth, snap, sampler=False))
    sampled_s, _ = best_of_pair(runs, lambda: book_only(depth, snap, sampler=True))

    def full(check: bool) -> None:
        result = replay_messages(lines, SYMBOL, check_book_ticker=check)
        assert result.stats.resync_count == 0, result.stats
        assert result.book_tickers.mismatched == 0

    full_s = best_of(runs, lambda: full(False))
    share = book_s / (book_s + parse_s)
    met = "yes" if n / book_s >= GOAL else "no"
    row = (
        f"| {name} | {n:,} | {levels / n:.1f} | {rate(n, parse_s)} | {rate(n, book_s)} "
        f"| {rate(n, sampled_s)} | {rate(n, full_s)} | {share:.0%} | {met} |"
    )
    if tickers:
        checked_s = best_of(runs, lambda: full(True))
        row += (
            f"\n| ... full replay with the bookTicker check ({len(lines):,} lines) | {n:,} | "
            f"| | | | {rate(n, checked_s)} | | |"
        )
    return row


def parse_all(depth: list[tuple[int, bytes]]) -> None:
    for ns, payload in depth:
        decode_depth_event_payload(payload, ns)


def book_only(depth: list[tuple[int, bytes]], snap: DepthSnapshot, sampler: bool) -> tuple:
    """Seconds spent inside the synchronizer (and sampler), parsing kept outside the clock."""
    observers = [BookSampler(1000, 50)] if sampler else []
    sync = BookSynchronizer(SYMBOL, observers=observers)
    sync.on_snapshot(snap)
    spent, levels = 0.0, 0
    for start in range(0, len(depth), BATCH):
        events = [decode_depth_event_payload(p, ns) for ns, p in depth[start : start + BATCH]]
        levels += sum(len(e.bids) + len(e.asks) for e in events)
        on_event = sync.on_event
        gc.freeze()  # so is this pre-parsed batch (a replay's events are short-lived)
        begin = time.perf_counter()
        for event in events:
            on_event(event)
        spent += time.perf_counter() - begin
        del events
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    assert sync.stats.resync_count == 0 and sync.synced, sync.stats
    return spent, levels


def land_day(day: list[tuple[int, bytes]]) -> None:
    result = replay_messages(day, SYMBOL, check_book_ticker=False)
    snaps, updates = result.snapshots, result.updates
    assert snaps.height == 86_400, snaps.height
    with tempfile.TemporaryDirectory(prefix="bench_orderbook_") as tmp:
        lake = Lake(Path(tmp))
        keys = {"symbol": SYMBOL, "date": "2024-08-09"}
        rows = []
        for table, frame in (("depth_snapshots", snaps), ("depth_updates", updates)):
            seconds = best_of(3, lambda t=table, f=frame: lake.write_partition("raw", t, keys, f))
            size = lake.partition_file("raw", table, keys).stat().st_size
            levels = frame["bid_prices"].list.len().sum() + frame["ask_prices"].list.len().sum()
            rows.append(
                f"| raw/{table}, one synthetic day | {frame.height:,} | {levels:,} "
                f"| {seconds * 1e3:.0f} ms | {size / 1e6:.1f} MB | {size / frame.height:.0f} B |"
            )
    print("| landing (`Lake.write_partition`, zstd) | rows | levels | write | file | per row |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def synthetic_day(n_events: int, seed: int = 7) -> list[tuple[int, bytes]]:
    """A REST snapshot line, then ``n_events`` combined-stream depth events, 100 ms apart.

    Prices are ticks of 0.01 around a mid that random-walks up to 3 ticks an event; bids sit at
    ticks below the mid, asks above, and the ticks the mid moves through are removed from the
    side that gives way, so the book never crosses. Each event updates 10-30 levels: 75% within a
    geometric ~15 ticks of the mid, 25% anywhere up to 4,000 ticks away; 40% are removals.
    """
    rng = np.random.default_rng(seed)
    start_ms = int(dt.datetime(2024, 8, 9, tzinfo=dt.UTC).timestamp() * 1000)
    counts = rng.integers(10, 31, n_events)
    total = int(counts.sum())
    near = rng.geometric(1 / 15, total)
    far = rng.integers(1, 4_000, total)
    offsets = np.where(rng.random(total) < 0.75, near, far)
    is_bid = rng.random(total) < 0.5
    qty_index = np.where(rng.random(total) < 0.4, 0, rng.integers(1, 4_096, total))
    steps = rng.choice([-3, -2, -1, 0, 0, 0, 0, 1, 2, 3], n_events)
    mids = 6_000_000 + np.cumsum(steps)  # 60,000.00 in ticks
    ids = 50_000_000_000 + np.cumsum(counts * rng.integers(1, 4, n_events))

    price_text: dict[int, str] = {}

    def price(tick: int) -> str:
        text = price_text.get(tick)
        if text is None:
            text = price_text[tick] = f"{tick // 100}.{tick % 100:02d}000000"
        return text

    sizes = ["0.00000000"] + [f"{q:.8f}" for q in rng.lognormal(-3.0, 1.5, 4_095).round(5)]
    encode = msgspec.json.Encoder().encode
    first_mid = int(mids[0])
    snapshot = {
        "lastUpdateId": int(ids[0]) - int(counts[0]),
        "bids": [[price(first_mid - i), sizes[1 + i % 4_095]] for i in range(1, 1_001)],
        "asks": [[price(first_mid + i), sizes[2 + i % 4_090]] for i in range(1, 1_001)],
    }
    lines = [((start_ms - 1_000) * 1_000_000, encode(snapshot))]
    position, previous_mid, previous_u = 0, first_mid, snapshot["lastUpdateId"]
    offsets_l, is_bid_l, qty_l = offsets.tolist(), is_bid.tolist(), qty_index.tolist()
    for i, (count, mid, final) in enumerate(
        zip(counts.tolist(), mids.tolist(), ids.tolist(), strict=True)
    ):
        bids, asks = swept(previous_mid, mid, price)
        for j in range(position, position + count - len(bids) - len(asks)):
            if is_bid_l[j]:
                bids.append([price(mid - offsets_l[j]), sizes[qty_l[j]]])
            else:
                asks.append([price(mid + offsets_l[j]), sizes[qty_l[j]]])
        position += count
        event_ms = start_ms + 100 * i
        data = {"e": "depthUpdate", "E": event_ms, "s": SYMBOL, "U": previous_u + 1, "u": final,
                "b": bids, "a": asks}  # fmt: skip
        lines.append(((event_ms + 40) * 1_000_000, encode({"stream": STREAM, "data": data})))
        previous_mid, previous_u = mid, final
    return lines


STREAM = "btcusdt@depth@100ms"


def swept(old_mid: int, new_mid: int, price: Callable[[int], str]) -> tuple[list, list]:
    """Removals of the levels the mid moved through, on the side that gives way."""
    if new_mid > old_mid:  # asks at old_mid+1 .. new_mid must go
        return [], [[price(t), "0.00000000"] for t in range(old_mid + 1, new_mid + 1)]
    if new_mid < old_mid:  # bids at new_mid .. old_mid-1 must go
        return [[price(t), "0.00000000"] for t in range(new_mid, old_mid)], []
    return [], []


def one_thread() -> None:
    """The replay is single-threaded Python; keep Arrow (and, via the environment, polars) to one
    thread too, so every figure is one core's work. (Not pinned to a core: on a shared machine a
    pinned process can land on the busy one.)"""
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def best_of(runs: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def best_of_pair(runs: int, run: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    results = [run() for _ in range(runs)]
    return min(results)


def rate(n: int, seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms, {n / seconds / 1e3:,.0f}k ev/s"


if __name__ == "__main__":
    raise SystemExit(main())
