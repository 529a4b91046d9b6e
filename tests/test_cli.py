"""The `candlelake` command line: ingest from each source, freqtrade import, errors."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import pytest
from click.testing import CliRunner

from dagster_project.cli import main
from dagster_project.core.lake import Lake, build_catalog, connect
from dagster_project.partitions import SYMBOLS_PARTITION_NAME
from tests.fakes.binance_server import FakeBinance, synthetic_kline_rows
from tests.fakes.vision_server import VisionServer, build_vision_tree, synthetic_kline_csv

UTC = dt.UTC


@pytest.fixture
def lake_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("CANDLELAKE_LAKE", raising=False)
    return tmp_path / "lake"


def candlelake(lake_root, *args: str):
    return CliRunner().invoke(main, ["--lake", str(lake_root), *args], catch_exceptions=False)


def catalog_rows(lake_root, query: str):
    con = connect(Lake(lake_root).catalog_path, read_only=True)
    try:
        return con.sql(query).fetchall()
    finally:
        con.close()


def test_ingest_simulator_lands_whole_days_curates_and_registers_partitions(lake_root, tmp_path):
    result = candlelake(
        lake_root,
        "ingest",
        "--symbols",
        "btcusdt,SOLUSDT",
        "--start",
        "2024-01-01T12:00",
        "--end",
        "2024-01-02T06:00",
    )
    assert result.exit_code == 0, result.output
    assert "4 raw partitions, 5760 rows landed" in result.output
    rows = catalog_rows(
        lake_root,
        "select symbol, interval, count(*) from klines "
        "where interval in ('1m', '1h') group by all order by all",
    )
    assert rows == [
        ("BTCUSDT", "1h", 48),
        ("BTCUSDT", "1m", 2880),
        ("SOLUSDT", "1h", 48),
        ("SOLUSDT", "1m", 2880),
    ]
    instance = dg.DagsterInstance.get()
    assert set(instance.get_dynamic_partitions(SYMBOLS_PARTITION_NAME)) == {"BTCUSDT", "SOLUSDT"}
    materialized = instance.get_materialized_partitions(dg.AssetKey(["curated", "klines"]))
    assert "2024-01-02|SOLUSDT" in materialized


def test_cli_and_asset_land_identical_rows(lake_root):
    candlelake(
        lake_root, "ingest", "--symbols", "ETHUSDT", "--start", "2024-03-01", "--end", "2024-03-02"
    )
    from dagster_project.ingest.landing import land_day
    from dagster_project.ingest.sources import SourceSettings, make_source

    other = Lake(lake_root.parent / "other")
    land_day(other, make_source(SourceSettings(), other.root), "ETHUSDT", "1m", dt.date(2024, 3, 1))
    keys = {"symbol": "ETHUSDT", "interval": "1m", "date": dt.date(2024, 3, 1)}
    via_cli = Lake(lake_root).read_partition("raw", "klines", keys).drop("ingested_at")
    assert via_cli.equals(other.read_partition("raw", "klines", keys).drop("ingested_at"))


def test_ingest_from_binance_rest_via_base_url(lake_root):
    start = dt.datetime(2024, 2, 1, tzinfo=UTC)
    with FakeBinance(
        {("BTCUSDT", "1m"): synthetic_kline_rows("BTCUSDT", "1m", start, 3 * 1440)}
    ) as server:
        result = candlelake(
            lake_root,
            "ingest",
            "--source",
            "binance",
            "--base-url",
            server.url,
            "--symbols",
            "BTCUSDT",
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-04",
        )
        assert result.exit_code == 0, result.output
        assert len(server.requests_to("klines")) == 5  # ⌈4320 / 1000⌉ pages, landed by day
    assert catalog_rows(lake_root, "select source, count(*) from raw_klines group by all") == [
        ("binance_rest", 4320)
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2024-01-05", "--end", "2024-01-01"], "is not before end"),
        (["--start", "2999-01-01", "--end", "2999-01-02"], "is in the future"),
        (["--start", "yesterday", "--end", "2024-01-02"], "cannot parse time 'yesterday'"),
        (
            ["--interval", "7m", "--start", "2024-01-01", "--end", "2024-01-02"],
            "unsupported kline interval '7m'",
        ),
        (
            ["--symbols", "BTC/USDT", "--start", "2024-01-01", "--end", "2024-01-02"],
            "bad symbol 'BTC/USDT'",
        ),
    ],
)
def test_bad_input_is_one_clear_error_line_and_writes_nothing(lake_root, args, message):
    base = ["ingest", "--symbols", "BTCUSDT"] if "--symbols" not in args else ["ingest"]
    result = CliRunner().invoke(main, ["--lake", str(lake_root), *base, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (lake_root / "raw").exists()


def test_import_freqtrade_reports_the_real_2023_03_24_halt_as_a_gap(
    lake_root, tmp_path, shared_binance
):
    folder = tmp_path / "user_data" / "data" / "binance"
    folder.mkdir(parents=True)
    shutil.copy(shared_binance / "spot_freqtrade" / "BTC_USDT-1h.feather", folder)
    result = CliRunner().invoke(
        main,
        ["--lake", str(lake_root), "--no-record", "import-freqtrade", str(folder)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "BTCUSDT 1h: 1 missing bars" in result.output
    gaps = catalog_rows(
        lake_root,
        "select symbol, interval, gap_start, gap_end, missing_bars "
        "from kline_gaps where missing_bars > 0",
    )
    assert gaps == [
        (
            "BTCUSDT",
            "1h",
            dt.datetime(2023, 3, 24, 13, tzinfo=UTC),
            dt.datetime(2023, 3, 24, 14, tzinfo=UTC),
            1,
        )
    ]
    counts = catalog_rows(
        lake_root, "select count(*), min(source), max(source), count(trades) from raw_klines"
    )
    assert counts == [(8759, "freqtrade", "freqtrade", 0)]  # 365 × 24 − 1; trades not invented
    assert not (tmp_path / "dagster_home").exists()  # --no-record


def test_import_freqtrade_of_a_missing_folder_names_it(lake_root, tmp_path):
    result = CliRunner().invoke(
        main, ["--lake", str(lake_root), "import-freqtrade", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2
    assert "nope" in result.output


def test_ingest_from_binance_vision_via_base_url(lake_root, tmp_path):
    days = [dt.datetime(2024, 2, d, tzinfo=UTC) for d in (1, 2)]
    files = {
        f"data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-{day:%Y-%m-%d}.zip": synthetic_kline_csv(
            day, 1440, microseconds=day.day == 2
        )
        for day in days
    }
    build_vision_tree(tmp_path / "vision", files)
    with VisionServer(tmp_path / "vision") as server:
        args = [
            "ingest",
            "--source",
            "vision",
            "--base-url",
            server.url,
            "--symbols",
            "ETHUSDT",
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-03",
        ]
        result = candlelake(lake_root, *args)
        assert result.exit_code == 0, result.output
    rows = catalog_rows(
        lake_root,
        "select date, source, count(*), min(open_time), max(close_time) from raw_klines "
        "group by all order by date",
    )
    assert [r[:3] for r in rows] == [
        (dt.date(2024, 2, 1), "binance_vision", 1440),
        (dt.date(2024, 2, 2), "binance_vision", 1440),  # µs timestamps normalised
    ]
    assert rows[1][3] == days[1]


def test_replay_depth_lands_books_for_each_day_of_a_real_recording(lake_root, shared_binance):
    streams = shared_binance / "streams"
    args = [
        "replay-depth",
        str(streams / "spot_btcusdt_20240808.gz"),
        str(streams / "spot_btcusdt_20240809.gz"),
        "--symbol",
        "btcusdt",
    ]
    result = candlelake(lake_root, *args)
    assert result.exit_code == 0, result.output
    assert "6493 events applied" in result.output and "0 resyncs" in result.output
    assert "1072 compared, 0 mismatched" in result.output
    rows = catalog_rows(
        lake_root,
        "select date, count(*), min(ts), max(ts) from depth_snapshots group by all order by date",
    )
    assert [(day, n) for day, n, *_ in rows] == [
        (dt.date(2024, 8, 8), 344),
        (dt.date(2024, 8, 9), 306),
    ]
    assert catalog_rows(lake_root, "select count(*) from depth_updates") == [(6493,)]
    materialized = dg.DagsterInstance.get().get_materialized_partitions(
        dg.AssetKey(["raw", "depth_snapshots"])
    )
    assert materialized == {"2024-08-08|BTCUSDT", "2024-08-09|BTCUSDT"}


def test_poll_depth_stops_on_sigterm_and_keeps_what_it_polled(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.fakes.binance_server import synthetic_depth_body

    with FakeBinance(depth={"BTCUSDT": synthetic_depth_body(100)}) as server:
        command = [
            str(Path(sys.executable).parent / "candlelake"),
            "--lake",
            str(tmp_path / "lake"),
            "--no-record",
            "poll-depth",
            "--symbols",
            "BTCUSDT",
            "--base-url",
            server.url,
            "--cadence",
            "0.05",
            "--flush-every",
            "3600",
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(server.requests_to("depth")) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    lake = Lake(tmp_path / "lake")
    days = list(lake.partitions("raw", "depth_snapshots"))
    rows = sum(lake.read_partition("raw", "depth_snapshots", k).height for k in days)
    assert rows >= 5 and f"landed {{'BTCUSDT': {rows}}}" in out


def test_collect_depth_lands_books_and_updates_from_a_local_stream(lake_root):
    from tests.fakes.ws_server import FakeBinanceStream, synthetic_depth_messages

    messages, bodies = synthetic_depth_messages(("BTCUSDT",), events=400)
    with FakeBinanceStream(messages, snapshots=bodies, speed=50.0) as stream:
        args = [
            "collect-depth",
            "--symbols",
            "BTCUSDT",
            "--ws-url",
            stream.url,
            "--rest-url",
            stream.rest.url,
            "--flush-every",
            "0.5",
            "--seconds",
            "3",
        ]
        result = candlelake(lake_root, *args)
    assert result.exit_code == 0, result.output
    assert "collector stopped" in result.output
    updates = catalog_rows(lake_root, "select count(*), min(source) from depth_updates")
    assert updates[0][0] > 0 and updates[0][1] == "binance_stream"
    books = catalog_rows(
        lake_root, "select count(*) from depth_snapshots where bid_prices[1] < ask_prices[1]"
    )
    assert books[0][0] > 0


def test_split_spec_add_stores_a_spec_and_list_shows_it(lake_root):
    result = candlelake(
        lake_root,
        "split-spec",
        "add",
        "march_week",
        "--validation-start",
        "2024-03-05",
        "--test-start",
        "2024-03-06T12:00",
        "--train-start",
        "2024-03-01",
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "split spec march_week: train_start 2024-03-01T00:00:00+00:00, validation_start "
        "2024-03-05T00:00:00+00:00, test_start 2024-03-06T12:00:00+00:00, embargo 30 bars"
    )
    listed = candlelake(lake_root, "split-spec", "list").output.splitlines()
    assert listed[0].startswith("default: validation_start 2024-03-02T00:00:00+00:00")
    assert listed[0].endswith("[built in]")
    assert listed[1].startswith("march_week: train_start 2024-03-01") and "[stored " in listed[1]
    # the same cuts again change nothing
    again = ["--validation-start", "2024-03-05", "--test-start", "2024-03-06T12:00"]
    again += ["--train-start", "2024-03-01T00:00:00Z"]
    assert candlelake(lake_root, "split-spec", "add", "march_week", *again).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["march_week", "--validation-start", "2024-03-04", "--test-start", "2024-03-06T12:00"],
            "split spec 'march_week' is stored in the lake with train_start 2024-03-01",
        ),
        (
            ["default", "--validation-start", "2024-03-02", "--test-start", "2024-03-04"],
            "split spec 'default' is built in with validation_start",
        ),
        (
            ["March", "--validation-start", "2024-03-02", "--test-start", "2024-03-04"],
            "bad split spec name 'March'",
        ),
        (
            ["late", "--validation-start", "2024-03-04", "--test-start", "2024-03-02"],
            "validation_start 2024-03-04T00:00:00+00:00 must be before test_start",
        ),
        (
            ["short", "--validation-start", "2024-03-02", "--test-start", "2024-03-04"]
            + ["--embargo-bars", "5"],
            "embargo_bars=5 is shorter than the longest label horizon or window (30 bars)",
        ),
        (
            ["soon", "--validation-start", "tomorrow", "--test-start", "2024-03-04"],
            "cannot parse time 'tomorrow'",
        ),
    ],
)
def test_split_spec_add_refusals_are_one_error_line(lake_root, args, message):
    stored = ["--validation-start", "2024-03-05", "--test-start", "2024-03-06T12:00"]
    candlelake(lake_root, "split-spec", "add", "march_week", *stored, "--train-start", "2024-03-01")
    result = CliRunner().invoke(main, ["--lake", str(lake_root), "split-spec", "add", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    listed = candlelake(lake_root, "split-spec", "list").output
    assert [line.split(":")[0] for line in listed.splitlines()] == ["default", "march_week"]


@pytest.fixture(scope="module")
def catalogued_lake(tmp_path_factory) -> Lake:
    from dagster_project.assets.catalog import CATALOG_VIEWS
    from tests.helpers import simulated_dataset_lake

    lake = simulated_dataset_lake(tmp_path_factory.mktemp("lake"), days=(dt.date(2024, 3, 1),))
    build_catalog(lake, CATALOG_VIEWS)
    return lake


def test_sql_prints_a_query_and_says_when_the_row_limit_cut_it(catalogued_lake):
    result = CliRunner().invoke(
        main,
        ["--lake", str(catalogued_lake.root), "sql", "--limit", "3", "from range(1e12::bigint)"],
    )
    assert result.exit_code == 0, result.output
    cells = [line.strip("│ ") for line in result.output.splitlines() if line.startswith("│")]
    assert cells[-3:] == ["0", "1", "2"]
    assert result.output.endswith(
        "first 3 rows shown; the result has more (add a limit, or raise --limit)\n"
    )
    counted = candlelake(
        catalogued_lake.root, "sql", "select count(*) as bars from klines where interval = '1m'"
    )
    assert counted.exit_code == 0 and "│ 1440 │" in counted.output


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("COPY (select 1) TO '{tmp}/x.csv'", "refused COPY"),
        ("ATTACH '{tmp}/x.db'", "refused ATTACH"),
        ("DROP VIEW klines", "refused DROP"),
        ("select * from read_text('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("select * from glob('/root/*')", 'Cannot access file "/root/*"'),
        ("select * from nope", "Table with name nope does not exist"),
    ],
)
def test_sql_refusals_and_errors_are_one_line_and_exit_2(catalogued_lake, tmp_path, query, message):
    result = CliRunner().invoke(
        main, ["--lake", str(catalogued_lake.root), "sql", query.format(tmp=tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    assert candlelake(catalogued_lake.root, "sql", "from klines limit 1").exit_code == 0


def test_sql_without_a_catalog_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["--lake", str(tmp_path / "lake"), "sql", "select 1"])
    assert result.exit_code == 2
    catalog = tmp_path / "lake" / "candlelake.duckdb"
    assert result.output == f"error: no catalog at {catalog}; build it with `candlelake catalog`\n"


SYMBOL_COMMANDS = {
    "ingest": ["ingest", "--start", "2024-01-01", "--end", "2024-01-02"],
    "build": ["build", "--start", "2024-01-01", "--end", "2024-01-02"],
    "run": ["run", "--days", "2024-03-01"],
    "import-freqtrade": ["import-freqtrade", "{tmp}"],
    "collect-depth": ["collect-depth", "--seconds", "1"],
    "poll-depth": ["poll-depth", "--rounds", "1"],
}


@pytest.mark.parametrize("symbols", ["", ",,,", " , "])
@pytest.mark.parametrize("command", list(SYMBOL_COMMANDS))
def test_symbols_naming_no_symbol_are_refused_before_anything_runs(
    lake_root, tmp_path, command, symbols
):
    args = [arg.format(tmp=tmp_path) for arg in SYMBOL_COMMANDS[command]]
    result = CliRunner().invoke(main, ["--lake", str(lake_root), *args, "--symbols", symbols])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: no symbols in --symbols {symbols!r}; expected comma-separated symbols, "
        "e.g. BTCUSDT,ETHUSDT\n"
    )
    assert not lake_root.exists()


def tomorrow_utc() -> dt.date:
    return dt.datetime.now(UTC).date() + dt.timedelta(days=1)


@pytest.mark.parametrize("command", ["ingest", "build"])
def test_a_range_reaching_past_today_is_refused_before_anything_lands(lake_root, command):
    args = [command, "--symbols", "BTCUSDT", "--start", "2017-01-01", "--end", "2100-01-01"]
    result = CliRunner().invoke(main, ["--lake", str(lake_root), *args])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: --end 2100-01-01 is after today (UTC); expected at most {tomorrow_utc()} "
        "(exclusive: today's bars so far)\n"
    )
    assert not lake_root.exists()


@pytest.mark.parametrize("command", ["ingest", "build"])
def test_a_range_starting_before_binance_is_refused_before_anything_lands(lake_root, command):
    args = [command, "--symbols", "BTCUSDT", "--start", "2017-01-01", "--end", "2017-08-01"]
    result = CliRunner().invoke(main, ["--lake", str(lake_root), *args])
    assert result.exit_code == 2, result.output
    assert result.output == (
        "error: --start 2017-01-01 is before 2017-07-14, the first day of Binance spot klines and "
        "of the lake's day partitions; expected 2017-07-14 or later\n"
    )
    assert not lake_root.exists()


def test_an_end_of_tomorrow_takes_today_so_far(lake_root):
    today = dt.datetime.now(UTC).date()
    args = ["ingest", "--symbols", "BTCUSDT", "--start", str(today), "--end", str(tomorrow_utc())]
    result = candlelake(lake_root, "--no-record", *args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ("2024-03-01,2100-01-01", "day 2100-01-01 in --days is after today ({today}, UTC)"),
        ("", "--days '' names no day; expected comma-separated UTC days, e.g. 2024-03-01"),
        (",", "--days ',' names no day"),
        ("2024-13-01", "bad day '2024-13-01' in --days; expected YYYY-MM-DD"),
        ("2017-07-13", "--days 2017-07-13 is before 2017-07-14, the first day of Binance"),
    ],
)
def test_run_refuses_days_after_today_or_none(lake_root, days, message):
    result = CliRunner().invoke(main, ["--lake", str(lake_root), "run", "--days", days])
    assert result.exit_code == 2, result.output
    today = dt.datetime.now(UTC).date()
    assert result.output.startswith("error: ") and message.format(today=today) in result.output
    assert len(result.output.splitlines()) == 1
    assert not lake_root.exists()
