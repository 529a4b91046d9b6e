"""The live order-book collector against local websocket and REST servers (never Binance)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import polars as pl
import pytest

from dagster_project.core.errors import InvalidRequestError, LakeWriteError, UnknownSymbolError
from dagster_project.core.lake import Lake
from dagster_project.ingest.binance_rest import BinanceRestConfig
from dagster_project.ingest.collector.config import CollectorConfig
from dagster_project.ingest.collector.depth_collector import DepthCollector, collect_depth
from dagster_project.ingest.collector.summary import CollectorSummary, FlushReport
from dagster_project.ingest.collector.symbol import SymbolRecorder
from dagster_project.ingest.orderbook.messages import DepthEvent, DepthSnapshot
from dagster_project.ingest.orderbook.recorder import BookRecorder
from dagster_project.ingest.orderbook.replay import replay_messages
from tests.fakes.binance_server import Fault
from tests.fakes.ws_server import Drop, FakeBinanceStream, synthetic_depth_messages

RECORDING = ("streams/spot_btcusdt_20240808.gz", "streams/spot_btcusdt_20240809.gz")
TABLES = ("depth_snapshots", "depth_updates")


def config_for(stream: FakeBinanceStream, **overrides) -> CollectorConfig:
    """A collector config aimed at the local servers, with test-sized waits."""
    market = overrides.get("market", "spot")
    settings = {
        "ws_base_url": stream.url,
        "rest": BinanceRestConfig(
            base_url=stream.rest.url, market=market, backoff_base_s=0.01, backoff_max_s=0.05
        ),
        "flush_every_s": 0.25,
        "midnight_grace_s": 0.05,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.5,
        "snapshot_retry_initial_s": 0.05,
        "final_flush_retry_s": 0.05,
        "handle_signals": False,
        **overrides,
    }
    return CollectorConfig(**settings)


def run_until(
    collector: DepthCollector, condition: Callable[[], bool], timeout_s: float = 20.0
) -> CollectorSummary:
    """Run the collector in this thread; a watcher stops it once ``condition()`` holds."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        collector.request_stop("test")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    summary = collector.run_forever()
    watcher.join()
    return summary


def lake_rows(lake: Lake, table: str, symbol: str) -> pl.DataFrame:
    """Every partition of ``symbol`` in date order, each read as ``Lake.read_partition`` does."""
    dates = sorted(k["date"] for k in lake.partitions("raw", table) if k["symbol"] == symbol)
    frames = [lake.read_partition("raw", table, {"symbol": symbol, "date": d}) for d in dates]
    return pl.concat(frames) if frames else pl.DataFrame()


def assert_summary_matches_lake(summary: CollectorSummary, lake: Lake) -> None:
    for table in TABLES:
        landed = sum(lake_rows(lake, table, s).height for s in summary.symbols)
        assert summary.rows_landed[table] == landed
        for symbol, per_symbol in summary.per_symbol.items():
            assert per_symbol.rows_landed[table] == lake_rows(lake, table, symbol).height
    assert summary.rows_unwritten == {"depth_snapshots": 0, "depth_updates": 0} and summary.ok
    for symbol, per_symbol in summary.per_symbol.items():
        assert lake_rows(lake, "depth_updates", symbol).height == per_symbol.events_applied
    assert summary.events_applied == summary.rows_landed["depth_updates"]


def assert_parts_sorted_by_time(lake: Lake) -> None:
    """Each flush is one ``part-c<first ms>-<last ms>`` file; names sort by time."""
    for table, column in (("depth_snapshots", "ts"), ("depth_updates", "event_time")):
        for keys in lake.partitions("raw", table):
            files = lake.partition_files("raw", table, keys)
            assert files and all(f.name.startswith("part-c") for f in files)
            previous_last = -1
            for file in files:
                first, last = map(int, file.name.removeprefix("part-c").split(".")[0].split("-"))
                times = pl.read_parquet(file)[column].cast(pl.Int64) // 1000
                assert (times.min(), times.max()) == (first, last)
                assert first >= previous_last
                previous_last = last


def snapshot_from(body: dict) -> DepthSnapshot:
    return DepthSnapshot.from_binance(json.dumps(body).encode())


