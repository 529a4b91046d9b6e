"""Binance Vision archives: plan, download (resumable, verified, cached), parse — always through a
local server laid out like data.binance.vision."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import logging
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import httpx
import polars as pl
import pytest

from dagster_project.core.errors import (
    BinanceAPIError,
    ChecksumMismatchError,
    InvalidRequestError,
    SourceDataError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import RAW_KLINE_SCHEMA, UTC, TimeRange
from dagster_project.core.schemas import AGG_TRADE_SCHEMA
from dagster_project.ingest.binance_rest import agg_trades_from_binance_rows
from dagster_project.ingest.binance_vision import (
    VisionArchive,
    VisionClient,
    VisionConfig,
    fetch_agg_trades,
    fetch_klines,
    plan_agg_trade_archives,
    plan_archives,
    read_agg_trades_csv,
    read_agg_trades_zip,
    read_vision_csv,
    read_vision_zip,
)
from tests.fakes.vision_server import (
    VisionServer,
    build_vision_tree,
    synthetic_agg_trades_csv,
    synthetic_kline_csv,
    vision_zip_bytes,
)

FIL_APRIL = "data/futures/um/monthly/klines/FILUSDT/1m/FILUSDT-1m-2023-04.zip"
ADA_DAILY = "data/spot/daily/klines/ADABTC/1m/ADABTC-1m-{}.zip"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def spot_daily(symbol: str, day: str, interval: str = "1m") -> str:
    return f"data/spot/daily/klines/{symbol}/{interval}/{symbol}-{interval}-{day}.zip"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return tmp_path / "vision"


@pytest.fixture
def server(tree: Path):
    tree.mkdir(parents=True, exist_ok=True)
    with VisionServer(tree) as running:
        yield running


@pytest.fixture
def config(server: VisionServer, tmp_path: Path) -> VisionConfig:
    return VisionConfig(
        base_url=server.base_url,
        cache_dir=tmp_path / "cache",
        timeout_s=5,
        max_retries=3,
        backoff_s=0.01,
        backoff_max_s=0.05,
    )


def publish_day(tree: Path, symbol: str, day: dt.date, rows: int = 1440, **kw) -> Path:
    csv = synthetic_kline_csv(utc(day.year, day.month, day.day), rows, seed=day.toordinal(), **kw)
    return build_vision_tree(tree, {spot_daily(symbol, day.isoformat()): csv})[
        spot_daily(symbol, day.isoformat())
    ]


# -- real data ------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_futures_month_is_fetched_verified_and_parsed(shared_binance, tree, server, config):
    csv = gzip.decompress(
        (shared_binance / "vision_futures_um_1m/FILUSDT-1m-2023-04.csv.gz").read_bytes()
    )
    build_vision_tree(tree, {FIL_APRIL: csv})
    cfg = dataclasses.replace(config, market="futures_um")

    frame = fetch_klines("FILUSDT", "1m", TimeRange(utc(2023, 4, 1), utc(2023, 5, 1)), cfg)

    assert frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert frame.height == 43_200
    lines = csv.decode().splitlines()
    assert lines[0].startswith("open_time,")
    # first line: 1680307200000,5.685,5.695,5.684,5.692,28753.6,1680307259999,163610.5208,335,...
    assert frame.row(0) == _expected_row(lines[1])
    assert frame.row(-1) == _expected_row(lines[-1])
    assert frame["open_time"][0] == utc(2023, 4, 1)
    assert frame["open_time"][-1] == utc(2023, 4, 30, 23, 59)
    assert frame["open_time"].is_sorted() and frame["open_time"].n_unique() == 43_200
    assert frame["source"].unique().to_list() == ["binance_vision"]
    assert [r.path for r in server.requests] == [FIL_APRIL + ".CHECKSUM", FIL_APRIL]
    assert (config.cache_dir / FIL_APRIL).exists()


@pytest.mark.shared_data
def test_real_spot_daily_files_without_header_parse_exactly(shared_binance, tree, server, config):
    days = ["2021-11-27", "2021-11-28"]
    raw = {d: (shared_binance / f"vision_spot_daily/ADABTC-1m-{d}.csv").read_bytes() for d in days}
    build_vision_tree(tree, {ADA_DAILY.format(d): raw[d] for d in days})

    frame = fetch_klines(
        "ADABTC", "1m", TimeRange(utc(2021, 11, 27), utc(2021, 11, 29)), config,
        today=dt.date(2021, 12, 15),
    )  # fmt: skip

    lines = {d: raw[d].decode().splitlines() for d in days}
    assert [len(lines[d]) for d in days] == [10, 11]
    assert frame.height == 21
    first_lines = [lines[d][0] for d in days]
    assert first_lines[0].startswith("1637971200000,0.00002853,")  # no header in spot files
    assert frame.row(0) == _expected_row(first_lines[0])
    assert frame.row(10) == _expected_row(first_lines[1])
    assert frame.row(-1) == _expected_row(lines[days[1]][-1])
    assert frame.row(0)[:5] == (utc(2021, 11, 27), 0.00002853, 0.00002854, 0.00002851, 0.00002854)
    direct = read_vision_csv(shared_binance / "vision_spot_daily/ADABTC-1m-2021-11-27.csv")
    assert direct.equals(frame.head(10))


def _expected_row(line: str) -> tuple:
    f = line.split(",")
    as_time = lambda ms: dt.datetime.fromtimestamp(int(ms) / 1000, UTC)  # noqa: E731
    return (
        as_time(f[0]), *map(float, f[1:6]), as_time(f[6]), float(f[7]), int(f[8]),
        float(f[9]), float(f[10]), "binance_vision",
    )  # fmt: skip


# -- parsing --------------------------------------------------------------------------------------


def test_microsecond_spot_file_gives_the_same_rows_as_milliseconds():
    start = utc(2025, 1, 1)
    ms_csv = synthetic_kline_csv(start, 50)
    us_csv = synthetic_kline_csv(start, 50, microseconds=True)
    assert us_csv.split(b",")[6] == b"1735689659999999"  # close time as Binance writes it in µs
    in_ms, in_us = read_vision_csv(ms_csv, "ms.csv"), read_vision_csv(us_csv, "us.csv")
    assert in_us.equals(in_ms)
    assert in_us["open_time"][0] == start
    assert in_us["close_time"][0] == utc(2025, 1, 1, 0, 0, 59, 999_000)


def test_microsecond_close_times_follow_the_millisecond_convention_of_every_source():
    # The row Binance documents for spot from 2025-01-01 (binance-public-data README): µs files
    # close a bar at open + interval - 1 µs, where REST (and the docs) say open + interval - 1 ms.
    line = b"1735689600000000,4.15070000,4.15870000,4.15060000,4.15540000,539.23000000,"
    line += b"1735693199999999,2240.39860900,13,401.82000000,1669.98121300,0\n"
    frame = read_vision_csv(line, "BNBUSDT-1h-2025-01-01.csv")
    assert frame["open_time"][0] == utc(2025, 1, 1)
    assert frame["close_time"][0] == utc(2025, 1, 1, 0, 59, 59, 999_000)


def test_header_and_no_header_parse_the_same():
    start = utc(2023, 6, 1)
    with_header = synthetic_kline_csv(start, 30, header=True)
    assert with_header.startswith(b"open_time,open,high")
    plain = read_vision_csv(synthetic_kline_csv(start, 30), "plain.csv")
    assert read_vision_csv(with_header, "header.csv").equals(plain)
    assert plain.height == 30 and plain.schema == pl.Schema(RAW_KLINE_SCHEMA)


def test_csv_from_a_path_and_crlf_line_endings(tmp_path):
    csv = synthetic_kline_csv(utc(2023, 6, 1), 5)
    path = tmp_path / "X-1m-2023-06-01.csv"
    path.write_bytes(csv.replace(b"\n", b"\r\n"))
    assert read_vision_csv(path).equals(read_vision_csv(csv))
    assert read_vision_csv(b"", "empty.csv").schema == pl.Schema(RAW_KLINE_SCHEMA)


@pytest.mark.parametrize(
    ("header", "bad_line", "expected"),
    [
        (False, "1686182400000,abc,1,1,1,1,1686182459999,1,1,1,1,0", "open is 'abc'"),
        (True, "1686182400000,1,1,1,1,1,1686182459999,1,1,1", "10 fields"),
        (False, "1686182400000,1,1,1,1,1,1686182459999,1,1,1,1,0,7", "13 fields"),
        (False, "1686182400000,1,1,1,,1,1686182459999,1,1,1,1,0", "close is ''"),
        (True, "1686182400000,1,1,1,1,1,1686182459999,1,2.5,1,1,0", "trades is '2.5'"),
        (False, "1686182400000,1,nan,1,1,1,1686182459999,1,1,1,1,0", "not a finite number"),
    ],
)
def test_malformed_row_names_file_line_and_content(header, bad_line, expected):
    lines = synthetic_kline_csv(utc(2023, 6, 8), 6, header=header).decode().splitlines()
    lines.insert(4, bad_line)  # physical line 5
    with pytest.raises(SourceDataError) as error:
        read_vision_csv(("\n".join(lines) + "\n").encode(), "XUSDT-1m-2023-06-08.csv")
    message = str(error.value)
    assert "XUSDT-1m-2023-06-08.csv, line 5" in message
    assert expected in message and bad_line[:30] in message


def test_blank_lines_hold_no_rows():
    csv = synthetic_kline_csv(utc(2023, 6, 8), 4)
    assert read_vision_csv(csv.replace(b"\n", b"\n\n", 1) + b"\n", "x.csv").height == 4


def test_truncated_zip_names_the_file(tmp_path):
    whole = vision_zip_bytes("X-1m-2023-06-08.csv", synthetic_kline_csv(utc(2023, 6, 8), 500))
    path = tmp_path / "X-1m-2023-06-08.zip"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SourceDataError, match=r"X-1m-2023-06-08\.zip is truncated or corrupt"):
        read_vision_zip(path)


def test_zip_with_a_corrupt_member_names_the_file(tmp_path):
    whole = bytearray(vision_zip_bytes("X.csv", synthetic_kline_csv(utc(2023, 6, 8), 500)))
    whole[100:110] = b"\x00" * 10  # inside the deflated data: CRC or inflate error
    path = tmp_path / "X-1m-2023-06-08.zip"
    path.write_bytes(bytes(whole))
    with pytest.raises(SourceDataError, match="truncated or corrupt"):
        read_vision_zip(path)


def test_zip_must_hold_exactly_one_csv(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", "1")
        archive.writestr("b.csv", "2")
    with pytest.raises(SourceDataError, match=r"two\.zip holds \['a\.csv', 'b\.csv'\]"):
        read_vision_zip(path)


# -- planning -------------------------------------------------------------------------------------


def _plan(start, end, today, **kw) -> list[tuple[str, str]]:
    archives = plan_archives("btcusdt", "1m", TimeRange(start, end), today, **kw)
    return [(a.period, a.day.isoformat()) for a in archives]


def test_plan_uses_monthly_archives_for_whole_past_months_and_daily_for_the_rest():
    plan = _plan(utc(2023, 3, 30, 12), utc(2023, 6, 2, 6), dt.date(2023, 7, 10))
    assert plan == [
        ("daily", "2023-03-30"), ("daily", "2023-03-31"),
        ("monthly", "2023-04-01"), ("monthly", "2023-05-01"),
        ("daily", "2023-06-01"), ("daily", "2023-06-02"),
    ]  # fmt: skip


def test_plan_current_month_and_today_are_daily_and_unpublished_days_left_out():
    # June ended before July (today's month): monthly; July so far: daily up to yesterday.
    plan = _plan(utc(2023, 6, 1), utc(2023, 7, 5, 12), dt.date(2023, 7, 5))
    assert plan == [("monthly", "2023-06-01")] + [("daily", f"2023-07-0{d}") for d in range(1, 5)]
    # A whole month that is still the current month has no monthly archive yet.
    plan = _plan(utc(2023, 7, 1), utc(2023, 8, 1), dt.date(2023, 7, 31))
    assert plan == [("daily", f"2023-07-{d:02d}") for d in range(1, 31)]


def test_plan_paths_match_binance_layout():
    window, today = TimeRange(utc(2024, 1, 1), utc(2024, 2, 2)), dt.date(2024, 3, 1)
    spot = plan_archives("BTCUSDT", "1h", window, today, market="spot")
    futures = plan_archives("BTCUSDT", "1h", window, today, market="futures_um")
    assert spot[0].url("https://data.binance.vision") == (
        "https://data.binance.vision/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip"
    )
    assert futures[1].path == "data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02-01.zip"
    assert len(spot[0].days()) == 31 and spot[0].days()[-1].name == "BTCUSDT-1h-2024-01-31.zip"


def test_plan_rejects_bad_requests():
    window = TimeRange(utc(2024, 1, 1), utc(2024, 1, 2))
    with pytest.raises(UnsupportedIntervalError, match="'1w'"):
        plan_archives("BTCUSDT", "1w", window)
    with pytest.raises(InvalidRequestError, match=r"'BTC/USDT'"):
        plan_archives("BTC/USDT", "1m", window)
    with pytest.raises(InvalidRequestError, match="'futures_cm'"):
        VisionConfig(market="futures_cm")


# -- downloading ----------------------------------------------------------------------------------


def test_fetch_filters_to_the_half_open_range(tree, server, config):
    for day in (dt.date(2024, 3, 4), dt.date(2024, 3, 5)):
        publish_day(tree, "ETHUSDT", day)
    window = TimeRange(utc(2024, 3, 4, 22, 30), utc(2024, 3, 5, 1))
    frame = fetch_klines("ETHUSDT", "1m", window, config, today=dt.date(2024, 4, 1))
    assert frame.height == 150
    assert frame["open_time"][0] == window.start
    assert frame["open_time"][-1] == utc(2024, 3, 5, 0, 59)


def test_missing_monthly_archive_falls_back_to_daily_and_missing_days_are_skipped(
    tree, server, config, caplog
):
    days = [dt.date(2024, 2, d) for d in range(1, 30) if d != 14]  # no file for 2024-02-14
    for day in days:
        publish_day(tree, "SOLUSDT", day, rows=3)
    caplog.set_level(logging.INFO, logger="dagster_project.ingest.binance_vision")

    frame = fetch_klines(
        "SOLUSDT", "1m", TimeRange(utc(2024, 2, 1), utc(2024, 3, 1)), config,
        today=dt.date(2024, 4, 1),
    )  # fmt: skip

    assert frame.height == 3 * len(days)
    assert sorted(set(frame["open_time"].dt.date().to_list())) == days
    monthly = server.requests_for("SOLUSDT-1m-2024-02.zip.CHECKSUM")
    assert [r.status for r in monthly] == [404]
    assert [r.status for r in server.requests_for("SOLUSDT-1m-2024-02-14.zip.CHECKSUM")] == [404]
    assert "SOLUSDT-1m-2024-02.zip is not published (HTTP 404)" in caplog.text
    assert "no SOLUSDT 1m data for 2024-02-14" in caplog.text


def test_interrupted_download_resumes_with_a_range_request(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 6))
    size = zip_path.stat().st_size
    server.cut_after(zip_path.name, 20_000)

    with VisionClient(config) as client:
        frame = client.fetch_klines(
            "BTCUSDT", "1m", TimeRange.for_day("2024-05-06"), today=dt.date(2024, 6, 1)
        )
        assert client.stats.files_downloaded == 1
        assert client.stats.bytes_downloaded == size

    assert frame.height == 1440
    gets = server.requests_for(zip_path.name)
    assert [(r.range, r.status, r.bytes_sent) for r in gets] == [
        (None, 200, 20_000),
        ("bytes=20000-", 206, size - 20_000),
    ]
    cached = config.cache_dir / spot_daily("BTCUSDT", "2024-05-06")
    assert cached.read_bytes() == zip_path.read_bytes()
    assert not cached.with_name(cached.name + ".part").exists()


def test_part_file_left_by_an_earlier_run_is_resumed(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 7))
    archive = VisionArchive("spot", "BTCUSDT", "1m", "daily", dt.date(2024, 5, 7))
    part = config.cache_dir / (archive.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(zip_path.read_bytes()[:12_345])

    with VisionClient(config) as client:
        assert client.download(archive) == config.cache_dir / archive.path
    assert [r.range for r in server.requests_for(archive.name)] == ["bytes=12345-"]
    assert [r.status for r in server.requests_for(archive.name)] == [206]


def test_server_ignoring_range_gets_a_fresh_download(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 8))
    archive = VisionArchive("spot", "BTCUSDT", "1m", "daily", dt.date(2024, 5, 8))
    part = config.cache_dir / (archive.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from an older upload")
    server.ignore_range(archive.name)

    with VisionClient(config) as client:
        path = client.download(archive)
    assert path.read_bytes() == zip_path.read_bytes()
    assert [(r.range, r.status) for r in server.requests_for(archive.name)] == [("bytes=32-", 200)]


def test_resumed_download_that_fails_its_checksum_is_restarted_once(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 9))
    archive = VisionArchive("spot", "BTCUSDT", "1m", "daily", dt.date(2024, 5, 9))
    part = config.cache_dir / (archive.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # a prefix of some other file

    with VisionClient(config) as client:
        assert client.download(archive).read_bytes() == zip_path.read_bytes()
    assert [r.range for r in server.requests_for(archive.name)] == ["bytes=1000-", None]


def test_verified_archive_in_the_cache_is_not_downloaded_again(tree, server, config):
    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 10))
    window = TimeRange.for_day("2024-05-10")
    first = fetch_klines("BTCUSDT", "1m", window, config, today=dt.date(2024, 6, 1))
    assert len(server.requests) == 2  # CHECKSUM and zip
    server.clear()

    with VisionClient(config) as client:
        second = client.fetch_klines("BTCUSDT", "1m", window, today=dt.date(2024, 6, 1))
        assert (client.stats.files_reused, client.stats.files_downloaded) == (1, 0)
    assert server.requests == []
    assert second.equals(first)
    cached = config.cache_dir / spot_daily("BTCUSDT", "2024-05-10")
    assert cached.with_name(cached.name + ".CHECKSUM").exists()


def test_checksum_mismatch_raises_and_leaves_nothing_under_the_final_name(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 11))
    server.wrong_checksum(zip_path.name)

    with pytest.raises(ChecksumMismatchError) as error:
        fetch_klines(
            "BTCUSDT", "1m", TimeRange.for_day("2024-05-11"), config, today=dt.date(2024, 6, 1)
        )
    actual = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    wrong = hashlib.sha256(b"not the archive").hexdigest()
    message = str(error.value)
    assert zip_path.name in message and actual in message and wrong in message
    cached = config.cache_dir / spot_daily("BTCUSDT", "2024-05-11")
    assert list(cached.parent.glob("*.zip*")) == []


def test_published_truncated_zip_raises_source_data_error(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 12))
    zip_path.write_bytes(zip_path.read_bytes()[:5000])
    build_checksum = hashlib.sha256(zip_path.read_bytes()).hexdigest()  # Binance published it so
    zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(
        f"{build_checksum}  {zip_path.name}\n"
    )

    with pytest.raises(
        SourceDataError, match=r"BTCUSDT-1m-2024-05-12\.zip is truncated or corrupt"
    ):
        fetch_klines(
            "BTCUSDT", "1m", TimeRange.for_day("2024-05-12"), config, today=dt.date(2024, 6, 1)
        )


def test_cached_archive_that_does_not_parse_is_dropped_and_fetched_again(
    tree, server, config, caplog
):
    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 12))
    window, today = TimeRange.for_day("2024-05-12"), dt.date(2024, 6, 1)
    good = fetch_klines("BTCUSDT", "1m", window, config, today=today)
    cached = config.cache_dir / spot_daily("BTCUSDT", "2024-05-12")
    cached.write_bytes(cached.read_bytes()[:5000])  # damaged on disk after it was verified
    server.clear()
    caplog.set_level(logging.WARNING, logger="dagster_project.ingest.binance_vision")

    again = fetch_klines("BTCUSDT", "1m", window, config, today=today)

    assert again.equals(good)
    assert [r.path.rsplit("/", 1)[-1] for r in server.requests] == [
        "BTCUSDT-1m-2024-05-12.zip.CHECKSUM",
        "BTCUSDT-1m-2024-05-12.zip",
    ]
    assert f"cached {cached} does not parse" in caplog.text
    assert "dropped it from the cache and downloading it again" in caplog.text


def publish_broken_but_checksummed(tree: Path, day: dt.date) -> Path:
    """A zip cut short whose published CHECKSUM is of the cut bytes (it passes verification)."""
    zip_path = publish_day(tree, "BTCUSDT", day)
    zip_path.write_bytes(zip_path.read_bytes()[:5000])
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(f"{digest}  {zip_path.name}\n")
    return zip_path


def test_published_archive_that_does_not_parse_is_not_kept_and_a_fixed_one_is_fetched(
    tree, server, config
):
    zip_path = publish_broken_but_checksummed(tree, dt.date(2024, 5, 12))
    window, today = TimeRange.for_day("2024-05-12"), dt.date(2024, 6, 1)
    cached = config.cache_dir / spot_daily("BTCUSDT", "2024-05-12")

    with pytest.raises(SourceDataError) as raised:
        fetch_klines("BTCUSDT", "1m", window, config, today=today)
    message = str(raised.value)
    assert "BTCUSDT-1m-2024-05-12.zip is truncated or corrupt" in message
    assert f"{server.base_url}/{spot_daily('BTCUSDT', '2024-05-12')}" in message
    assert "matches its published checksum" in message
    assert f"dropped {cached} from the cache" in message
    assert list(cached.parent.glob("*.zip*")) == []

    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 12))  # Binance republishes a good archive
    server.clear()
    frame = fetch_klines("BTCUSDT", "1m", window, config, today=today)
    assert frame.height == 1440
    assert [r.path.rsplit("/", 1)[-1] for r in server.requests] == [
        zip_path.name + ".CHECKSUM",
        zip_path.name,
    ]


def test_cached_archive_whose_fresh_copy_does_not_parse_either_says_both(tree, server, config):
    day, window, today = dt.date(2024, 5, 12), TimeRange.for_day("2024-05-12"), dt.date(2024, 6, 1)
    publish_day(tree, "BTCUSDT", day)
    fetch_klines("BTCUSDT", "1m", window, config, today=today)
    cached = config.cache_dir / spot_daily("BTCUSDT", "2024-05-12")
    cached.write_bytes(cached.read_bytes()[:4000])
    publish_broken_but_checksummed(tree, day)

    with pytest.raises(SourceDataError) as raised:
        fetch_klines("BTCUSDT", "1m", window, config, today=today)
    message = str(raised.value)
    assert f"the cached copy did not parse, so {cached} was downloaded again" in message
    assert "matches its published checksum and does not parse either" in message
    assert list(cached.parent.glob("*.zip*")) == []


def test_server_errors_are_retried_then_succeed(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 13))
    server.fail(zip_path.name, 500, times=2)
    server.fail(zip_path.name + ".CHECKSUM", 503, times=1)

    frame = fetch_klines(
        "BTCUSDT", "1m", TimeRange.for_day("2024-05-13"), config, today=dt.date(2024, 6, 1)
    )
    assert frame.height == 1440
    assert [r.status for r in server.requests_for(zip_path.name)] == [500, 500, 200]
    assert [r.status for r in server.requests_for(zip_path.name + ".CHECKSUM")] == [503, 200]


def test_persistent_server_errors_give_up_after_max_retries(tree, server, config):
    zip_path = publish_day(tree, "BTCUSDT", dt.date(2024, 5, 14))
    server.fail(zip_path.name, 502, times=None)
    with pytest.raises(BinanceAPIError, match=r"failed after 4 attempt\(s\): .*HTTP 502"):
        fetch_klines(
            "BTCUSDT", "1m", TimeRange.for_day("2024-05-14"), config, today=dt.date(2024, 6, 1)
        )
    assert len(server.requests_for(zip_path.name)) == 4


def test_without_checksum_verification_only_the_zip_is_fetched(tree, server, config):
    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 15))
    cfg = dataclasses.replace(config, verify_checksum=False)
    frame = fetch_klines(
        "BTCUSDT", "1m", TimeRange.for_day("2024-05-15"), cfg, today=dt.date(2024, 6, 1)
    )
    assert frame.height == 1440
    assert [r.path.rsplit("/", 1)[-1] for r in server.requests] == ["BTCUSDT-1m-2024-05-15.zip"]


def test_microsecond_archive_through_the_server_matches_milliseconds(tree, server, config):
    day = dt.date(2025, 1, 2)
    publish_day(tree, "BTCUSDT", day, rows=60, microseconds=True)
    frame = fetch_klines("BTCUSDT", "1m", TimeRange.for_day(day), config, today=dt.date(2025, 2, 1))
    in_ms = read_vision_csv(synthetic_kline_csv(utc(2025, 1, 2), 60, seed=day.toordinal()))
    assert frame.equals(in_ms)
    bar = frame["close_time"] - frame["open_time"]
    assert bar.unique().to_list() == [dt.timedelta(minutes=1) - dt.timedelta(milliseconds=1)]


# -- unknown symbols: Binance's bucket listing ---------------------------------------------------


def test_check_symbols_names_every_unknown_symbol_and_the_listing_it_checked(
    tree, server, config
):
    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 10))
    with VisionClient(config) as client:
        client.check_symbols(["BTCUSDT"])
        with pytest.raises(UnknownSymbolError) as raised:
            client.check_symbols(["BTCUSDT", "FOOUSDT", "BARUSDT"])
    message = str(raised.value)
    assert "Binance Vision publishes no spot klines for FOOUSDT, BARUSDT" in message
    assert f"the bucket listing {server.base_url} (?delimiter=/&prefix=...)" in message
    for prefix in ("data/spot/daily/klines/FOOUSDT/", "data/spot/monthly/klines/BARUSDT/"):
        assert prefix in message
    assert "BTCUSDT/" not in message
    listed = [r.query for r in server.requests]
    assert all(r.path == "" for r in server.requests)  # listings only, no archive fetched
    assert listed.count("prefix=data/spot/daily/klines/BTCUSDT/&delimiter=/&max-keys=1") == 1
    assert len(listed) == 1 + 2 * 2  # known: daily found; unknown: daily and monthly empty


def test_fetching_an_unknown_symbol_fails_instead_of_returning_no_rows(tree, server, config):
    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 10))
    with pytest.raises(UnknownSymbolError, match=r"publishes no spot klines for FOOUSDT"):
        fetch_klines(
            "FOOUSDT", "1m", TimeRange.for_day("2024-05-10"), config, today=dt.date(2024, 6, 1)
        )


def test_a_listed_symbol_without_archives_in_the_range_gives_no_rows(tree, server, config):
    publish_day(tree, "BTCUSDT", dt.date(2024, 5, 10))
    frame = fetch_klines(
        "BTCUSDT", "1m", TimeRange.for_day("2024-04-10"), config, today=dt.date(2024, 6, 1)
    )
    assert frame.height == 0 and frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert [r.status for r in server.requests_for("BTCUSDT-1m-2024-04-10.zip.CHECKSUM")] == [404]


S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def test_the_fake_lists_its_tree_and_refuses_missing_keys_as_binances_bucket_does(tree, server):
    for symbol in ("ETHBTC", "BTCUSDT", "ADABTC"):
        publish_day(tree, symbol, dt.date(2024, 5, 10))
    folders = httpx.get(server.base_url, params={"prefix": "data/spot/daily/klines/",
                                                 "delimiter": "/"})  # fmt: skip
    assert folders.headers["Content-Type"] == "application/xml"
    root = ElementTree.fromstring(folders.content)
    assert root.tag == f"{S3}ListBucketResult"
    assert [e.tag.removeprefix(S3) for e in root][:7] == [
        "Name", "Prefix", "Marker", "MaxKeys", "Delimiter", "IsTruncated", "CommonPrefixes",
    ]  # fmt: skip
    assert root.findtext(f"{S3}Name") == "data.binance.vision"
    assert [p.text for p in root.iterfind(f"{S3}CommonPrefixes/{S3}Prefix")] == [
        f"data/spot/daily/klines/{symbol}/" for symbol in ("ADABTC", "BTCUSDT", "ETHBTC")
    ]
    page = ElementTree.fromstring(httpx.get(server.base_url, params={
        "prefix": "data/spot/daily/klines/", "delimiter": "/", "max-keys": "1",
        "marker": "data/spot/daily/klines/ADABTC/",
    }).content)  # fmt: skip
    assert page.findtext(f"{S3}IsTruncated") == "true"
    assert page.findtext(f"{S3}NextMarker") == "data/spot/daily/klines/BTCUSDT/"
    keys = ElementTree.fromstring(httpx.get(server.base_url, params={
        "prefix": "data/spot/daily/klines/ETHBTC/1m/"}).content)  # fmt: skip
    contents = keys.findall(f"{S3}Contents")
    assert [c.findtext(f"{S3}Key").rsplit("/", 1)[-1] for c in contents] == [
        "ETHBTC-1m-2024-05-10.zip", "ETHBTC-1m-2024-05-10.zip.CHECKSUM",
    ]  # fmt: skip
    assert [e.tag.removeprefix(S3) for e in contents[0]] == [
        "Key", "LastModified", "ETag", "Size", "StorageClass",
    ]  # fmt: skip
    empty = ElementTree.fromstring(httpx.get(server.base_url, params={
        "prefix": "data/spot/daily/klines/FOOUSDT/", "delimiter": "/"}).content)  # fmt: skip
    assert empty.findall(f"{S3}Contents") + empty.findall(f"{S3}CommonPrefixes") == []
    missing = httpx.get(f"{server.base_url}/data/spot/daily/klines/FOOUSDT/1m/x.zip")
    assert missing.status_code == 404
    error = ElementTree.fromstring(missing.content)
    assert (error.tag, error.findtext("Code")) == ("Error", "NoSuchKey")
    assert error.findtext("Key") == "data/spot/daily/klines/FOOUSDT/1m/x.zip"


# -- aggTrades ------------------------------------------------------------------------------------


def agg_daily(symbol: str, day: str, market: str = "spot") -> str:
    folder = "spot" if market == "spot" else "futures/um"
    return f"data/{folder}/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day}.zip"


def agg_monthly(symbol: str, month: str) -> str:
    return f"data/spot/monthly/aggTrades/{symbol}/{symbol}-aggTrades-{month}.zip"


def agg_csv(start: dt.datetime, rows: int, gap_ms: int, **kw) -> bytes:
    """Trades from ``start`` whose ids follow from the start time, so archives never collide."""
    first_id = int(start.timestamp()) // 60 * 1000
    return synthetic_agg_trades_csv(start, rows, gap_ms, first_id=first_id, **kw)


# A spot aggTrades file as Binance publishes it: no header, 8 fields, True/False.
SPOT_AGG_LINES = [
    "416690,0.01633102,4.70443515,595259,595259,1591250548649,True,True",
    "416691,0.01633100,0.10000000,595260,595262,1591250548649,False,True",
    "416692,0.01633200,12.00000000,595263,595263,1591250549001,False,True",
]


def test_agg_trades_csv_parses_into_the_contract_with_exact_values():
    frame = read_agg_trades_csv(("\n".join(SPOT_AGG_LINES) + "\n").encode(), "X.csv")
    assert frame.schema == pl.Schema(AGG_TRADE_SCHEMA)
    assert frame.rows() == [
        (416690, utc(2020, 6, 4, 6, 2, 28, 649_000), 0.01633102, 4.70443515, 595259, 595259, True,
         "binance_vision"),
        (416691, utc(2020, 6, 4, 6, 2, 28, 649_000), 0.016331, 0.1, 595260, 595262, False,
         "binance_vision"),
        (416692, utc(2020, 6, 4, 6, 2, 29, 1_000), 0.016332, 12.0, 595263, 595263, False,
         "binance_vision"),
    ]  # fmt: skip


def test_agg_trades_futures_layout_with_header_parses_like_spot():
    futures = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
               "is_buyer_maker"]  # fmt: skip
    futures += [line.rsplit(",", 1)[0].replace("True", "true").replace("False", "false")
                for line in SPOT_AGG_LINES]  # fmt: skip
    spot = read_agg_trades_csv(("\n".join(SPOT_AGG_LINES) + "\n").encode(), "spot.csv")
    assert read_agg_trades_csv(("\r\n".join(futures) + "\r\n").encode(), "um.csv").equals(spot)
    start = utc(2024, 6, 1)
    plain = read_agg_trades_csv(synthetic_agg_trades_csv(start, 40), "plain.csv")
    with_header = synthetic_agg_trades_csv(start, 40, header=True)
    assert with_header.startswith(b"agg_trade_id,price,quantity,")
    assert read_agg_trades_csv(with_header, "header.csv").equals(plain)
    futures_csv = synthetic_agg_trades_csv(start, 40, header=True, futures=True)
    assert b",true\n" in futures_csv or b",false\n" in futures_csv
    assert read_agg_trades_csv(futures_csv, "um.csv").equals(plain)
    assert read_agg_trades_csv(b"", "empty.csv").schema == pl.Schema(AGG_TRADE_SCHEMA)


def test_agg_trades_in_microseconds_give_the_same_instants_as_milliseconds():
    start = utc(2025, 1, 1)
    in_ms = read_agg_trades_csv(synthetic_agg_trades_csv(start, 50), "ms.csv")
    in_us = read_agg_trades_csv(synthetic_agg_trades_csv(start, 50, microseconds=True), "us.csv")
    assert in_us.equals(in_ms)
    # A µs time keeps its sub-millisecond digits (spot files from 2025-01-01 are in µs).
    line = b"3361178553,93576.00000000,0.00011000,4315370209,4315370209,1735689600011327,True,True"
    frame = read_agg_trades_csv(line, "BTCUSDT-aggTrades-2025-01-01.csv")
    assert frame["ts"][0] == utc(2025, 1, 1, 0, 0, 0, 11_327)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("7,abc,1,1,1,1717200000000,True,True", "price is 'abc', not a number"),
        ("7,1,1,1,1,1717200000000,maybe,True", "is_buyer_maker is 'maybe', not true or false"),
        ("7,1,1,1,1,1717200000000,True", "7 fields"),
        ("7.5,1,1,1,1,1717200000000,True,True", "agg_trade_id is '7.5', not an integer"),
        ("7,1,1,1,1,,True,True", "transact_time is '', not an integer"),
        ("7,1,inf,1,1,1717200000000,True,True", "quantity is 'inf', not a finite number"),
    ],
)
def test_malformed_agg_trade_row_names_file_line_and_content(bad_line, expected):
    lines = synthetic_agg_trades_csv(utc(2024, 6, 1), 6).decode().splitlines()
    lines.insert(3, bad_line)  # physical line 4
    with pytest.raises(SourceDataError) as error:
        read_agg_trades_csv(("\n".join(lines) + "\n").encode(), "XUSDT-aggTrades-2024-06-01.csv")
    message = str(error.value)
    assert "XUSDT-aggTrades-2024-06-01.csv, line 4" in message
    assert expected in message and bad_line[:20] in message
    with pytest.raises(SourceDataError, match=r"line 1: 12 fields"):  # a kline file is refused
        read_agg_trades_csv(synthetic_kline_csv(utc(2024, 6, 1), 3), "not-trades.csv")


def test_plan_agg_trade_archives_uses_monthly_and_daily_archives_in_binance_layout():
    window = TimeRange(utc(2024, 1, 30, 6), utc(2024, 3, 2, 12))
    plan = plan_agg_trade_archives("btcusdt", window, dt.date(2024, 3, 10))
    assert [(a.period, a.day.isoformat()) for a in plan] == [
        ("daily", "2024-01-30"), ("daily", "2024-01-31"), ("monthly", "2024-02-01"),
        ("daily", "2024-03-01"), ("daily", "2024-03-02"),
    ]  # fmt: skip
    assert plan[1].path == agg_daily("BTCUSDT", "2024-01-31")
    assert plan[2].path == agg_monthly("BTCUSDT", "2024-02")
    futures = plan_agg_trade_archives("BTCUSDT", window, dt.date(2024, 3, 10), market="futures_um")
    assert futures[0].url("https://data.binance.vision") == (
        "https://data.binance.vision/data/futures/um/daily/aggTrades/BTCUSDT/"
        "BTCUSDT-aggTrades-2024-01-30.zip"
    )
    assert plan[2].days()[-1].name == "BTCUSDT-aggTrades-2024-02-29.zip"
    # days from today on are not published yet
    early = plan_agg_trade_archives("BTCUSDT", window, dt.date(2024, 3, 2))
    assert [a.name for a in early][-2:] == ["BTCUSDT-aggTrades-2024-02.zip",
                                            "BTCUSDT-aggTrades-2024-03-01.zip"]  # fmt: skip


def test_agg_trades_from_a_month_and_days_are_fetched_verified_cut_to_the_range(
    tree, server, config
):
    csvs = {
        agg_monthly("ETHUSDT", "2024-02"): agg_csv(utc(2024, 2, 1), 2900, 864_000),
        agg_daily("ETHUSDT", "2024-03-01"): agg_csv(utc(2024, 3, 1), 500, 172_800),
        agg_daily("ETHUSDT", "2024-03-02"): agg_csv(utc(2024, 3, 2), 500, 172_800),
    }
    build_vision_tree(tree, csvs)
    window = TimeRange(utc(2024, 2, 1), utc(2024, 3, 2, 12))

    frame = fetch_agg_trades("ETHUSDT", window, config, today=dt.date(2024, 4, 1))

    everything = pl.concat([read_agg_trades_csv(csv) for csv in csvs.values()])
    expected = everything.filter(pl.col("ts") < window.end)
    assert frame.equals(expected)  # sorted by id, in the contract, nothing outside the range
    assert frame.height == 2900 + 500 + 250
    assert frame["agg_trade_id"].is_unique().all() and frame["ts"].max() < window.end
    assert frame.schema == pl.Schema(AGG_TRADE_SCHEMA)
    fetched = sorted(r.path for r in server.requests)
    assert fetched == sorted([*csvs, *(key + ".CHECKSUM" for key in csvs)])

    server.clear()
    with VisionClient(config) as client:  # verified archives are reused from the cache
        again = client.fetch_agg_trades("ETHUSDT", window, today=dt.date(2024, 4, 1))
        assert (client.stats.files_reused, client.stats.files_downloaded) == (3, 0)
    assert server.requests == [] and again.equals(frame)


def test_missing_agg_trades_month_falls_back_to_its_days(tree, server, config, caplog):
    days = [dt.date(2023, 2, d) for d in range(1, 29) if d != 10]
    for day in days:
        csv = agg_csv(utc(day.year, day.month, day.day), 2, 60_000)
        build_vision_tree(tree, {agg_daily("SOLUSDT", day.isoformat()): csv})
    caplog.set_level(logging.INFO, logger="dagster_project.ingest.binance_vision")
    frame = fetch_agg_trades(
        "SOLUSDT", TimeRange(utc(2023, 2, 1), utc(2023, 3, 1)), config, today=dt.date(2023, 5, 1)
    )
    assert frame.height == 2 * len(days)
    monthly = server.requests_for("SOLUSDT-aggTrades-2023-02.zip.CHECKSUM")
    assert [r.status for r in monthly] == [404]
    assert "no SOLUSDT aggTrades data for 2023-02-10" in caplog.text


def test_agg_trades_checksum_mismatch_raises_and_keeps_nothing(tree, server, config):
    key = agg_daily("BTCUSDT", "2024-05-11", market="futures_um")
    csv = agg_csv(utc(2024, 5, 11), 100, 1000, header=True, futures=True)
    zip_path = build_vision_tree(tree, {key: csv})[key]
    server.wrong_checksum(zip_path.name)
    cfg = dataclasses.replace(config, market="futures_um")
    with pytest.raises(ChecksumMismatchError, match=r"BTCUSDT-aggTrades-2024-05-11\.zip: sha256"):
        fetch_agg_trades("BTCUSDT", TimeRange.for_day("2024-05-11"), cfg, today=dt.date(2024, 6, 1))
    assert list((config.cache_dir / key).parent.glob("*.zip*")) == []
    server.clear()  # once Binance publishes the right digest, the same call succeeds
    frame = fetch_agg_trades(
        "BTCUSDT", TimeRange.for_day("2024-05-11"), cfg, today=dt.date(2024, 6, 1)
    )
    assert frame.height == 100
    assert frame.equals(read_agg_trades_zip(config.cache_dir / key))


@pytest.mark.shared_data
def test_real_agg_trades_in_vision_layout_match_the_rest_body_exactly(shared_binance):
    """Vision aggTrades files hold what /api/v3/aggTrades returns; written in the spot file layout,
    the real REST body parses to the same contract rows either way."""
    import json

    rows = json.loads((shared_binance / "rest/http_spot_market_agg_trades.json").read_text())
    csv = "".join(
        f"{r['a']},{r['p']},{r['q']},{r['f']},{r['l']},{r['T']},{r['m']},{r['M']}\n" for r in rows
    )  # Python's str(bool) is the spot files' True/False
    from_vision = read_agg_trades_csv(csv.encode(), "BTCUSDT-aggTrades-2021-10-22.csv")
    from_rest = agg_trades_from_binance_rows(rows, "binance_vision")
    assert from_vision.equals(from_rest)
    assert from_vision.row(0) == (
        966492862, utc(2021, 10, 22, 23, 8, 16, 633_000), 60759.6, 0.00841, 1111480471,
        1111480471, False, "binance_vision",
    )  # fmt: skip
