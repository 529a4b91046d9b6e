"""Binance REST klines paging: request counts, and a long backfill under the real weight limit.

    python bench/bench_rest_paging.py [--requests 3600] [--limit 6000] [--window-s 60] [--no-align]

(a) For several N, fetching N rows takes exactly ceil(N / 1000) klines requests.
(b) A backfill of ``--requests`` full pages of synthetic 1m klines (weight 2 each: 3,600 requests
    are 7,200 weight, more than the 6,000 a minute that spot allows) against the local fake Binance,
    which enforces ``--limit`` weight per ``--window-s`` window and answers 429 beyond it. Binance's
    window is the clock minute, so by default the backfill starts at the top of a minute (the
    alignment wait is not counted), when the whole budget is free and an unthrottled client would
    overrun it. Goal: zero 429s; the client waits for the window instead.

Everything runs on 127.0.0.1 (tests/fakes/binance_server.py); nothing contacts Binance.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster_project.core.klines import TimeRange  # noqa: E402
from dagster_project.ingest.binance_rest import BinanceRestClient, BinanceRestConfig  # noqa: E402
from tests.fakes.binance_server import FakeBinance, synthetic_series  # noqa: E402

SYMBOL, INTERVAL, STEP = "BTCUSDT", "1m", dt.timedelta(minutes=1)
START = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
PAGE = 1000
COUNT_CASES = (1, 999, 1000, 1001, 2500, 10_000)


def main() -> int:
    args = parse_args()
    print("| N rows | klines requests | ceil(N/1000) | rows back | ok |")
    print("|---:|---:|---:|---:|---|")
    for n_rows in COUNT_CASES:
        requests, rows = count_requests(n_rows)
        expected = math.ceil(n_rows / PAGE)
        ok = requests == expected and rows == n_rows
        print(f"| {n_rows:,} | {requests} | {expected} | {rows:,} | {'yes' if ok else 'NO'} |")
    print()
    result = backfill(args.requests, args.limit, args.window_s, align=not args.no_align)
    print(
        "| benchmark | rows | requests | weight | limit / window | 429s | waited s "
        "| wall s | rows/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| REST backfill {SYMBOL} {INTERVAL} | {result['rows']:,} | {result['requests']:,} "
        f"| {result['weight']:,} | {args.limit:,} / {args.window_s:g} s | {result['rate_limited']} "
        f"| {result['waited_s']:.1f} | {result['wall_s']:.1f} | {result['rows_per_s']:,.0f} |"
    )
    return 0 if result["rate_limited"] == 0 else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3600, help="full pages to backfill")
    parser.add_argument("--limit", type=int, default=6000, help="weight limit per window")
    parser.add_argument("--window-s", type=float, default=60.0, help="weight window seconds")
    parser.add_argument("--no-align", action="store_true", help="start at once, not at :00")
    return parser.parse_args()


def count_requests(n_rows: int) -> tuple[int, int]:
    series = synthetic_series(SYMBOL, INTERVAL, START, n_rows)
    with (
        FakeBinance({(SYMBOL, INTERVAL): series}) as fake,
        BinanceRestClient(BinanceRestConfig(base_url=fake.url)) as client,
    ):
        frame = client.fetch_klines(SYMBOL, INTERVAL, TimeRange(START, START + n_rows * STEP))
        return len(fake.requests_to("klines")), frame.height


def backfill(requests: int, limit: int, window_s: float, align: bool) -> dict[str, float]:
    n_rows = requests * PAGE
    series = synthetic_series(SYMBOL, INTERVAL, START, n_rows)
    time_range = TimeRange(START, START + n_rows * STEP)
    config_kw = {"weight_limit_per_minute": limit, "weight_window_s": window_s}
    with (
        FakeBinance({(SYMBOL, INTERVAL): series}, weight_limit=limit, window_s=window_s) as fake,
        BinanceRestClient(BinanceRestConfig(base_url=fake.url, **config_kw)) as client,
    ):
        if align:
            time.sleep(window_s - time.time() % window_s)
        began = time.perf_counter()
        rows, expected_open_ms = 0, time_range.start_ms
        for page in client.iter_kline_pages(SYMBOL, INTERVAL, time_range):
            first_ms = int(page["open_time"][0].timestamp() * 1000)
            assert first_ms == expected_open_ms, (first_ms, expected_open_ms)  # no gap, no repeat
            expected_open_ms = first_ms + page.height * 60_000
            rows += page.height
        wall_s = time.perf_counter() - began
        served_429 = sum(1 for r in fake.requests if r.status == 429)
    assert rows == n_rows, (rows, n_rows)
    stats = client.stats
    return {
        "rows": rows,
        "requests": stats.requests,
        "weight": stats.weight_used,
        "rate_limited": max(stats.rate_limited, served_429),
        "waited_s": stats.waited_s,
        "wall_s": wall_s,
        "rows_per_s": rows / wall_s,
    }


if __name__ == "__main__":
    raise SystemExit(main())
