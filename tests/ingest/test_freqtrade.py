"""Importing freqtrade data folders: names, formats, exact values, NULLs and errors."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from dagster_project.core.errors import (
    InvalidRequestError,
    SourceDataError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import RAW_KLINE_SCHEMA, UTC
from dagster_project.ingest.freqtrade import (
    FreqtradeFile,
    parse_freqtrade_name,
    read_freqtrade_file,
    scan_freqtrade_dir,
)

T0 = dt.datetime(2024, 1, 2, 3, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)
ROWS = [  # [epoch ms, open, high, low, close, volume], 1h apart
    [MS0, 42000.5, 42100.0, 41950.25, 42050.75, 12.5],
    [MS0 + 3_600_000, 42050.75, 42200.0, 42000.0, 42150.0, 7.25],
    [MS0 + 7_200_000, 42150.0, 42160.0, 41900.0, 41910.5, 30.0],
]
NULL_FIELDS = ("quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume")


def ohlcv_table(rows: list[list], unit: str = "ns", tz: str | None = "UTC") -> pa.Table:
    """``rows`` as freqtrade writes them to feather/parquet (pandas-style ``date`` column)."""
    dates = pa.array([r[0] for r in rows], pa.timestamp("ms", tz=tz))
    dates = dates.cast(pa.timestamp(unit, tz=tz))
    columns = {"date": dates}
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        columns[name] = pa.array([float(r[i]) for r in rows], pa.float64())
    return pa.table(columns)


def write_feather(path: Path, rows: list[list] = ROWS, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    feather.write_feather(ohlcv_table(rows, **kwargs), path, compression="zstd")
    return path


def write_json(path: Path, rows: list | object = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    return path


def write_parquet(path: Path, rows: list[list] = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["date", "open", "high", "low", "close", "volume"]
    frame = pl.DataFrame(rows, schema=names, orient="row")
    frame.with_columns(pl.from_epoch("date", "ms").dt.replace_time_zone("UTC")).write_parquet(path)
    return path


def expected_klines(rows: list[list], step: dt.timedelta) -> pl.DataFrame:
    times = [dt.datetime.fromtimestamp(r[0] / 1000, UTC) for r in rows]
    return pl.DataFrame(
        {
            "open_time": times,
            "open": [float(r[1]) for r in rows],
            "high": [float(r[2]) for r in rows],
            "low": [float(r[3]) for r in rows],
            "close": [float(r[4]) for r in rows],
            "volume": [float(r[5]) for r in rows],
            "close_time": [t + step - dt.timedelta(milliseconds=1) for t in times],
            "quote_volume": [None] * len(rows),
            "trades": [None] * len(rows),
            "taker_buy_base_volume": [None] * len(rows),
            "taker_buy_quote_volume": [None] * len(rows),
            "source": ["freqtrade"] * len(rows),
        },
        schema=RAW_KLINE_SCHEMA,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A freqtrade ``user_data/data/binance`` folder with every format and some clutter."""
    root = tmp_path / "user_data" / "data" / "binance"
    write_feather(root / "BTC_USDT-1h.feather")
    write_json(root / "ETH_USDT-1h.json")
    write_json(root / "ADA_USDT-1h.json.gz")
    write_parquet(root / "SOL_USDT-1h.parquet")
    write_feather(root / "BTC_USDT-1w.feather")
    write_feather(root / "futures" / "BTC_USDT_USDT-1h-futures.feather")
    write_feather(root / "futures" / "BTC_USDT_USDT-1h-mark.feather")
    write_feather(root / "futures" / "BTC_USDT_USDT-8h-funding_rate.feather")
    write_json(root / "BTC_USDT-trades.json.gz", [[MS0, "1", None, "buy", "limit", 1.0, 2.0, 2.0]])
    (root / "README.txt").write_text("not data")
    (root / "pairs.json").write_text('["BTC/USDT"]')
    (root / "BTC_USDT-1h.csv").write_text("date,open\n")
    (root / "backup").mkdir()
    write_feather(root / "backup" / "XRP_USDT-1h.feather")
    return root


# ── scanning ─────────────────────────────────────────────────────────────────────────────────────


def test_scan_finds_candle_files_and_ignores_the_rest(folder: Path) -> None:
    found = [(f.symbol, f.interval, f.market, f.format, f.pair) for f in scan_freqtrade_dir(folder)]
    assert found == [
        ("BTCUSDT", "1h", "futures", "feather", "BTC/USDT:USDT"),
        ("ADAUSDT", "1h", "spot", "jsongz", "ADA/USDT"),
        ("BTCUSDT", "1h", "spot", "feather", "BTC/USDT"),
        ("BTCUSDT", "1w", "spot", "feather", "BTC/USDT"),
        ("ETHUSDT", "1h", "spot", "json", "ETH/USDT"),
        ("SOLUSDT", "1h", "spot", "parquet", "SOL/USDT"),
    ]
    files = scan_freqtrade_dir(str(folder))
    assert all(f.path.is_file() for f in files)
    assert [f.supported for f in files] == [True, True, True, False, True, True]