def replay_of(messages, symbol: str, bodies: list[dict], switch_after_u: int | None, market="spot"):
    """The recorded-stream replay of what the collector received: the same rows expected.

    ``bodies`` are the REST snapshots served to the first and (after a drop) second connection;
    the second applies to events past ``switch_after_u``.
    """

    def source(sync, event):
        late = switch_after_u is not None and event.final_update_id > switch_after_u
        return snapshot_from(bodies[1] if late else bodies[0])

    return replay_messages(messages, symbol, market=market, snapshot_source=source)


def without(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    return frame.drop(*columns)


# ------------------------------------------------------------------ handing rows over


def test_symbol_recorder_hands_each_row_over_once_and_keeps_the_sampling_grid():
    """Rows taken in pieces equal ``BookRecorder``'s rows taken at once; a resync that replays
    updates already taken (an old snapshot) does not repeat them."""
    config = CollectorConfig(symbols=("BTCUSDT",), levels=2, snapshot_limit=5)
    pieces, whole = SymbolRecorder("BTCUSDT", config), BookRecorder("BTCUSDT", levels=2)
    snapshot = DepthSnapshot(10, [(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0), (102.0, 1.0)])
    events = [
        DepthEvent(1_000 * k + 450, 11 + k, 11 + k, None, [(100.0, 1.0 + k)], [], None, "BTCUSDT")
        for k in range(8)
    ]
    taken = []
    for recorder in (pieces.sync, whole):
        recorder.on_snapshot(snapshot)
    for k, event in enumerate(events):
        pieces.sync.on_event(event)
        whole.on_event(event)
        if k in (0, 2, 3, 6):
            taken.append(pieces.take("binance_stream"))
    taken.append(pieces.take("binance_stream"))
    for table, expected in (
        ("depth_snapshots", whole.snapshots_frame("binance_stream")),
        ("depth_updates", whole.updates_frame("binance_stream")),
    ):
        assert pl.concat([t[table] for t in taken]).equals(expected)
    assert whole.snapshots_frame("x").height == 7  # 1 s grid from the first event: 1 000 .. 7 000

    pieces.sync.request_resync("test")
    pieces.sync.on_snapshot(DepthSnapshot(14, [(100.0, 4.0)], [(101.0, 1.0)]))  # older than 18
    for event in events[4:]:
        pieces.sync.on_event(event)
    again = pieces.take("binance_stream")
    assert again["depth_updates"].is_empty() and again["depth_snapshots"].is_empty()
    assert pieces.duplicates_dropped == 4 + 3  # updates 15..18; rows at 5, 6 and 7 s


# ------------------------------------------------------------------ (a) the real recording


@pytest.mark.shared_data
@pytest.mark.slow
def test_recording_with_a_dropped_connection_lands_both_days(shared_binance, tmp_path):
    """A real BTCUSDT recording spanning midnight, played with the connection dropped midway:
    the collector reconnects, fetches a new snapshot, resyncs and lands both days completely,
    with nothing from the gap and the rows the offline replay of the same messages produces."""
    paths = [shared_binance / p for p in RECORDING]
    stream = FakeBinanceStream.from_recording(
        paths, "BTCUSDT", drops=[Drop(after=30_000, skip=4_000)]
    )
    lake = Lake(tmp_path / "lake")
    with stream:
        config = config_for(stream, symbols=("BTCUSDT",))
        played = stream.played(config.streams())
        config = dataclasses.replace(config, stop_after_messages=len(played))
        summary = DepthCollector(lake, config).run_forever()
    first, second = stream.connections
    assert first.dropped and not second.dropped and first.sent == 30_000
    assert summary.stop_reason == "stop_after_messages"
    assert summary.messages["depth"] + summary.messages["book_ticker"] == len(played)
    assert (summary.connections, summary.reconnects, summary.disconnects) == (2, 1, 1)
    assert summary.resyncs == {"reconnect": 1}

    # one snapshot per connection: the recording's own, then one fetched after the drop
    depth_requests = stream.rest.requests_to("depth")
    assert [r.status for r in depth_requests] == [200, 200]
    assert depth_requests[1].time >= first.closed_at
    served = stream.served_to("BTCUSDT")
    assert served[0].last_update_id == 50093239218  # the recording's snapshot line
    assert summary.snapshots_taken == 2 and summary.snapshot_failures == 0

    # both UTC days landed, in appended parts readable with Lake.read_partition
    for table in TABLES:
        assert sorted(k["date"] for k in lake.partitions("raw", table)) == [
            "2024-08-08",
            "2024-08-09",
        ]
    assert_parts_sorted_by_time(lake)
    assert_summary_matches_lake(summary, lake)

    # depth_updates: strictly increasing ids per partition, contiguous except at the one resync
    for day in ("2024-08-08", "2024-08-09"):
        ids = lake.read_partition("raw", "depth_updates", {"symbol": "BTCUSDT", "date": day})
        assert ids["final_update_id"].diff().drop_nulls().min() > 0
    updates = lake_rows(lake, "depth_updates", "BTCUSDT")
    breaks = updates.filter(pl.col("first_update_id") != pl.col("final_update_id").shift(1) + 1)
    assert breaks.height == 1  # the resync (the first row has no previous one)
    resumed = breaks.row(0, named=True)

    # the gap: the last event before the drop, then the event bridging the new snapshot
    sent_depth = [json.loads(p)["data"] for _, p in played if b"@depth" in p[:40]]
    before = updates.filter(pl.col("final_update_id") < resumed["final_update_id"]).row(
        -1, named=True
    )
    first_sent_again = next(e for e in sent_depth if e["U"] > before["final_update_id"] + 1)
    assert before["final_update_id"] == sent_depth[sent_depth.index(first_sent_again) - 1]["u"]
    resync_snapshot = served[1].last_update_id
    assert resync_snapshot >= first_sent_again["u"]  # fetched after buffering the new stream
    assert resumed["first_update_id"] <= resync_snapshot + 1 <= resumed["final_update_id"]
    gap_start, gap_end = before["event_time"], resumed["event_time"]
    snapshots = lake_rows(lake, "depth_snapshots", "BTCUSDT")
    assert snapshots.filter(pl.col("ts").is_between(gap_start, gap_end, closed="left")).is_empty()
    assert snapshots.filter(pl.col("ts") < gap_start)["ts"].max() > gap_start - dt.timedelta(
        seconds=1
    )
    after_gap = snapshots.filter(pl.col("ts") >= gap_end)
    assert after_gap["ts"].min() < gap_end + dt.timedelta(seconds=1)

    # the book agrees with Binance's bookTicker wherever the update ids match
    tickers = pl.DataFrame(
        [json.loads(p)["data"] for _, p in played if b"@bookTicker" in p[:40]]
    ).select(
        pl.col("u").alias("last_update_id"),
        *(pl.col(c).cast(pl.Float64).alias(c) for c in ("b", "B", "a", "A")),
    )
    joined = snapshots.join(tickers, on="last_update_id").with_columns(
        after_resync=pl.col("ts") >= gap_end
    )
    assert joined.filter("after_resync").height > 50
    assert joined.height > 80  # rows whose update id has a bookTicker (deterministic: 89)
    for best, column in (("bid_prices", "b"), ("bid_sizes", "B"), ("ask_prices", "a")):
        assert (joined[best].list.first() == joined[column]).all()
    assert (joined["ask_sizes"].list.first() == joined["A"]).all()
    for report in (s.book_tickers for s in summary.per_symbol.values()):
        assert report.compared > 500 and report.mismatched == 0

    # exactly what the offline replay of the received messages produces
    bodies = [s.body for s in served]
    expected = replay_of(played, "BTCUSDT", bodies, switch_after_u=before["final_update_id"])
    assert without(snapshots, "source").equals(without(expected.snapshots, "source"))
    assert without(updates, "source", "received_at").equals(
        without(expected.updates, "source", "received_at")
    )


# ------------------------------------------------------------------ (b) stopping on a signal


def test_sigterm_mid_stream_flushes_everything_received(tmp_path):
    """SIGTERM while two symbols stream: the collector stops reading, lands every row it
    received (several periodic parts and a final one), and its summary matches the lake."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")
    messages, bodies = synthetic_depth_messages(("BTCUSDT", "ETHUSDT"), events=3000)
    lake = Lake(tmp_path / "lake")
    previous_handler = signal.getsignal(signal.SIGTERM)
    with FakeBinanceStream(messages, snapshots=bodies, speed=25.0) as stream:
        config = config_for(stream, symbols=("BTCUSDT", "ETHUSDT"), handle_signals=True)
        collector = DepthCollector(lake, config)

        def terminate_once_flowing() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if collector.rows_landed["depth_updates"] and collector.messages_received > 600:
                    if signal.getsignal(signal.SIGTERM) == previous_handler:  # not installed
                        collector.request_stop("no SIGTERM handler")  # fail, don't kill pytest
                    else:
                        os.kill(os.getpid(), signal.SIGTERM)
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=terminate_once_flowing, daemon=True)
        killer.start()
        summary = collector.run_forever()
        killer.join()
        received = collector.messages_received
        streams = config.streams()
    assert signal.getsignal(signal.SIGTERM) == previous_handler
    assert summary.stop_reason == "signal SIGTERM"
    assert received < len(messages)  # stopped mid-stream
    assert summary.flushes >= 2 and summary.parts_written >= 4
    assert_summary_matches_lake(summary, lake)
    assert_parts_sorted_by_time(lake)
    assert summary.resyncs == {} and summary.snapshots_taken == 2

    # everything received was applied and landed: the same rows as the offline replay
    got = stream.played(streams)[:received]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        updates = lake_rows(lake, "depth_updates", symbol)
        assert updates["final_update_id"][-1] == collector.books[symbol].sync.last_update_id
        expected = replay_of(got, symbol, [bodies[symbol]], switch_after_u=None)
        assert without(lake_rows(lake, "depth_snapshots", symbol), "source").equals(
            without(expected.snapshots, "source")
        )
        assert without(updates, "source", "received_at").equals(
            without(expected.updates, "source", "received_at")
        )
        assert summary.per_symbol[symbol].book_tickers.mismatched == 0


# ------------------------------------------------------------------ (c) REST snapshot failures


def test_a_failed_snapshot_is_retried_and_counted(tmp_path):
    """A snapshot answered 400 (not retried by the REST client) is counted and fetched again by
    the collector; a 503 on the retry is retried by the client itself; then the book syncs."""
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=400)
    lake = Lake(tmp_path / "lake")
    with FakeBinanceStream(messages, snapshots=bodies, speed=40.0) as stream:
        stream.rest.script(
            Fault.api_error(-1000, "An unknown error occurred.", path="/depth"),
            Fault.server_error(503, path="/depth"),
        )
        config = config_for(stream, symbols=("BTCUSDT",))
        planned = stream.planned_messages(config.streams())
        collector = DepthCollector(lake, config)
        summary = run_until(
            collector,
            lambda: (
                collector.messages_received == planned and collector.books["BTCUSDT"].sync.synced
            ),
        )
    assert [r.status for r in stream.rest.requests_to("depth")] == [400, 503, 200]
    assert summary.snapshot_failures == 1 and summary.per_symbol["BTCUSDT"].snapshot_failures == 1
    assert summary.rest_retries == 1
    assert summary.snapshots_taken == 1 and summary.resyncs == {}
    assert summary.events_applied == 400 - 3  # every event after the snapshot's (the 3rd)
    assert_summary_matches_lake(summary, lake)


# ------------------------------------------------------------------ (d) lake write failures


@dataclasses.dataclass(frozen=True)
class FlakyLake(Lake):
    """A lake whose first ``failures[0]`` part writes fail."""

    failures: list[int] = dataclasses.field(default_factory=lambda: [0])

    def append_part(self, *args, **kwargs):
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise LakeWriteError("could not write partition: disk full (test)")
        return super().append_part(*args, **kwargs)


def test_a_failed_flush_keeps_its_rows_for_the_next(tmp_path):
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=1200)
    lake = FlakyLake(tmp_path / "lake", failures=[3])
    reports: list[FlushReport] = []
    with FakeBinanceStream(messages, snapshots=bodies, speed=100.0) as stream:
        config = config_for(stream, symbols=("BTCUSDT",), flush_every_s=0.15)
        config = dataclasses.replace(
            config, stop_after_messages=stream.planned_messages(config.streams())
        )
        summary = DepthCollector(lake, config, on_flush=reports.append).run_forever()
    assert summary.flush_failures == 3 and lake.failures == [0]
    assert any(r.failed and r.rows_pending for r in reports)
    assert reports[-1].rows_pending == 0
    assert_summary_matches_lake(summary, lake)
    assert_parts_sorted_by_time(lake)
    updates = lake_rows(lake, "depth_updates", "BTCUSDT")
    assert summary.events_applied == 1200 - 3
    assert (updates["first_update_id"][1:] == updates["final_update_id"][:-1] + 1).all()
    snapshots = lake_rows(lake, "depth_snapshots", "BTCUSDT")
    assert snapshots["ts"].is_unique().all() and snapshots["ts"].is_sorted()


def test_rows_that_can_never_be_written_are_reported(tmp_path):
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=200)
    lake = FlakyLake(tmp_path / "lake", failures=[10**9])
    with FakeBinanceStream(messages, snapshots=bodies) as stream:
        config = config_for(stream, symbols=("BTCUSDT",), final_flush_attempts=2)
        planned = stream.planned_messages(config.streams())
        collector = DepthCollector(lake, config)
        summary = run_until(
            collector,
            lambda: (
                collector.messages_received == planned and collector.books["BTCUSDT"].sync.synced
            ),
        )
    assert not summary.ok
    assert summary.rows_landed == {"depth_snapshots": 0, "depth_updates": 0}
    assert summary.rows_unwritten["depth_updates"] == summary.events_applied == 200 - 3
    assert summary.rows_unwritten["depth_snapshots"] > 0
    assert not (tmp_path / "lake").exists()


# ------------------------------------------------------------------ synthetic: futures, midnight


def test_futures_stream_with_a_drop_resyncs_on_pu(tmp_path):
    """USD-M futures: events chained by ``pu``, snapshots from /fapi/v1/depth; after a dropped
    connection the event straddling the new snapshot bridges it."""
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=600, market="futures_um")
    lake = Lake(tmp_path / "lake")
    drops = [Drop(after=500, skip=60)]
    stream = FakeBinanceStream(messages, snapshots=bodies, drops=drops, speed=100.0)
    with stream:
        config = config_for(stream, symbols=("BTCUSDT",), market="futures_um")
        played = stream.played(config.streams())
        config = dataclasses.replace(config, stop_after_messages=len(played))
        summary = DepthCollector(lake, config).run_forever()
        url = f"{stream.url}/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker"
        assert config.stream_url() == url
    requests = stream.rest.requests_to("depth")
    assert {(r.path, r.params["limit"]) for r in requests} == {("/fapi/v1/depth", "1000")}
    assert summary.resyncs == {"reconnect": 1} and summary.reconnects == 1
    assert_summary_matches_lake(summary, lake)
    updates = lake_rows(lake, "depth_updates", "BTCUSDT")
    chained = updates["prev_final_update_id"][1:] == updates["final_update_id"][:-1]
    assert (~chained).sum() == 1  # the gap
    resumed = updates.row(int((~chained).arg_max()) + 1, named=True)
    served = [s.body for s in stream.served_to("BTCUSDT")]
    assert len(served) == 2
    resync_snapshot = served[1]["lastUpdateId"]
    assert resumed["first_update_id"] <= resync_snapshot <= resumed["final_update_id"]
    expected = replay_of(
        played,
        "BTCUSDT",
        served,
        switch_after_u=resumed["prev_final_update_id"],
        market="futures_um",
    )
    assert without(lake_rows(lake, "depth_snapshots", "BTCUSDT"), "source").equals(
        without(expected.snapshots, "source")
    )
    assert summary.per_symbol["BTCUSDT"].book_tickers.mismatched == 0


def test_utc_midnight_flush_completes_the_day(tmp_path):
    """The first event of a new UTC day triggers a flush that lands the whole previous day."""
    start = dt.datetime(2024, 8, 8, 23, 59, 45, tzinfo=dt.UTC)
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=300, start=start)
    lake = Lake(tmp_path / "lake")
    reports: list[FlushReport] = []
    with FakeBinanceStream(messages, snapshots=bodies, speed=30.0) as stream:
        config = config_for(stream, symbols=("BTCUSDT",), flush_every_s=60.0)
        config = dataclasses.replace(
            config, stop_after_messages=stream.planned_messages(config.streams())
        )
        summary = DepthCollector(lake, config, on_flush=reports.append).run_forever()
    assert [r.reason for r in reports] == ["utc_midnight", "stop"]
    midnight, stop = reports
    assert {p.parent.name for p in midnight.parts} == {"date=2024-08-08", "date=2024-08-09"}
    assert {p.parent.name for p in stop.parts} == {"date=2024-08-09"}
    day1 = lake.read_partition(
        "raw", "depth_snapshots", {"symbol": "BTCUSDT", "date": "2024-08-08"}
    )
    assert day1["ts"].max() == dt.datetime(2024, 8, 8, 23, 59, 59, tzinfo=dt.UTC)
    assert_summary_matches_lake(summary, lake)


def test_a_malformed_depth_event_resyncs_the_book(tmp_path):
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=300)
    bad = b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":"soon"}}'
    messages.insert(301, (messages[300][0], bad))
    lake = Lake(tmp_path / "lake")
    with FakeBinanceStream(messages, snapshots=bodies, speed=50.0) as stream:
        config = config_for(stream, symbols=("BTCUSDT",))
        planned = stream.planned_messages(config.streams())
        collector = DepthCollector(lake, config)
        summary = run_until(
            collector,
            lambda: (
                collector.messages_received == planned and collector.books["BTCUSDT"].sync.synced
            ),
        )
    assert summary.messages["malformed"] == 1
    assert summary.resyncs == {"malformed_event": 1} and summary.snapshots_taken == 2
    assert_summary_matches_lake(summary, lake)


# ------------------------------------------------------------------ configuration


def test_config_urls_and_validation():
    spot = CollectorConfig(symbols=["btcusdt", "ETHUSDT"])
    assert spot.symbols == ("BTCUSDT", "ETHUSDT")
    assert spot.stream_url() == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/"
        "ethusdt@depth@100ms/ethusdt@bookTicker"
    )
    assert spot.rest_config().base_url == "https://api.binance.com"
    futures = CollectorConfig(market="futures_um")
    assert futures.stream_url().startswith("wss://fstream.binance.com/stream?streams=btcusdt@")
    assert futures.rest_config().market == "futures_um"
    for bad in (
        {"market": "margin"},
        {"symbols": ()},
        {"symbols": ("BTC-USDT",)},
        {"levels": 2000},
        {"flush_every_s": 0},
        {"symbols": tuple(f"S{i}USDT" for i in range(513))},
        {"rest": BinanceRestConfig.preset("futures_um")},
        {"ws_base_url": "https://stream.binance.com"},
    ):
        with pytest.raises(InvalidRequestError):
            CollectorConfig(**bad)
    with pytest.raises(InvalidRequestError, match="depth limit 5000"):
        DepthCollector(Lake("unused"), CollectorConfig(market="futures_um", snapshot_limit=5000))


def test_an_unknown_symbol_fails_before_connecting(tmp_path):
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=10)
    with FakeBinanceStream(messages, snapshots=bodies) as stream:
        config = config_for(stream, symbols=("NOPEUSDT",))
        with pytest.raises(UnknownSymbolError):
            collect_depth(Lake(tmp_path / "lake"), config)
        assert stream.connections == []


def test_an_unreachable_stream_is_retried_with_backoff_until_stopped(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=10)
    with FakeBinanceStream(messages, snapshots=bodies) as stream:
        config = config_for(stream, symbols=("BTCUSDT",), stop_after_s=0.6)
        config = dataclasses.replace(config, ws_base_url=f"ws://127.0.0.1:{port}")
        summary = collect_depth(Lake(tmp_path / "lake"), config)
    assert summary.stop_reason == "stop_after_s"
    assert 3 <= summary.connect_failures <= 6  # 0.05 s doubling: 0, .05, .15, .35 (+-20%)
    assert summary.connections == 0 and summary.rows_landed == {
        "depth_snapshots": 0,
        "depth_updates": 0,
    }
