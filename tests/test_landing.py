"""Landing rules shared by every source: symbols checked first, data checks before landing, no
silent shrink, freqtrade imports all-or-nothing, and CLI ranges landed day by day."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from dagster_project import backfill
from dagster_project.backfill import import_freqtrade_dir, ingest_range
from dagster_project.cli import main
from dagster_project.core.errors import (
    DataCheckError,
    ShrinkRefusedError,
    SourceDataError,
    UnknownSymbolError,
)
from dagster_project.core.klines import TimeRange, to_utc
from dagster_project.core.lake import Lake
from dagster_project.ingest.landing import land_days, land_klines
from tests.helpers import minute_klines
from tests.ingest.test_freqtrade import write_feather

DAY = dt.date(2024, 3, 1)
WHOLE_DAY = list(range(1440))


def day_after(days: int) -> dt.date:
    return DAY + dt.timedelta(days=days)


def lake_files(root: Path) -> dict[str, bytes]:
    """Every file under the lake with its bytes: equal snapshots mean an untouched lake."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def raw_rows(lake: Lake, symbol: str, day: dt.date, interval: str = "1m") -> int | None:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    if not lake.partition_file("raw", "klines", keys).is_file():
        return None
    return lake.read_partition("raw", "klines", keys).height


def curated(lake: Lake, symbol: str, day: dt.date, interval: str = "1h") -> bool:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    return lake.partition_file("curated", "klines", keys).is_file()


@dataclass
class ScriptedSource:
    """Whole days of known minute klines; ``bad_days`` carry a negative low, ``broken_days``
    make the fetch fail, ``short_days`` hold only 711 bars; ``unknown`` symbols are refused."""

    bad_days: set[dt.date] = field(default_factory=set)
    broken_days: set[dt.date] = field(default_factory=set)
    short_days: set[dt.date] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    fetched: list[TimeRange] = field(default_factory=list)
    name: str = "scripted"

    def check_symbols(self, symbols) -> None:
        unknown = [s for s in symbols if s in self.unknown]
        if unknown:
            raise UnknownSymbolError(f"unknown symbols {unknown}")

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame:
        self.fetched.append(time_range)
        days = whole_days_of(time_range)
        if self.broken_days & set(days):
            raise SourceDataError(f"connection lost on {sorted(self.broken_days & set(days))[0]}")
        return pl.concat([self.day(d) for d in days])

    def day(self, day: dt.date) -> pl.DataFrame:
        minutes = WHOLE_DAY[:711] if day in self.short_days else WHOLE_DAY
        frame = minute_klines(day, minutes, source=self.name)
        if day in self.bad_days:
            frame = frame.with_columns(
                pl.when(pl.col("open_time").dt.minute() == 7)
                .then(-1.0)
                .otherwise(pl.col("low"))
                .alias("low")
            )
        return frame


def whole_days_of(time_range: TimeRange) -> list[dt.date]:
    first, end = time_range.start.date(), time_range.end.date()
    return [first + dt.timedelta(days=i) for i in range((end - first).days)]


def days_range(first: dt.date, days: int) -> TimeRange:
    return TimeRange(to_utc(first), to_utc(first) + dt.timedelta(days=days))


# --------------------------------------------------------------------------------------------
# symbols are all checked before anything lands


def test_an_unknown_symbol_is_refused_before_any_symbol_lands(tmp_path):
    lake = Lake(tmp_path)
    source = ScriptedSource(unknown={"FOOUSDT"})
    ingest_range(lake, source, ["DOTUSDT"], "1m", days_range(DAY, 1))
    before = lake_files(tmp_path)
    with pytest.raises(UnknownSymbolError, match="FOOUSDT"):
        ingest_range(lake, source, ["DOTUSDT", "FOOUSDT"], "1m", days_range(DAY, 1))
    assert lake_files(tmp_path) == before
    assert len(source.fetched) == 1  # only the first, successful landing fetched anything


# --------------------------------------------------------------------------------------------
# data checks run before landing, on every path


def test_a_day_failing_a_data_check_is_refused_before_it_lands(tmp_path):
    lake = Lake(tmp_path)
    source = ScriptedSource(bad_days={day_after(1)})
    with pytest.raises(DataCheckError) as refused:
        ingest_range(lake, source, ["BTCUSDT"], "1m", days_range(DAY, 3))
    message = str(refused.value)
    assert "scripted" in message and "2024-03-02" in message and "ohlc_consistent" in message
    assert raw_rows(lake, "BTCUSDT", DAY) == 1440 and curated(lake, "BTCUSDT", DAY)
    assert raw_rows(lake, "BTCUSDT", day_after(1)) is None  # refused: nothing of it landed
    assert raw_rows(lake, "BTCUSDT", day_after(2)) is None  # never reached


