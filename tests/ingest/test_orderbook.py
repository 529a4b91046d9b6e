"""The local order book, Binance's sync rules, the sampler, and the replay of a real recording."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import polars as pl
import pytest

from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.schemas import (
    AGG_TRADE_SCHEMA,
    DEPTH_SNAPSHOT_SCHEMA,
    DEPTH_UPDATE_SCHEMA,
)
from dagster_project.ingest.orderbook.book import OrderBook
from dagster_project.ingest.orderbook.messages import (
    BookTicker,
    DepthDataError,
    DepthEvent,
    DepthSnapshot,
)
from dagster_project.ingest.orderbook.replay import (
    ReplayError,
    read_recording,
    replay,
    replay_messages,
)
from dagster_project.ingest.orderbook.sampling import BookSampler, DepthUpdateRecorder
from dagster_project.ingest.orderbook.sync import BookSynchronizer, SyncOutcome, SyncState

RECORDING = ("streams/spot_btcusdt_20240808.gz", "streams/spot_btcusdt_20240809.gz")
APPLIED, DROPPED, BUFFERED, RESYNC = (
    SyncOutcome.APPLIED,
    SyncOutcome.DROPPED,
    SyncOutcome.BUFFERED,
    SyncOutcome.RESYNC,
)


def event(U, u, bids=(), asks=(), E=0, pu=None, received_ns=None):  # noqa: N803 (Binance's names)
    return DepthEvent(E, U, u, pu, list(bids), list(asks), received_ns)


def snapshot(last_update_id, bids=((100.0, 1.0), (99.0, 2.0)), asks=((101.0, 1.0), (102.0, 2.0))):
    return DepthSnapshot(last_update_id, list(bids), list(asks))


def synced(market="spot", **kw) -> BookSynchronizer:
    """A synchronizer holding snapshot 10 (bids 100, 99; asks 101, 102)."""
    sync = BookSynchronizer("BTCUSDT", market, **kw)
    assert sync.on_snapshot(snapshot(10)) is APPLIED
    return sync


# ---------------------------------------------------------------------------------- the book


def test_snapshot_then_events_set_absolute_quantities():
    book = OrderBook()
    book.load_snapshot(5, [["100.5", "1.0"], ["99.0", "2.0"]], [["101.0", "3.0"], ["103", "0"]])
    assert book.last_update_id == 5
    assert book.levels() == ([(100.5, 1.0), (99.0, 2.0)], [(101.0, 3.0)])  # qty 0 not loaded
    book.apply([(100.5, 4.0), (100.7, 0.5)], [(101.0, 0.25)])  # absolute, not deltas
    assert book.best_bid() == (100.7, 0.5)
    assert book.best_ask() == (101.0, 0.25)
    assert book.levels() == ([(100.7, 0.5), (100.5, 4.0), (99.0, 2.0)], [(101.0, 0.25)])


def test_quantity_zero_removes_a_level_and_removing_an_absent_level_is_harmless():
    book = OrderBook()
    book.load_snapshot(1, [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])
    book.apply([(100.0, 0.0), (42.0, 0.0)], [(101.0, 0.0), (500.0, 0.0)])
    assert book.levels() == ([(99.0, 2.0)], [])
    assert book.best_bid() == (99.0, 2.0)
    assert book.best_ask() is None
    assert book.depth == (1, 0)


def test_top_is_best_first_on_both_sides():
    book = OrderBook()
    book.load_snapshot(1, [(98.0, 3.0), (100.0, 1.0), (99.0, 2.0)], [(103.0, 3.0), (101.0, 1.0)])
    assert book.top(2) == ([100.0, 99.0], [1.0, 2.0], [101.0, 103.0], [1.0, 3.0])
    assert book.top(10) == ([100.0, 99.0, 98.0], [1.0, 2.0, 3.0], [101.0, 103.0], [1.0, 3.0])
    assert book.top(0) == ([], [], [], [])
    with pytest.raises(InvalidRequestError, match="expected a level count >= 0"):
        book.top(-1)


def test_crossed_book_is_detected():
    book = OrderBook()
    book.load_snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
    assert not book.is_crossed()
    book.apply([(101.0, 1.0)], [])
    assert book.is_crossed()


def test_string_levels_are_refused_rather_than_stored():
    book = OrderBook()
    with pytest.raises(TypeError):
        book.apply([("100.0", "0.00000000")], [])


@pytest.mark.parametrize("seed", range(3))
def test_book_with_a_small_window_matches_a_plain_sorted_reference(seed):
    """Random walks far beyond the sorted window (refills and trims) never change the answer."""
    rng = random.Random(seed)
    book, bids, asks = OrderBook(window=4), {}, {}
    mid = 1000
    for _ in range(3000):
        mid += rng.choice((-3, -1, 0, 0, 1, 3))
        bid_updates, ask_updates = [], []
        for _ in range(rng.randint(1, 8)):
            offset = min(int(rng.expovariate(0.1)) + 1, 200)
            qty = 0.0 if rng.random() < 0.45 else float(rng.randint(1, 9))
            if rng.random() < 0.5:
                bid_updates.append((float(mid - offset), qty))
            else:
                ask_updates.append((float(mid + offset), qty))
        # keep the reference uncrossed the way the exchange does: the other side gives way
        best_ask = min((p for p, q in ask_updates if q), default=None)
        for price in [p for p in bids if best_ask is not None and p >= best_ask]:
            bid_updates.append((price, 0.0))
        book.apply(bid_updates, ask_updates)
        for side, updates in ((bids, bid_updates), (asks, ask_updates)):
            for price, qty in updates:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        crossed = [p for p in asks if bids and p <= max(bids)]
        if crossed:
            book.apply([], [(p, 0.0) for p in crossed])
            for p in crossed:
                del asks[p]
        n = rng.choice((1, 3, 10))
        want_bids = sorted(bids, reverse=True)[:n]
        want_asks = sorted(asks)[:n]
        assert book.top(n) == (
            want_bids,
            [bids[p] for p in want_bids],
            want_asks,
            [asks[p] for p in want_asks],
        )
        assert book.best_bid() == ((want_bids[0], bids[want_bids[0]]) if bids else None)
        assert book.levels() == (sorted(bids.items(), reverse=True), sorted(asks.items()))


# ------------------------------------------------------------------------------ the messages


def test_depth_event_parses_combined_envelope_bare_dict_and_bytes():
    data = {
        "e": "depthUpdate",
        "E": 1723161255208,
        "s": "BTCUSDT",
        "U": 157,
        "u": 160,
        "b": [["61737.63000000", "0.00000000"]],
        "a": [["61837.64000000", "1.54698000"], ["61839.85000000", "0.0"]],
    }
    envelope = {"stream": "btcusdt@depth@100ms", "data": data}
    for message in (envelope, data, json.dumps(envelope).encode(), json.dumps(data)):
        ev = DepthEvent.from_binance(message, received_ns=7)
        assert ev == DepthEvent(
            1723161255208,
            157,
            160,
            None,
            [(61737.63, 0.0)],
            [(61837.64, 1.54698), (61839.85, 0.0)],
            7,
            "BTCUSDT",
        )
    futures = DepthEvent.from_binance({**data, "pu": 149, "T": 1723161255207})
    assert futures.prev_final_update_id == 149


def test_malformed_messages_raise_naming_what_was_expected():
    with pytest.raises(DepthDataError, match="expected Binance's depth event JSON"):
        DepthEvent.from_binance({"e": "depthUpdate", "E": 1, "U": 1, "b": [], "a": []})
    with pytest.raises(DepthDataError, match="e='trade'; expected 'depthUpdate'"):
        DepthEvent.from_binance({"e": "trade", "E": 1, "U": 1, "u": 1, "b": [], "a": []})
    with pytest.raises(DepthDataError, match="cannot parse depth snapshot"):
        DepthSnapshot.from_binance(b'{"lastUpdateId": 5, "bids": [["x", "1"]], "asks": []}')
    ticker = BookTicker.from_binance(
        b'{"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT","b":"1.5","B":"2",'
        b'"a":"1.6","A":"3"}}'
    )
    assert ticker == BookTicker(9, 1.5, 2.0, 1.6, 3.0, "BTCUSDT")


# -------------------------------------------------------------------------- the synchronizer


def test_events_are_buffered_until_a_snapshot_then_old_ones_dropped():
    sync = BookSynchronizer("btcusdt")
    assert sync.needs_snapshot
    assert sync.on_event(event(5, 8, bids=[(100.0, 9.0)])) is BUFFERED  # u <= 10: dropped later
    assert sync.on_event(event(9, 10)) is BUFFERED  # u == lastUpdateId: dropped later
    assert sync.on_event(event(11, 12, bids=[(100.0, 5.0)])) is BUFFERED  # U == 11 bridges
    assert sync.on_snapshot(snapshot(10)) is APPLIED
    assert sync.state is SyncState.SYNCED
    assert sync.book.best_bid() == (100.0, 5.0)
    assert sync.last_update_id == 12
    stats = sync.stats
    assert (stats.events_buffered, stats.events_dropped, stats.events_applied) == (3, 2, 1)
    assert stats.snapshots_used == 1
    assert sync.on_event(event(13, 13)) is APPLIED
    assert sync.on_event(event(12, 13)) is DROPPED  # a duplicate: u <= previous u
    assert sync.on_snapshot(snapshot(99)) is DROPPED  # nobody asked for it
    assert sync.stats.snapshots_ignored == 1


@pytest.mark.parametrize(("first_U", "first_u"), [(11, 11), (8, 11), (3, 40)])
def test_first_event_straddling_the_snapshot_is_accepted(first_U, first_u):  # noqa: N803
    sync = synced()
    assert sync.state is SyncState.BRIDGING
    assert sync.on_event(event(first_U, first_u, asks=[(101.0, 7.0)])) is APPLIED
    assert sync.book.best_ask() == (101.0, 7.0)
    assert sync.synced


def test_first_event_after_a_gap_from_the_snapshot_is_rejected():
    sync = synced()
    assert sync.on_event(event(9, 10)) is DROPPED  # u <= lastUpdateId
    assert sync.on_event(event(12, 15)) is RESYNC  # U = 12 > lastUpdateId + 1: update 11 missing
    assert sync.needs_snapshot
    assert sync.stats.resyncs == {"snapshot_behind_stream": 1}
    assert sync.book.depth == (0, 0)  # discarded, not patched
    assert sync.buffered == 1  # the event is kept: a newer snapshot can bridge it
    assert sync.on_snapshot(snapshot(13)) is APPLIED
    assert sync.synced and sync.last_update_id == 15


def test_sequence_gap_resyncs_and_a_new_snapshot_recovers():
    sync = synced()
    assert sync.on_event(event(11, 12)) is APPLIED
    assert sync.on_event(event(14, 15)) is RESYNC  # U should be 13
    assert sync.needs_snapshot and sync.stats.resyncs == {"sequence_gap": 1}
    assert sync.on_event(event(16, 18, bids=[(100.0, 3.0)])) is BUFFERED
    assert sync.on_event(event(19, 20, bids=[(100.0, 4.0)])) is BUFFERED
    assert sync.on_snapshot(snapshot(17)) is APPLIED  # 14..15 dropped, 16..18 bridges 18
    assert sync.synced and sync.last_update_id == 20
    assert sync.book.best_bid() == (100.0, 4.0)
    assert sync.stats.snapshots_used == 2
    assert sync.stats.resync_count == 1


def test_gap_inside_the_buffer_is_found_when_the_snapshot_replays_it():
    sync = BookSynchronizer("BTCUSDT")
    for ev in (event(11, 12), event(13, 14), event(16, 17), event(18, 19)):
        sync.on_event(ev)
    assert sync.on_snapshot(snapshot(10)) is RESYNC
    assert sync.stats.resyncs == {"sequence_gap": 1}
    assert sync.buffered == 2  # from the breaking event on
    assert sync.on_snapshot(snapshot(16)) is APPLIED
    assert sync.last_update_id == 19


def test_crossed_book_resyncs():
    sync = synced()
    assert sync.on_event(event(11, 11, bids=[(101.5, 1.0)])) is RESYNC  # above the 101 ask
    assert sync.stats.resyncs == {"crossed_book": 1}
    assert sync.needs_snapshot and sync.book.depth == (0, 0)


def test_futures_use_pu_and_their_own_first_event_rule():
    sync = synced("futures_um")
    # futures: drop u < lastUpdateId; the first event needs U <= lastUpdateId <= u, so u == 10
    # is applied (spot would drop it)
    assert sync.on_event(event(7, 10, bids=[(100.0, 5.0)], pu=6)) is APPLIED
    assert sync.on_event(event(25, 30, pu=10)) is APPLIED  # U jumps; pu chains: fine
    assert sync.on_event(event(31, 32, pu=29)) is RESYNC  # pu != previous u (30)
    assert sync.stats.resyncs == {"sequence_gap": 1}
    with pytest.raises(DepthDataError, match="has no pu"):
        sync.on_event(event(33, 34))

    spot = synced("spot")
    assert spot.on_event(event(7, 10)) is DROPPED
    assert spot.on_event(event(11, 12, pu=999)) is APPLIED  # spot ignores pu


def test_futures_first_event_after_the_snapshot_must_reach_it():
    sync = synced("futures_um")
    assert sync.on_event(event(5, 9, pu=4)) is DROPPED  # u < lastUpdateId
    assert sync.on_event(event(11, 12, pu=9)) is RESYNC  # U > lastUpdateId
    assert sync.stats.resyncs == {"snapshot_behind_stream": 1}


def test_stale_stream_is_detected_by_the_clock_and_by_a_late_event():
    sec = 1_000_000_000
    sync = BookSynchronizer("BTCUSDT", stale_after_s=2.0)
    assert not sync.check_stale(100 * sec)  # never saw an event: nothing to be stale
    sync.on_snapshot(DepthSnapshot(10, [(100.0, 1.0)], [(101.0, 1.0)], received_ns=0))
    assert sync.on_event(event(11, 11, received_ns=1 * sec)) is APPLIED
    assert not sync.check_stale(3 * sec)  # 2.0 s: not yet
    assert sync.check_stale(3 * sec + 1)
    assert sync.needs_snapshot and sync.stats.resyncs == {"stale_stream": 1}
    assert not sync.check_stale(60 * sec)  # already waiting: counted once

    late = BookSynchronizer("BTCUSDT", stale_after_s=2.0)
    late.on_snapshot(DepthSnapshot(10, [(100.0, 1.0)], [(101.0, 1.0)], received_ns=0))
    assert late.on_event(event(11, 11, received_ns=1 * sec)) is APPLIED
    assert late.on_event(event(12, 12, received_ns=4 * sec)) is RESYNC
    assert late.stats.resyncs == {"stale_stream": 1}
    assert late.buffered == 1


def test_buffer_overflow_is_counted_and_keeps_the_newest():
    sync = BookSynchronizer("BTCUSDT", max_buffer=3)
    for i in range(11, 16):
        sync.on_event(event(i, i))
    assert sync.stats.buffer_overflow == 2
    assert sync.on_snapshot(snapshot(12)) is APPLIED  # 13, 14, 15 kept
    assert sync.last_update_id == 15


def test_bad_settings_and_foreign_symbols_raise():
    with pytest.raises(InvalidRequestError, match="expected one of"):
        BookSynchronizer("BTCUSDT", market="coin_m")
    with pytest.raises(InvalidRequestError, match="expected > 0"):
        BookSynchronizer("BTCUSDT", stale_after_s=0)
    with pytest.raises(InvalidRequestError, match="fed to the BTCUSDT synchronizer"):
        BookSynchronizer("BTCUSDT").on_event(DepthEvent(0, 1, 1, None, [], [], None, "ETHUSDT"))
    with pytest.raises(InvalidRequestError, match="whole number"):
        BookSampler(cadence_ms=0)


# ------------------------------------------------------------------------------- the sampler


def test_sampler_cadence_and_no_look_ahead():
    sampler = BookSampler(cadence_ms=1000, levels=2)
    sync = BookSynchronizer("BTCUSDT", observers=[sampler])
    sync.on_snapshot(snapshot(10))
    sync.on_event(event(11, 11, bids=[(100.0, 1.5)], E=500))  # first event: rows start at 1000
    sync.on_event(event(12, 12, bids=[(100.0, 2.5)], E=1000))  # exactly at ts=1000: in its row
    sync.on_event(event(13, 13, bids=[(100.0, 3.5)], E=2001))  # ts=2000 + 1 ms: not in row 2000
    sync.on_event(event(14, 14, bids=[(100.0, 4.5)], E=3500))
    rows = sampler.to_frame("test").to_dicts()
    base = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert [r["ts"] - base for r in rows] == [dt.timedelta(seconds=s) for s in (1, 2, 3)]
    assert [r["bid_sizes"][0] for r in rows] == [2.5, 2.5, 3.5]
    assert [r["last_update_id"] for r in rows] == [12, 12, 13]
    assert rows[0]["bid_prices"] == [100.0, 99.0]
    assert rows[0]["ask_prices"] == [101.0, 102.0] and rows[0]["ask_sizes"] == [1.0, 2.0]
    assert rows[0]["source"] == "test"


def test_sampler_writes_no_rows_while_out_of_sync():
    sampler = BookSampler(cadence_ms=1000, levels=1)
    sync = BookSynchronizer("BTCUSDT", observers=[sampler])
    sync.on_snapshot(snapshot(10))
    sync.on_event(event(11, 11, E=1000))
    sync.on_event(event(12, 12, E=2500))  # rows 1000, 2000 (both as of event 11)
    sync.on_event(event(14, 14, E=5200))  # gap: resync, so no rows for 3000..6000
    sync.on_event(event(15, 15, E=6700))  # buffered
    sync.on_snapshot(snapshot(14))  # replays 15: rows restart at 7000
    sync.on_event(event(16, 16, E=8100))  # rows 7000, 8000 (as of event 15)
    sync.on_event(event(17, 17, E=8200))
    frame = sampler.to_frame("test")
    seconds = (frame["ts"].dt.epoch("ms") // 1000).to_list()
    assert seconds == [1, 2, 7, 8]
    assert frame["last_update_id"].to_list() == [11, 11, 15, 15]


def test_frames_follow_the_contracts():
    sampler, updates = BookSampler(1000, 50), DepthUpdateRecorder()
    sync = BookSynchronizer("BTCUSDT", observers=[sampler, updates])
    sync.on_snapshot(snapshot(10))
    sync.on_event(event(11, 11, bids=[(100.0, 2.0), (98.0, 1.0)], E=900, received_ns=1_500_000))
    sync.on_event(event(12, 12, asks=[(101.0, 0.0)], E=1900))
    snaps, ups = sampler.to_frame("simulator"), updates.to_frame("binance_stream")
    assert snaps.schema == pl.Schema(DEPTH_SNAPSHOT_SCHEMA)
    assert ups.schema == pl.Schema(DEPTH_UPDATE_SCHEMA)
    assert snaps.height == 1
    assert ups.to_dicts()[0] == {
        "event_time": dt.datetime(1970, 1, 1, 0, 0, 0, 900_000, tzinfo=dt.UTC),
        "first_update_id": 11,
        "final_update_id": 11,
        "prev_final_update_id": None,
        "bid_prices": [100.0, 98.0],
        "bid_sizes": [2.0, 1.0],
        "ask_prices": [],
        "ask_sizes": [],
        "received_at": dt.datetime(1970, 1, 1, 0, 0, 0, 1_500, tzinfo=dt.UTC),
        "source": "binance_stream",
    }
    assert ups["received_at"].to_list()[1] is None
    assert ups["ask_prices"].to_list()[1] == [101.0] and ups["ask_sizes"].to_list()[1] == [0.0]


def test_frames_are_exact_across_packing_chunks(monkeypatch):
    monkeypatch.setattr(BookSampler, "CHUNK", 2)
    monkeypatch.setattr(DepthUpdateRecorder, "CHUNK", 3)
    rng = random.Random(5)
    sampler, updates = BookSampler(100, 3), DepthUpdateRecorder()
    sync = BookSynchronizer("BTCUSDT", observers=[sampler, updates])
    sync.on_snapshot(snapshot(10))
    events, expected_rows = [], []
    for i in range(11, 31):
        bids = [(float(rng.randint(90, 100)), float(rng.randint(0, 3))) for _ in range(i % 4)]
        asks = [(float(rng.randint(101, 110)), float(rng.randint(0, 3))) for _ in range(i % 3)]
        ev = event(i, i, bids, asks, E=i * 100 + 50, pu=i - 1, received_ns=i * 1_000_000)
        if i > 11:
            expected_rows.append(sync.book.top(3))  # the row at i * 100 - 100 + 100 = E - 50
        assert sync.on_event(ev) is APPLIED
        events.append(ev)
    ups = updates.to_frame("x")
    assert ups["final_update_id"].to_list() == list(range(11, 31))
    assert ups["prev_final_update_id"].to_list() == list(range(10, 30))
    assert ups["bid_prices"].to_list() == [[p for p, _ in e.bids] for e in events]
    assert ups["bid_sizes"].to_list() == [[q for _, q in e.bids] for e in events]
    assert ups["ask_prices"].to_list() == [[p for p, _ in e.asks] for e in events]
    assert ups["ask_sizes"].to_list() == [[q for _, q in e.asks] for e in events]
    snaps = sampler.to_frame("x")
    assert snaps["ts"].dt.epoch("ms").to_list() == [i * 100 for i in range(12, 31)]
    assert [
        (r["bid_prices"], r["bid_sizes"], r["ask_prices"], r["ask_sizes"]) for r in snaps.to_dicts()
    ] == expected_rows


# ----------------------------------------------------------------- the real recording (shared)


@pytest.fixture(scope="module")
def recording(shared_binance) -> list[Path]:
    return [shared_binance / name for name in RECORDING]


@pytest.fixture(scope="module")
def messages(recording) -> list[tuple[int, bytes]]:
    return list(read_recording(recording))


@pytest.fixture(scope="module")
def clean(messages):
    return replay_messages(messages, "BTCUSDT")


@pytest.mark.shared_data
def test_real_recording_matches_binance_book_ticker(recording):
    result = replay(recording, "BTCUSDT")
    tickers = result.book_tickers
    print(f"bookTicker comparison points: {tickers.compared}, mismatched: {tickers.mismatched}")
    assert 1_000 <= tickers.compared < 10_000  # in the thousands
    assert tickers.compared == 1_072
    assert tickers.mismatched == 0, tickers.examples
    assert result.messages == {
        "depth": 6_495,
        "book_ticker": 73_174,
        "trade": 19_904,
        "agg_trade": 0,
        "snapshot": 1,
        "untied_snapshot": 0,
        "other": 0,
    }
    assert result.agg_trades.schema == pl.Schema(AGG_TRADE_SCHEMA)
    assert result.agg_trades.height == 0  # the recording has @trade, not @aggTrade
    stats = result.stats
    assert stats.resyncs == {}
    assert (stats.events_applied, stats.events_dropped, stats.snapshots_used) == (6_493, 2, 1)
    updates, snaps = result.updates, result.snapshots
    assert updates.schema == pl.Schema(DEPTH_UPDATE_SCHEMA)
    assert snaps.schema == pl.Schema(DEPTH_SNAPSHOT_SCHEMA)
    assert updates.height == 6_493
    first, final = updates["first_update_id"], updates["final_update_id"]
    assert (first.slice(1) == final.head(-1) + 1).all()  # unbroken: U == previous u + 1
    assert updates["received_at"].null_count() == 0
    # one row a second, 23:54:16 .. 00:05:05 across both files, 50 levels a side, uncrossed
    assert snaps.height == 650
    assert snaps["ts"].diff().drop_nulls().unique().to_list() == [dt.timedelta(seconds=1)]
    assert snaps["ts"].min() == dt.datetime(2024, 8, 8, 23, 54, 16, tzinfo=dt.UTC)
    assert snaps["ts"].max() == dt.datetime(2024, 8, 9, 0, 5, 5, tzinfo=dt.UTC)
    assert (snaps["bid_prices"].list.len() == 50).all()
    assert (snaps["bid_prices"].list.first() < snaps["ask_prices"].list.first()).all()
    assert set(snaps["source"]) == set(updates["source"]) == {"binance_replay"}


def _depth_index(messages):
    """Positions of the depth lines, and each one's (E, U, u)."""
    index = []
    for i, (_, payload) in enumerate(messages):
        if payload.startswith(b'{"stream":"btcusdt@depth'):
            ev = DepthEvent.from_binance(payload)
            index.append((i, ev.event_time_ms, ev.first_update_id, ev.final_update_id))
    return index


