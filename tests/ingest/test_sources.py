"""The kline sources behind ``make_source``: symbols are checked before anything lands, and every
source closes a bar at the same instant."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from dagster_project.core.errors import InvalidRequestError, UnknownSymbolError
from dagster_project.core.klines import UTC, TimeRange
from dagster_project.ingest.sources import SourceSettings, make_source
from tests.fakes.binance_server import FakeBinance, synthetic_kline_rows
from tests.fakes.vision_server import VisionServer, build_vision_tree, synthetic_kline_csv

DAY = dt.date(2025, 1, 2)  # Binance Vision spot files carry microseconds from 2025 on
START = dt.datetime(2025, 1, 2, tzinfo=UTC)


def write_freqtrade_file(folder: Path, pair: str, rows: int = 3) -> Path:
    """A freqtrade ``json`` candle file: ``[epoch ms, open, high, low, close, volume]`` rows."""
    first_ms = int(START.timestamp() * 1000)
    candles = [[first_ms + i * 60_000, 1.0, 1.5, 0.5, 1.2, 10.0] for i in range(rows)]
    path = folder / f"{pair}-1m.json"
    path.write_text(json.dumps(candles))
    return path


def test_simulator_accepts_any_well_formed_symbol_and_names_every_malformed_one(tmp_path):
    source = make_source(SourceSettings(kind="simulator"), tmp_path)
    source.check_symbols(["BTCUSDT", "FOOUSDT"])
    with pytest.raises(InvalidRequestError) as raised:
        source.check_symbols(["BTCUSDT", "btc-usdt", "X"])
    message = str(raised.value)
    assert "'btc-usdt', 'X'" in message and "'BTCUSDT'" not in message


def test_freqtrade_symbol_without_a_file_is_unknown_and_every_one_is_named(tmp_path):
    folder = tmp_path / "binance"
    folder.mkdir()
    write_freqtrade_file(folder, "BTC_USDT")
    source = make_source(SourceSettings(kind="freqtrade", freqtrade_dir=str(folder)), tmp_path)
    source.check_symbols(["BTCUSDT"])
    with pytest.raises(UnknownSymbolError) as raised:
        source.check_symbols(["BTCUSDT", "DOTUSDT", "FOOUSDT"])
    message = str(raised.value)
    assert f"{folder} holds no freqtrade file for DOTUSDT, FOOUSDT" in message
    assert "it has ['BTCUSDT']" in message


def test_rest_and_vision_sources_refuse_unknown_symbols_before_any_data_is_fetched(tmp_path):
    rows = {("BTCUSDT", "1m"): synthetic_kline_rows("BTCUSDT", "1m", START, 5)}
    tree = tmp_path / "vision"
    build_vision_tree(tree, {"data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-02.csv": b""})
    with FakeBinance(rows) as rest, VisionServer(tree) as vision:
        sources = [
            make_source(SourceSettings(kind="binance", rest_base_url=rest.url), tmp_path),
            make_source(SourceSettings(kind="vision", vision_base_url=vision.url), tmp_path),
        ]
        for source in sources:
            source.check_symbols(["BTCUSDT"])
            with pytest.raises(UnknownSymbolError, match=r"DOTUSDT, FOOUSDT"):
                source.check_symbols(["DOTUSDT", "BTCUSDT", "FOOUSDT"])
        assert {r.path for r in rest.requests} == {"/api/v3/exchangeInfo"}
        assert {r.path for r in vision.requests} == {""}  # bucket listings only


def test_every_source_closes_a_bar_at_open_plus_interval_minus_one_millisecond(tmp_path):
    """One convention, Binance's documented one, whatever the source writes (Vision spot files
    from 2025 write ...59.999999 in microseconds)."""
    folder = tmp_path / "freqtrade"
    folder.mkdir()
    write_freqtrade_file(folder, "BTC_USDT", rows=60)
    tree = tmp_path / "vision"
    build_vision_tree(tree, {
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-02.csv":
            synthetic_kline_csv(START, 60, microseconds=True),
    })  # fmt: skip
    rows = {("BTCUSDT", "1m"): synthetic_kline_rows("BTCUSDT", "1m", START, 60)}
    window = TimeRange(START, START + dt.timedelta(hours=1))
    bar = dt.timedelta(minutes=1) - dt.timedelta(milliseconds=1)
    with FakeBinance(rows) as rest, VisionServer(tree) as vision:
        settings = {
            "simulator": SourceSettings(kind="simulator"),
            "freqtrade": SourceSettings(kind="freqtrade", freqtrade_dir=str(folder)),
            "binance": SourceSettings(kind="binance", rest_base_url=rest.url),
            "vision": SourceSettings(kind="vision", vision_base_url=vision.url),
        }
        for kind, setting in settings.items():
            frame = make_source(setting, tmp_path).fetch_klines("BTCUSDT", "1m", window)
            assert frame.height == 60, kind
            closes = (frame["close_time"] - frame["open_time"]).unique().to_list()
            assert closes == [bar], kind
