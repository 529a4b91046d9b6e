"""sql/features/microstructure.sql on small hand-computed books and trades."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from dagster_project.core.lake import connect
from dagster_project.core.schemas import AGG_TRADE_SCHEMA, DEPTH_SNAPSHOT_SCHEMA
from dagster_project.core.sql import run_sql
from dagster_project.transform.labels import build_labels

UTC = dt.UTC


def at(minute: int, second: float = 0.0) -> dt.datetime:
    return dt.datetime(2024, 3, 1, 0, minute, tzinfo=UTC) + dt.timedelta(seconds=second)


def snapshot(ts, bids, asks) -> dict:
    return {
        "ts": ts,
        "last_update_id": 1,
        "bid_prices": [p for p, _ in bids],
        "bid_sizes": [s for _, s in bids],
        "ask_prices": [p for p, _ in asks],
        "ask_sizes": [s for _, s in asks],
        "source": "test",
    }


def trade(n, ts, price, qty, buyer_maker) -> dict:
    return {
        "agg_trade_id": n,
        "ts": ts,
        "price": price,
        "qty": qty,
        "first_trade_id": n,
        "last_trade_id": n,
        "is_buyer_maker": buyer_maker,
        "source": "test",
    }


@pytest.fixture
def inputs(tmp_path) -> dict[str, list[str]]:
    """Kline, snapshot and trade files of three minutes; the klines are complete curated 1m bars
    (labels can be built from them too)."""
    klines = pl.DataFrame(
        {
            "open_time": [at(0), at(1), at(2)],
            "open": [100.1, 100.1, 99.9],
            "high": [100.3, 100.2, 100.1],
            "low": [99.9, 99.8, 99.9],
            "close": [100.15, 99.9, 100.0],
            "is_complete": [True] * 3,
        }
    )
    snapshots = pl.DataFrame(
        [
            snapshot(
                at(0, 10),
                [(100.0, 1.0), (99.95, 2.0), (99.0, 3.0)],
                [(100.1, 2.0), (100.2, 1.0), (101.0, 4.0)],
            ),
            snapshot(
                at(0, 50),
                [(100.0, 3.0), (99.9, 1.0), (99.0, 5.0)],
                [(100.2, 1.0), (100.5, 2.0), (100.6, 2.0)],
            ),
            snapshot(at(1), [(100.0, 1.0)], [(100.1, 1.0)]),  # at 00:01:00 exactly: minute 1
        ],
        schema=DEPTH_SNAPSHOT_SCHEMA,
    )
    trades = pl.DataFrame(
        [
            trade(1, at(0, 5), 100.1, 2.0, False),
            trade(2, at(0, 30), 100.0, 1.0, True),
            trade(3, at(0, 59.999), 100.2, 1.0, False),
            trade(4, at(1), 100.0, 5.0, True),
        ],
        schema=AGG_TRADE_SCHEMA,
    )
    files = {}
    for name, frame in {
        "kline_files": klines,
        "snapshot_files": snapshots,
        "trade_files": trades,
    }.items():
        files[name] = [str(tmp_path / f"{name}.parquet")]
        frame.write_parquet(files[name][0])
    return files


@pytest.fixture
def features(inputs):
    out = run_sql(connect(), "features/microstructure", {**inputs, "top_n": 2}).pl()
    return {row["open_time"]: row for row in out.iter_rows(named=True)}


def test_book_features_are_those_of_the_last_snapshot_in_the_minute(features):
    row = features[at(0)]
    assert row["snapshots"] == 2
    assert row["mid"] == pytest.approx(100.1)
    assert row["spread_bps"] == pytest.approx(0.2 / 100.1 * 1e4)
    assert row["spread_bps_mean"] == pytest.approx((0.1 / 100.05 + 0.2 / 100.1) * 1e4 / 2)
    assert row["microprice"] == pytest.approx((100.0 * 1 + 100.2 * 3) / 4)
    assert row["imbalance_top_n"] == pytest.approx((4 - 3) / 7)
    assert (row["bid_depth_10bps"], row["ask_depth_10bps"]) == (3.0, 1.0)
    assert (row["bid_depth_50bps"], row["ask_depth_50bps"]) == (4.0, 5.0)


def test_trade_flow_and_vwap_per_minute(features):
    row = features[at(0)]
    assert (row["trade_count"], row["trade_volume"]) == (3, 4.0)
    assert (row["taker_buy_qty"], row["taker_sell_qty"]) == (3.0, 1.0)
    assert row["trade_flow_imbalance"] == pytest.approx(0.5)
    assert row["vwap"] == pytest.approx(100.1)
    assert row["vwap_dev_bps"] == pytest.approx((100.15 - 100.1) / 100.1 * 1e4)
    later = features[at(1)]
    assert (later["trade_count"], later["trade_flow_imbalance"]) == (1, pytest.approx(-1.0))
    assert later["vwap_dev_bps"] == pytest.approx(-10.0)


def test_data_at_the_minute_boundary_belongs_to_the_next_minute(features):
    later = features[at(1)]
    assert later["snapshots"] == 1 and later["mid"] == pytest.approx(100.05)
    assert features[at(0)]["trade_count"] == 3  # the 00:01:00.000 trade is not in minute 0


def test_a_minute_without_book_or_trades_keeps_its_row_with_nulls(features):
    row = features[at(2)]
    assert row["mid"] is None and row["spread_bps"] is None and row["vwap"] is None
    assert (row["snapshots"], row["trade_count"], row["trade_volume"]) == (0, 0, 0.0)
    assert row["trade_flow_imbalance"] is None


def test_decision_time_is_the_end_of_the_bucket(features):
    assert [row["decision_time"] for row in features.values()] == [at(1), at(2), at(3)]


def test_labels_join_the_minute_that_ends_at_decision_time(inputs):
    """Joined on decision_time, a label row gets the features of the minute that ends then: only
    trades stamped before decision_time, never the next minute's (the 00:01:00.000 trade)."""
    con = connect()
    features = run_sql(con, "features/microstructure", {**inputs, "top_n": 2}).pl()
    labels = build_labels(con, inputs["kline_files"], "1m", at(0), at(4))
    joined = labels.join(features, on="decision_time", how="inner")
    assert joined.height == labels.height > 0
    trades, snapshots = (pl.read_parquet(inputs[f]) for f in ("trade_files", "snapshot_files"))
    for row in joined.iter_rows(named=True):
        assert row["open_time"] == row["decision_time"] - dt.timedelta(minutes=1)
        bucket = pl.col("ts").is_between(row["open_time"], row["decision_time"], closed="left")
        assert row["trade_count"] == trades.filter(bucket).height
        assert row["snapshots"] == snapshots.filter(bucket).height
    next_up = joined.filter(pl.col("label") == "next_up_1").sort("decision_time")
    # decided at 00:01 on candle 0 (3 trades before 00:01), at 00:02 on candle 1 (the 00:01 trade)
    assert next_up["decision_time"].to_list() == [at(1), at(2)]
    assert next_up["trade_count"].to_list() == [3, 1]