def test_the_asset_landing_path_refuses_bad_rows_too(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(DataCheckError, match="ohlc_consistent"):
        land_days(lake, ScriptedSource(bad_days={DAY}), "BTCUSDT", "1m", [DAY])
    assert not (tmp_path / "raw").exists()


def test_duplicate_open_times_are_refused(tmp_path):
    frame = pl.concat([minute_klines(DAY, [0, 1]), minute_klines(DAY, [1])])
    with pytest.raises(DataCheckError, match="unique_open_time"):
        land_klines(Lake(tmp_path), "BTCUSDT", "1m", frame, origin="test rows")
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------------------------
# a range lands day by day (Vision and freqtrade month by month)


def test_a_failure_mid_range_keeps_the_days_already_landed_and_curated(tmp_path):
    lake = Lake(tmp_path)
    source = ScriptedSource(broken_days={day_after(2)})
    with pytest.raises(SourceDataError, match="connection lost on 2024-03-03"):
        ingest_range(lake, source, ["BTCUSDT"], "1m", days_range(DAY, 4))
    for day in (DAY, day_after(1)):
        assert raw_rows(lake, "BTCUSDT", day) == 1440 and curated(lake, "BTCUSDT", day)
    assert raw_rows(lake, "BTCUSDT", day_after(2)) is None
    assert [r.end - r.start for r in source.fetched] == [dt.timedelta(days=1)] * 3


def test_vision_and_freqtrade_land_month_by_month_others_day_by_day():
    days = [dt.date(2024, 1, 30) + dt.timedelta(days=i) for i in range(35)]  # Jan 30 .. Mar 4
    by_month = backfill.landing_batches(days, "binance_vision")
    assert [(b[0], b[-1]) for b in by_month] == [
        (dt.date(2024, 1, 30), dt.date(2024, 1, 31)),
        (dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
        (dt.date(2024, 3, 1), dt.date(2024, 3, 4)),
    ]
    assert backfill.landing_batches(days, "freqtrade") == by_month
    assert backfill.landing_batches(days, "binance_rest") == [[d] for d in days]
    assert backfill.landing_batches(days, "simulator") == [[d] for d in days]


# --------------------------------------------------------------------------------------------
# a landed day never shrinks unless asked


def test_a_landed_day_is_not_shrunk_without_replace(tmp_path):
    lake = Lake(tmp_path)
    ingest_range(lake, ScriptedSource(), ["BTCUSDT"], "1m", days_range(DAY, 1))
    before = lake_files(tmp_path)
    with pytest.raises(ShrinkRefusedError) as refused:
        ingest_range(lake, ScriptedSource(short_days={DAY}), ["BTCUSDT"], "1m", days_range(DAY, 1))
    assert all(s in str(refused.value) for s in ("2024-03-01", "1440", "711", "replace"))
    assert lake_files(tmp_path) == before
    ingest_range(
        lake, ScriptedSource(short_days={DAY}), ["BTCUSDT"], "1m", days_range(DAY, 1), replace=True
    )
    assert raw_rows(lake, "BTCUSDT", DAY) == 711


def test_an_empty_answer_does_not_blank_a_landed_day(tmp_path):
    lake = Lake(tmp_path)
    land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, [0, 1, 2]))
    with pytest.raises(ShrinkRefusedError, match="has 0 rows but 3 are landed"):
        land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, []), days=[DAY])
    assert raw_rows(lake, "BTCUSDT", DAY) == 3


def test_a_landing_that_grows_or_keeps_a_day_needs_no_replace(tmp_path):
    lake = Lake(tmp_path)
    land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, [0, 1, 2]))
    land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, [0, 1, 2, 3]))
    land_klines(lake, "BTCUSDT", "1m", minute_klines(DAY, [4, 5, 6, 7]))
    assert raw_rows(lake, "BTCUSDT", DAY) == 4


# --------------------------------------------------------------------------------------------
# freqtrade imports: every file checked before any lands


def minute_rows(day: dt.date, minutes: list[int], low: float = 99.0) -> list[list]:
    start = int(to_utc(day).timestamp() * 1000)
    return [[start + m * 60_000, 100.0, 101.0, low, 100.5, 2.0] for m in minutes]


def freqtrade_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "user_data" / "data" / "binance"
    folder.mkdir(parents=True)
    return folder


def test_a_folder_with_one_truncated_file_changes_nothing(tmp_path):
    lake = Lake(tmp_path / "lake")
    folder = freqtrade_folder(tmp_path)
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(DAY, WHOLE_DAY))
    import_freqtrade_dir(lake, str(folder))
    before = lake_files(lake.root)
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(day_after(1), WHOLE_DAY))
    good = write_feather(folder / "ETH_USDT-1m.feather", minute_rows(DAY, WHOLE_DAY))
    (folder / "XRP_USDT-1m.feather").write_bytes(good.read_bytes()[:300])  # truncated
    with pytest.raises(SourceDataError, match="XRP_USDT-1m.feather"):
        import_freqtrade_dir(lake, str(folder))
    assert lake_files(lake.root) == before


