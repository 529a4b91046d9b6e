"""REST depth polling against the local Binance server: rows, flushing, failures."""

from __future__ import annotations

import threading

import polars as pl

from dagster_project.core.lake import Lake
from dagster_project.ingest.binance_rest import BinanceRestConfig
from dagster_project.ingest.collector.polling import PollConfig, poll_depth
from tests.fakes.binance_server import FakeBinance, Fault, synthetic_depth_body


def config(server: FakeBinance, **changes) -> PollConfig:
    rest = BinanceRestConfig(base_url=server.url, max_retries=0, backoff_base_s=0.01)
    defaults = {
        "symbols": ("BTCUSDT", "ETHUSDT"),
        "rest": rest,
        "cadence_s": 0.01,
        "levels": 5,
        "flush_every_s": 0.0,
        "max_rounds": 4,
    }
    return PollConfig(**{**defaults, **changes})


def depth_server() -> FakeBinance:
    return FakeBinance(
        depth={
            "BTCUSDT": synthetic_depth_body(200, mid=60_000.0),
            "ETHUSDT": synthetic_depth_body(200, mid=3_000.0, seed=1),
        }
    )


def landed(lake: Lake, symbol: str) -> pl.DataFrame:
    """Every row landed for ``symbol``, whichever UTC days the polls fell on."""
    days = [k for k in lake.partitions("raw", "depth_snapshots") if k["symbol"] == symbol]
    return pl.concat(lake.read_partition("raw", "depth_snapshots", k) for k in days)


def test_polls_land_top_levels_of_each_symbol_as_appended_parts(tmp_path):
    lake = Lake(tmp_path)
    with depth_server() as server:
        summary = poll_depth(lake, config(server))
        requests = server.requests_to("depth")
    assert (summary.rounds, summary.snapshots, summary.errors) == (4, 8, 0)
    assert {r.params["limit"] for r in requests} == {"100"}
    btc = landed(lake, "BTCUSDT")
    assert btc.height == 4 and set(btc["source"]) == {"binance_rest"}
    assert btc["bid_prices"].list.len().to_list() == [5] * 4
    assert (btc["bid_prices"].list.first() < btc["ask_prices"].list.first()).all()
    parts = [p for p in tmp_path.rglob("part-*.parquet") if "symbol=BTCUSDT" in str(p)]
    assert len(parts) == 4  # one appended part per flush
    assert summary.rows_landed == {"BTCUSDT": 4, "ETHUSDT": 4}


def test_a_failed_poll_is_counted_and_polling_goes_on(tmp_path):
    lake = Lake(tmp_path)
    with depth_server() as server:
        server.script(Fault.server_error(503, path="depth"))
        summary = poll_depth(lake, config(server, symbols=("BTCUSDT",), flush_every_s=3600))
    assert (summary.snapshots, summary.errors) == (3, 1)
    assert landed(lake, "BTCUSDT").height == 3


def test_stopping_flushes_what_was_received(tmp_path):
    lake = Lake(tmp_path)
    stop = threading.Event()
    with depth_server() as server:
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        summary = poll_depth(
            lake, config(server, max_rounds=None, flush_every_s=3600, cadence_s=0.05), stop
        )
    assert summary.rounds >= 2
    assert landed(lake, "ETHUSDT").height == summary.rows_landed["ETHUSDT"] == summary.rounds