@pytest.mark.parametrize(
    ("name", "symbol", "interval", "market", "fmt"),
    [
        ("BTC_USDT-1m.feather", "BTCUSDT", "1m", "spot", "feather"),
        ("ETH_BTC-1M.json", "ETHBTC", "1M", "spot", "json"),
        ("1000SHIB_USDT_USDT-15m-futures.feather", "1000SHIBUSDT", "15m", "futures", "feather"),
        ("DOGE_USDT-1d.json.gz", "DOGEUSDT", "1d", "spot", "jsongz"),
        ("SOL_USDT-3d.parquet", "SOLUSDT", "3d", "spot", "parquet"),
    ],
)
def test_names_are_parsed(name: str, symbol: str, interval: str, market: str, fmt: str) -> None:
    parsed = parse_freqtrade_name(Path("/data") / name)
    assert parsed is not None
    assert (parsed.symbol, parsed.interval, parsed.market, parsed.format) == (
        symbol,
        interval,
        market,
        fmt,
    )


@pytest.mark.parametrize(
    "name",
    [
        "BTC_USDT-trades.feather",
        "BTC_USDT_USDT-1h-mark.feather",
        "BTC_USDT-1h.csv",
        "BTCUSDT-1h.feather",
        "btc_usdt-1h.feather",
        "BTC_USDT_USDT-1h.feather",
        "BTC_USDT-1h.feather.bak",
    ],
)
def test_other_names_are_not_candle_files(name: str) -> None:
    assert parse_freqtrade_name(name) is None


def test_missing_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InvalidRequestError, match=f"'{missing}' does not exist"):
        scan_freqtrade_dir(missing)


def test_folder_without_candle_files_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "BTC_USDT-trades.json.gz").write_bytes(b"")
    with pytest.raises(InvalidRequestError, match=f"'{tmp_path}' holds no freqtrade candle files"):
        scan_freqtrade_dir(tmp_path)


# ── reading: exact values in every format ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "name",
    ["BTC_USDT-1h.feather", "ETH_USDT-1h.json", "ADA_USDT-1h.json.gz", "SOL_USDT-1h.parquet"],
)
def test_every_format_reads_exactly(folder: Path, name: str) -> None:
    frame = read_freqtrade_file(parse_freqtrade_name(folder / name))
    assert frame.equals(expected_klines(ROWS, dt.timedelta(hours=1)))
    assert frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert frame.select(NULL_FIELDS).null_count().row(0) == (3, 3, 3, 3)


def test_futures_files_read_like_spot(folder: Path) -> None:
    file = next(f for f in scan_freqtrade_dir(folder) if f.market == "futures")
    assert read_freqtrade_file(file).equals(expected_klines(ROWS, dt.timedelta(hours=1)))


def test_a_path_can_be_read_directly_and_rows_come_sorted(tmp_path: Path) -> None:
    shuffled = [ROWS[2], ROWS[0], ROWS[1]]
    path = write_json(tmp_path / "BNB_USDT-1h.json", shuffled)
    assert read_freqtrade_file(path).equals(expected_klines(ROWS, dt.timedelta(hours=1)))
    assert read_freqtrade_file(str(path))["open_time"].is_sorted()


@pytest.mark.parametrize(("unit", "tz"), [("ms", "UTC"), ("us", None), ("s", "Europe/Berlin")])
def test_any_timestamp_unit_and_zone_becomes_utc_microseconds(
    tmp_path: Path, unit: str, tz: str | None
) -> None:
    path = write_feather(tmp_path / "BTC_USDT-1h.feather", unit=unit, tz=tz)
    frame = read_freqtrade_file(path)
    assert (
        frame["open_time"].to_list()
        == expected_klines(ROWS, dt.timedelta(hours=1))["open_time"].to_list()
    )


def test_close_time_follows_the_interval(tmp_path: Path) -> None:
    rows = [[MS0 + i * 300_000, 1.0, 2.0, 0.5, 1.5, 3.0] for i in range(4)]
    frame = read_freqtrade_file(write_json(tmp_path / "XRP_USDT-5m.json", rows))
    assert frame.equals(expected_klines(rows, dt.timedelta(minutes=5)))
    assert frame["close_time"][0] == T0 + dt.timedelta(minutes=5) - dt.timedelta(milliseconds=1)


def test_an_empty_file_gives_no_rows(tmp_path: Path) -> None:
    frame = read_freqtrade_file(write_json(tmp_path / "BTC_USDT-1m.json", []))
    assert frame.height == 0 and frame.schema == pl.Schema(RAW_KLINE_SCHEMA)