def _book_at(messages, final_update_id) -> DepthSnapshot:
    """The whole reconstructed book right after the event ending at ``final_update_id``: what a
    REST snapshot taken at that moment would have returned."""
    captured = {}

    class Capture:
        def after_apply(self, ev, book):
            if ev.final_update_id == final_update_id:
                captured["book"] = book.levels()

    replay_sync = BookSynchronizer("BTCUSDT", observers=[Capture()])
    for received_ns, payload in messages:
        if payload.startswith(b'{"stream":"btcusdt@depth'):
            replay_sync.on_event(DepthEvent.from_binance(payload, received_ns))
        elif payload.startswith(b'{"lastUpdateId"'):
            replay_sync.on_snapshot(DepthSnapshot.from_binance(payload))
        if "book" in captured:
            bids, asks = captured["book"]
            return DepthSnapshot(final_update_id, bids, asks)
    raise AssertionError(f"no event ends at {final_update_id}")


@pytest.mark.shared_data
def test_dropped_event_is_detected_and_recovered_with_a_new_snapshot(messages, clean):
    depth = _depth_index(messages)
    k, lag = 3_000, 15
    dropped_line = depth[k][0]
    last_good_ms = depth[k - 1][1]
    rest_u = depth[k + lag][3]  # the "REST snapshot" lands 1.5 s (15 events) after the break
    rest = _book_at(messages, rest_u)

    def snapshot_source(sync, ev):
        if sync.stats.resync_count and ev.final_update_id == rest_u:
            return rest
        return None

    result = replay_messages(
        [m for i, m in enumerate(messages) if i != dropped_line],
        "BTCUSDT",
        snapshot_source=snapshot_source,
    )
    stats = result.stats
    assert stats.resyncs == {"sequence_gap": 1}
    assert stats.snapshots_used == 2
    assert stats.events_applied == clean.stats.events_applied - 1 - lag  # lost one + those before
    # the snapshot
    assert result.book_tickers.mismatched == 0
    assert result.book_tickers.compared > 1_000

    first_after_ms = depth[k + lag + 1][1]
    resumed_ms = -(-first_after_ms // 1000) * 1000
    ms = clean.snapshots["ts"].dt.epoch("ms")
    gap = (ms >= last_good_ms) & (ms < resumed_ms)
    assert 1 <= gap.sum() <= 3  # the resync gap is visible as missing rows ...
    assert result.snapshots.equals(clean.snapshots.filter(~gap))  # ... and nothing else differs
    lost = {depth[k + j][3] for j in range(lag + 1)}
    assert result.updates.equals(clean.updates.filter(~pl.col("final_update_id").is_in(lost)))


@pytest.mark.shared_data
def test_dropped_event_with_no_snapshot_to_recover_stops_the_rows(messages, clean):
    depth = _depth_index(messages)
    k = 3_000
    result = replay_messages([m for i, m in enumerate(messages) if i != depth[k][0]], "BTCUSDT")
    assert result.stats.resyncs == {"sequence_gap": 1}
    assert result.stats.events_applied == k - 2  # the two events older than the snapshot
    assert result.stats.events_buffered == 3 + len(depth) - k - 1
    ms = result.snapshots["ts"].dt.epoch("ms")
    assert ms.max() < depth[k - 1][1]  # nothing after the break: no drifting book
    before = clean.snapshots.filter(pl.col("ts").dt.epoch("ms") < depth[k - 1][1])
    assert result.snapshots.equals(before)
    assert result.updates["final_update_id"].max() == depth[k - 1][3]


@pytest.mark.shared_data
def test_silent_depth_stream_with_live_connection_is_stale(messages):
    depth = _depth_index(messages)
    start_ns = messages[depth[2_000][0]][0]
    depth_lines = {d[0] for d in depth}
    silent = {  # 12 s without depth events while bookTicker and trade messages keep coming
        i
        for i, (ns, _) in enumerate(messages)
        if i in depth_lines and start_ns <= ns < start_ns + 12_000_000_000
    }
    result = replay_messages(
        [m for i, m in enumerate(messages) if i not in silent], "BTCUSDT", stale_after_s=10.0
    )
    assert result.stats.resyncs == {"stale_stream": 1}  # noticed on the bookTicker/trade clock
    assert result.stats.events_applied == 2_000 - 2
    assert result.snapshots["ts"].dt.epoch("ms").max() < depth[1_999][1]


# --------------------------------------------------------------------- replay edges (issue 10)
# Small hand-made recordings (always run) and the real ones (skipped without them).


def _levels(pairs):
    return [[str(p), str(q)] for p, q in pairs]


def _depth(symbol, U, u, E, bids=(), asks=(), pu=None, stream="depth@100ms"):  # noqa: N803
    data = {"e": "depthUpdate", "E": E, "s": symbol, "U": U, "u": u}
    data |= {"b": _levels(bids), "a": _levels(asks)}
    if pu is not None:
        data["pu"] = pu
    return {"stream": f"{symbol.lower()}@{stream}", "data": data}


def _rest_snapshot(last_update_id, bids, asks, request=None):
    """A recorded REST ``/depth`` body: bare, or tied to its symbol by the request path."""
    body = {"lastUpdateId": last_update_id, "bids": _levels(bids), "asks": _levels(asks)}
    return body if request is None else {"stream": request, "data": body}


def _agg(symbol, a, price, qty, first, last, T, m):  # noqa: N803
    data = {"e": "aggTrade", "E": T + 3, "s": symbol, "a": a, "p": str(price), "q": str(qty)}
    data |= {"f": first, "l": last, "T": T, "m": m, "M": True}
    return {"stream": f"{symbol.lower()}@aggTrade", "data": data}


def _recorded(messages, start_ns=1_700_000_000_000_000_000):
    """``(receive ns, json bytes)`` pairs, 100 ms apart, as ``read_recording`` yields them."""
    return [
        (start_ns + i * 100_000_000, json.dumps(m, separators=(",", ":")).encode())
        for i, m in enumerate(messages)
    ]


def _write_recording(path: Path, messages) -> Path:
    path.write_bytes(b"".join(b"%d %s\n" % pair for pair in _recorded(messages)))
    return path


T0 = 1_700_000_000_000  # exchange ms of the hand-made recordings
BOOK = {"bids": [(100.0, 1.0), (99.0, 2.0)], "asks": [(101.0, 1.0), (102.0, 2.0)]}


def _futures_events(symbol, ids, stream="depth@0ms"):
    """USD-M futures events over ``ids``: (U, u) pairs chained by ``pu``."""
    events, pu = [], ids[0][0] - 1
    for k, (U, u) in enumerate(ids):  # noqa: N806
        bids = [(100.0, 1.0 + k)]
        events.append(_depth(symbol, U, u, T0 + 100 * k, bids, pu=pu, stream=stream))
        pu = u
    return events


def test_usdm_depth_at_0ms_stream_is_replayed():
    events = _futures_events("BTCUSDT", [(95, 105), (106, 110), (111, 120)])
    partial = {"stream": "btcusdt@depth20@100ms", "data": {"e": "depthUpdate", "E": T0}}
    messages = [events[0], _rest_snapshot(100, **BOOK), partial, *events[1:]]
    result = replay_messages(_recorded(messages), "BTCUSDT", market="futures_um")
    assert result.messages["depth"] == 3  # the partial-book @depth20 stream is not a diff stream
    assert result.messages["other"] == 1
    assert result.stats.events_applied == 3
    assert result.updates["final_update_id"].to_list() == [105, 110, 120]


@pytest.mark.shared_data
def test_real_recording_under_depth_at_0ms_stream_names_replays_the_same(messages, clean):
    renamed = [
        (ns, p.replace(b'"btcusdt@depth@100ms"', b'"btcusdt@depth@0ms"', 1)) for ns, p in messages
    ]
    result = replay_messages(renamed, "BTCUSDT")
    assert result.messages == clean.messages
    assert result.updates.equals(clean.updates)
    assert result.snapshots.equals(clean.snapshots)


def _spot_events(symbol, first_id, n):
    return [
        _depth(symbol, first_id + k, first_id + k, T0 + 100 * k, bids=[(100.0, 2.0 + k)])
        for k in range(n)
    ]


@pytest.mark.parametrize(
    ("case", "symbol", "files"),
    [
        ("no snapshot in the file", "BTCUSDT", ["late"]),
        ("wrong --symbol", "ETHUSDT", ["early", "late"]),
        ("files out of order", "BTCUSDT", ["late", "early"]),
    ],
)
def test_replay_that_applies_nothing_raises_with_the_counts(tmp_path, case, symbol, files):
    events = _spot_events("BTCUSDT", 101, 6)
    recordings = {
        "early": _write_recording(
            tmp_path / "early.txt", [_rest_snapshot(100, **BOOK), *events[:3]]
        ),
        "late": _write_recording(tmp_path / "late.txt", events[3:]),
    }
    with pytest.raises(CandlelakeError, match=rf"no {symbol} depth event applied") as err:
        replay([recordings[name] for name in files], symbol)
    assert isinstance(err.value, ReplayError)
    assert "applied 0" in str(err.value) and "other" in str(err.value), case


@pytest.mark.shared_data
@pytest.mark.parametrize(("symbol", "order"), [("ETHUSDT", 1), ("BTCUSDT", -1)])
def test_real_recording_replay_that_applies_nothing_raises(recording, symbol, order):
    with pytest.raises(CandlelakeError, match="applied 0, dropped"):
        replay(recording[::order], symbol)


def _merged_futures(request_paths: bool):
    """BTCUSDT and ETHUSDT futures streams on one connection: update ids are shared, so BTCUSDT's
    snapshot (lastUpdateId 15) falls inside ETHUSDT's first event (11..20) and would bridge it.
    The books have similar prices, so a wrong snapshot is not caught by a crossed book."""
    btc = _futures_events("BTCUSDT", [(1, 10)], stream="depth@100ms")
    eth = _futures_events("ETHUSDT", [(11, 20), (21, 30), (31, 40)], stream="depth@100ms")
    btc_book = {"bids": [(100.5, 7.0)], "asks": [(101.5, 7.0)]}
    eth_book = {"bids": [(100.0, 3.0)], "asks": [(101.0, 3.0)]}
    btc_snap = _rest_snapshot(15, **btc_book, request="/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    eth_snap = _rest_snapshot(
        25, **eth_book, request="https://fapi.binance.com/fapi/v1/depth?symbol=ETHUSDT&limit=1000"
    )
    if not request_paths:
        btc_snap, eth_snap = btc_snap["data"], eth_snap["data"]
    return [btc[0], eth[0], btc_snap, eth[1], eth_snap, eth[2]]


def test_snapshot_tied_to_another_symbol_by_its_request_path_is_refused():
    messages = _recorded(_merged_futures(True))
    result = replay_messages(messages, "ETHUSDT", 0.05, market="futures_um")
    assert result.stats.snapshots_used == 1
    assert result.messages["snapshot"] == 1  # ETHUSDT's; BTCUSDT's is another symbol's message
    assert result.updates["final_update_id"].to_list() == [30, 40]
    assert result.updates["prev_final_update_id"].to_list() == [20, 30]
    ends = result.snapshots.sort("ts").tail(1)
    assert ends["bid_prices"].to_list() == [[100.0]]  # ETHUSDT's own book: no 100.5 from BTCUSDT
    assert ends["ask_prices"].to_list() == [[101.0]]


def test_bare_snapshot_in_a_recording_of_several_symbols_is_refused():
    with pytest.raises(CandlelakeError, match="2 snapshots not tied to a symbol"):
        replay_messages(_recorded(_merged_futures(False)), "ETHUSDT", market="futures_um")


def test_bare_snapshot_taken_before_another_symbol_appears_fails_the_replay():
    eth = _futures_events("ETHUSDT", [(11, 20), (21, 30)], stream="depth@100ms")
    btc = _futures_events("BTCUSDT", [(31, 40)], stream="depth@100ms")
    bare = _rest_snapshot(25, bids=[(100.0, 3.0)], asks=[(101.0, 3.0)])
    messages = _recorded([eth[0], bare, eth[1], btc[0]])
    with pytest.raises(CandlelakeError, match="BTCUSDT depth events after a snapshot"):
        replay_messages(messages, "ETHUSDT", market="futures_um")


@pytest.fixture(scope="module")
def merged_spot(shared_binance):
    """The real ~10 s spot recording of four symbols on one connection, with its four REST
    ``/depth`` bodies, as ``(ns, bare json, request-path json)`` lines in receive order."""
    rest = shared_binance / "rest"
    lines = []
    for line in (rest / "cryptofeed_BINANCE_ws_messages.txt").read_bytes().splitlines()[1:]:
        stamp, _, payload = line.partition(b": ")
        if payload:
            lines.append((int(float(stamp) * 1e9), payload, payload))
    for line in (rest / "cryptofeed_BINANCE_depth_responses.txt").read_bytes().split(b"\n"):
        if not line.strip():
            continue
        url, _, rest_of_line = line.partition(b" -> ")
        stamp, _, body = rest_of_line.partition(b": ")
        enveloped = b'{"stream":"%s","data":%s}' % (url, body)
        lines.append((int(float(stamp) * 1e9), body, enveloped))
    return sorted(lines, key=lambda line: line[0])


@pytest.mark.shared_data
def test_real_merged_recording_ties_each_snapshot_to_its_symbol(merged_spot):
    tied = [(ns, enveloped) for ns, _, enveloped in merged_spot]
    result = replay_messages(tied, "LRCBTC")
    assert result.messages["snapshot"] == 1
    assert result.stats.snapshots_used == 1
    assert result.stats.events_applied > 0
    assert result.updates["final_update_id"].min() > 259_345_543  # LRCBTC's lastUpdateId
    assert result.book_tickers.mismatched == 0
    bare = [(ns, payload) for ns, payload, _ in merged_spot]
    with pytest.raises(CandlelakeError, match="not tied to a symbol"):
        replay_messages(bare, "LRCBTC")  # NKNUSDT's bare snapshot must not start LRCBTC's book


def test_agg_trades_are_landed_and_trades_counted(tmp_path):
    trade = {"stream": "btcusdt@trade", "data": {"e": "trade", "E": T0, "s": "BTCUSDT", "t": 9}}
    messages = [
        _rest_snapshot(100, **BOOK),
        *_spot_events("BTCUSDT", 101, 2),
        _agg("BTCUSDT", 7, 100.5, 0.25, 70, 72, T0 + 5, True),
        _agg("ETHUSDT", 3, 2000.0, 1.0, 30, 30, T0 + 6, False),
        trade,
        _agg("BTCUSDT", 8, 100.75, 1.5, 73, 73, T0 + 86_400_000, False),  # the next UTC day
        _agg("BTCUSDT", 7, 100.5, 0.25, 70, 72, T0 + 5, True),  # repeated after a reconnect
    ]
    path = _write_recording(tmp_path / "btcusdt.txt", messages)
    result = replay([path], "BTCUSDT")
    assert (result.messages["agg_trade"], result.messages["trade"]) == (3, 1)
    expected = pl.DataFrame(
        {
            "agg_trade_id": [7, 8],
            "ts": [dt.datetime.fromtimestamp((T0 + d) / 1000, dt.UTC) for d in (5, 86_400_000)],
            "price": [100.5, 100.75],
            "qty": [0.25, 1.5],
            "first_trade_id": [70, 73],
            "last_trade_id": [72, 73],
            "is_buyer_maker": [True, False],
            "source": ["binance_replay"] * 2,
        },
        schema=AGG_TRADE_SCHEMA,
    )
    assert result.agg_trades.equals(expected)

    from dagster_project.backfill import replay_recordings
    from dagster_project.core.lake import Lake

    lake = Lake(tmp_path / "lake")
    replay_recordings(lake, [str(path)], "BTCUSDT")
    landed = pl.read_parquet(lake.root / "raw/agg_trades/**/*.parquet", hive_partitioning=True)
    assert landed.sort("agg_trade_id")["agg_trade_id"].to_list() == [7, 8]
    assert landed["date"].cast(pl.String).to_list() == ["2023-11-14", "2023-11-15"]


@pytest.mark.shared_data
def test_real_agg_trade_is_landed(merged_spot):
    tied = [(ns, enveloped) for ns, _, enveloped in merged_spot]
    result = replay_messages(tied, "NKNUSDT")
    assert result.messages["agg_trade"] == 1
    assert result.agg_trades.drop("source").row(0) == (
        15_683_430,
        dt.datetime(2021, 10, 12, 0, 28, 43, 963_000, tzinfo=dt.UTC),
        0.3528,
        58.0,
        19_862_790,
        19_862_790,
        False,
    )


def test_replay_depth_cli_exits_2_with_the_counts_when_nothing_is_applied(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dagster_project.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    lake = tmp_path / "lake"
    path = _write_recording(tmp_path / "btcusdt.txt", _spot_events("BTCUSDT", 101, 3))
    replay_depth = ["--lake", str(lake), "replay-depth", "--symbol", "BTCUSDT"]
    result = CliRunner().invoke(main, [*replay_depth, str(path)])
    assert result.exit_code == 2, result.output
    assert "error: no BTCUSDT depth event applied (applied 0, dropped 0, buffered 3" in (
        result.output
    )
    assert "no BTCUSDT REST /depth snapshot" in result.output
    assert not (lake / "raw").exists()  # nothing landed

    good = _write_recording(
        tmp_path / "good.txt", [_rest_snapshot(100, **BOOK), *_spot_events("BTCUSDT", 101, 3)]
    )
    result = CliRunner().invoke(main, [*replay_depth, str(good)])
    assert result.exit_code == 0, result.output
    assert "applied 3, dropped 0, buffered 0, resyncs 0" in result.output
    assert "other 0" in result.output