def test_negative_prices_are_refused_by_the_cli_naming_file_day_and_check(tmp_path):
    folder = freqtrade_folder(tmp_path)
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(DAY, [0, 1, 2], low=-5.0))
    lake_root = tmp_path / "lake"
    result = CliRunner().invoke(
        main, ["--lake", str(lake_root), "--no-record", "import-freqtrade", str(folder)]
    )
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: ")
    assert all(s in error for s in ("BTC_USDT-1m.feather", "2024-03-01", "ohlc_consistent"))
    assert not (lake_root / "raw").exists()


def test_import_freqtrade_of_a_symbol_without_a_file_is_refused(tmp_path):
    folder = freqtrade_folder(tmp_path)
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(DAY, WHOLE_DAY))
    lake_root = tmp_path / "lake"
    command = ["--lake", str(lake_root), "--no-record", "import-freqtrade", str(folder)]
    result = CliRunner().invoke(main, [*command, "--symbols", "BTCUSDT,FOOUSDT"])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: {folder} holds no freqtrade file for FOOUSDT; it has ['BTCUSDT']\n"
    )
    assert not lake_root.exists()


def test_import_freqtrade_refuses_to_shrink_a_day_unless_replace(tmp_path):
    folder = freqtrade_folder(tmp_path)
    lake_root = tmp_path / "lake"
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(DAY, WHOLE_DAY))
    command = ["--lake", str(lake_root), "--no-record", "import-freqtrade", str(folder)]
    assert CliRunner().invoke(main, command).exit_code == 0
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(DAY, WHOLE_DAY[:711]))
    before = lake_files(lake_root)
    refused = CliRunner().invoke(main, command)
    assert refused.exit_code == 2
    assert all(s in refused.output for s in ("2024-03-01", "1440", "711", "--replace"))
    assert lake_files(lake_root) == before
    replaced = CliRunner().invoke(main, [*command, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert raw_rows(Lake(lake_root), "BTCUSDT", DAY) == 711


def test_two_files_of_one_series_are_refused(tmp_path):
    folder = freqtrade_folder(tmp_path)
    write_feather(folder / "BTC_USDT-1m.feather", minute_rows(DAY, [0, 1]))
    write_feather(folder / "futures" / "BTC_USDT_USDT-1m-futures.feather", minute_rows(DAY, [0]))
    lake = Lake(tmp_path / "lake")
    with pytest.raises(SourceDataError, match="BTCUSDT 1m") as refused:
        import_freqtrade_dir(lake, str(folder))
    assert "BTC_USDT-1m.feather" in str(refused.value)
    assert "BTC_USDT_USDT-1m-futures.feather" in str(refused.value)
    assert not (lake.root / "raw").exists()


def test_ingest_cli_accepts_replace(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    lake_root = tmp_path / "lake"
    args = ["--lake", str(lake_root), "--no-record", "ingest", "--symbols", "BTCUSDT"]
    days = ["--start", "2024-03-01", "--end", "2024-03-02"]
    assert CliRunner().invoke(main, [*args, *days, "--replace"]).exit_code == 0
    assert raw_rows(Lake(lake_root), "BTCUSDT", DAY) == 1440


def test_rest_pages_stream_into_days_each_landed_as_soon_as_complete(tmp_path):
    """One page stream over the range (ceil(rows / 1000) requests, not ceil per day), and a ban
    on page 5 keeps the two days the first four pages completed, landed and curated."""
    from dagster_project.core.errors import BinanceIPBannedError
    from dagster_project.ingest.sources import SourceSettings, make_source
    from tests.fakes.binance_server import FakeBinance, Fault, synthetic_kline_rows

    rows = synthetic_kline_rows("BTCUSDT", "1m", to_utc(DAY), 4 * 1440)
    with FakeBinance({("BTCUSDT", "1m"): rows}) as server:
        settings = SourceSettings(kind="binance", rest_base_url=server.url)
        four_days = days_range(DAY, 4)
        whole = Lake(tmp_path / "whole")
        ingest_range(whole, make_source(settings, whole.root), ["BTCUSDT"], "1m", four_days)
        assert len(server.requests_to("klines")) == 6  # ceil(5760 / 1000)
        assert [raw_rows(whole, "BTCUSDT", day_after(n)) for n in range(4)] == [1440] * 4

        server.script(Fault.banned(path="klines", skip=4))
        cut = Lake(tmp_path / "cut")
        with pytest.raises(BinanceIPBannedError):
            ingest_range(cut, make_source(settings, cut.root), ["BTCUSDT"], "1m", four_days)
    assert [raw_rows(cut, "BTCUSDT", day_after(n)) for n in range(4)] == [1440, 1440, None, None]
    assert curated(cut, "BTCUSDT", DAY) and curated(cut, "BTCUSDT", day_after(1))
    keys = {"symbol": "BTCUSDT", "interval": "1m", "date": day_after(1)}
    assert cut.read_partition("raw", "klines", keys).drop("ingested_at").equals(
        whole.read_partition("raw", "klines", keys).drop("ingested_at")
    )