# ── reading: errors name the file ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", ["BTC_USDT-1w.feather", "BTC_USDT-3d.json", "BTC_USDT-1M.parquet"])
def test_unsupported_timeframe_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"never read")
    with pytest.raises(UnsupportedIntervalError, match=f"{path}: timeframe") as caught:
        read_freqtrade_file(path)
    assert name.split("-")[1].split(".")[0] in str(caught.value)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1h.feather"
    feather.write_feather(ohlcv_table(ROWS).drop_columns(["volume"]), path)
    with pytest.raises(SourceDataError, match=rf"{path}: lacks columns \['volume'\]") as caught:
        read_freqtrade_file(path)
    assert "date, open, high, low, close, volume" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("BTC_USDT-1h.feather", b"this is not arrow"),
        ("BTC_USDT-1h.parquet", b"PAR1 truncated"),
        ("BTC_USDT-1h.json", b"[[1704164400000, 1.0, 2.0"),
        ("BTC_USDT-1h.json.gz", b"not gzip at all"),
    ],
)
def test_unreadable_content_is_named(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceDataError, match=f"{path}: cannot read it as freqtrade"):
        read_freqtrade_file(path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"date": [1]}, "holds a JSON dict"),
        ([[MS0, 1.0, 2.0, 0.5, 1.5]], r"row 0 is .*; expected \[epoch ms"),
        ([[MS0, "abc", 2.0, 0.5, 1.5, 3.0]], "not a number"),
    ],
)
def test_malformed_json_rows_are_named(tmp_path: Path, rows: object, message: str) -> None:
    path = write_json(tmp_path / "BTC_USDT-1h.json", rows)
    with pytest.raises(SourceDataError, match=message) as caught:
        read_freqtrade_file(path)
    assert str(path) in str(caught.value)


def test_dates_off_the_timeframe_grid_are_refused(tmp_path: Path) -> None:
    path = write_json(tmp_path / "BTC_USDT-4h.json", ROWS)  # the rows are 1h apart
    with pytest.raises(SourceDataError, match=f"{path}: date .* is not on the 4h grid"):
        read_freqtrade_file(path)


def test_a_file_not_named_like_freqtrade_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="not named like a freqtrade candle file"):
        read_freqtrade_file(tmp_path / "candles.csv")


def test_freqtrade_file_can_be_built_by_hand(tmp_path: Path) -> None:
    path = write_feather(tmp_path / "whatever.feather")
    file = FreqtradeFile(path, "BTCUSDT", "1h", "spot", "feather", "BTC/USDT")
    assert read_freqtrade_file(file).height == 3


# ── the real freqtrade files in ../shared ───────────────────────────────────────────────────────


@pytest.mark.shared_data
def test_real_folder_scans(shared_binance: Path) -> None:
    files = scan_freqtrade_dir(shared_binance / "spot_freqtrade")
    assert {(f.symbol, f.interval) for f in files} >= {
        ("BTCUSDT", "1h"),
        ("ETHUSDT", "1h"),
        ("BTCUSDT", "1m"),
        ("SOLUSDT", "15m"),
    }
    assert {f.market for f in files} == {"spot"} and {f.format for f in files} == {"feather"}


@pytest.mark.shared_data
def test_real_1h_file_keeps_the_exchange_halt_as_a_gap(shared_binance: Path) -> None:
    frame = read_freqtrade_file(shared_binance / "spot_freqtrade" / "BTC_USDT-1h.feather")
    assert frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert frame.row(0) == (
        dt.datetime(2023, 1, 1, tzinfo=UTC),
        16541.77,
        16545.7,
        16508.39,
        16529.67,
        4364.8357,
        dt.datetime(2023, 1, 1, 0, 59, 59, 999000, tzinfo=UTC),
        None,
        None,
        None,
        None,
        "freqtrade",
    )
    times = set(frame["open_time"].to_list())
    halt = dt.datetime(2023, 3, 24, 13, tzinfo=UTC)
    assert halt not in times
    assert halt - dt.timedelta(hours=1) in times and halt + dt.timedelta(hours=1) in times
    steps = frame["open_time"].diff().drop_nulls()
    assert steps.filter(steps != dt.timedelta(hours=1)).to_list() == [dt.timedelta(hours=2)]
    assert frame.select(NULL_FIELDS).null_count().row(0) == (frame.height,) * 4


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "rows"), [("BTC_USDT-1m", 43_199), ("ETH_USDT-15m", 26_400)])
def test_real_file_row_counts(shared_binance: Path, name: str, rows: int) -> None:
    frame = read_freqtrade_file(shared_binance / "spot_freqtrade" / f"{name}.feather")
    assert frame.height == rows
    assert frame["open_time"].is_sorted() and frame["open_time"].n_unique() == rows
    assert (frame["low"] <= frame["high"]).all()