def test_minute_sums_are_added_in_time_order_whatever_the_threads(inputs, tmp_path):
    """Sums of doubles depend on their order; parallel aggregation would vary it from run to run.
    Every minute sum must equal the sum taken in time order, at 1 and 8 threads alike."""
    rng = np.random.default_rng(7)
    n = 200_000
    ts = [at(0) + dt.timedelta(microseconds=int(us)) for us in np.sort(rng.integers(0, 60e6, n))]
    qty = rng.lognormal(-3, 2, n)
    price = 100 + rng.normal(0, 0.3, n)
    buyer_maker = rng.random(n) < 0.5
    trades = pl.DataFrame(
        {
            "agg_trade_id": np.arange(n),
            "ts": ts,
            "price": price,
            "qty": qty,
            "first_trade_id": np.arange(n),
            "last_trade_id": np.arange(n),
            "is_buyer_maker": buyer_maker,
            "source": "test",
        },
        schema=AGG_TRADE_SCHEMA,
    )
    trade_file = tmp_path / "many_trades.parquet"
    trades.write_parquet(trade_file, row_group_size=10_000)
    params = {**inputs, "trade_files": [str(trade_file)], "top_n": 2}
    expected = {
        "trade_volume": in_order(qty),
        "taker_buy_qty": in_order(qty[~buyer_maker]),
        "vwap": in_order(price * qty) / in_order(qty),
    }
    for threads in (1, 8, 8):
        con = connect()
        con.execute(f"set threads = {threads}")
        row = run_sql(con, "features/microstructure", params).pl().row(0, named=True)
        assert {column: row[column] for column in expected} == expected, threads


def in_order(values: np.ndarray) -> float:
    total = 0.0
    for value in values.tolist():
        total += value
    return total
