"""The Binance REST klines client, always through the local fake Binance server (tests/fakes)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Iterator

import httpx
import polars as pl
import pytest

from dagster_project.core.errors import (
    BinanceAPIError,
    BinanceIPBannedError,
    InvalidRequestError,
    SourceDataError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import RAW_KLINE_SCHEMA, TimeRange, klines_from_binance_rows
from dagster_project.core.schemas import AGG_TRADE_SCHEMA, DEPTH_SNAPSHOT_SCHEMA
from dagster_project.ingest.binance_rest import (
    BASE_URLS,
    BinanceRestClient,
    BinanceRestConfig,
    DepthSnapshot,
    agg_trades_from_binance_rows,
    config_from_preset,
    depth_snapshot_from_binance,
    depth_snapshots_frame,
)
from dagster_project.ingest.sources import RestSource
from tests.fakes.binance_server import (
    FakeBinance,
    Fault,
    load_real_agg_trades,
    load_real_depths,
    load_real_exchange_info,
    load_real_klines,
    synthetic_agg_trades,
    synthetic_depth_body,
    synthetic_exchange_info,
    synthetic_kline_rows,
    synthetic_series,
)

UTC = dt.UTC
START = dt.datetime(2024, 3, 1, tzinfo=UTC)
MINUTE = dt.timedelta(minutes=1)


def fast_config(fake: FakeBinance, **overrides: object) -> BinanceRestConfig:
    """A config for the fake: short timeouts and backoffs so every test stays fast."""
    settings: dict[str, object] = {
        "base_url": fake.url,
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "window_guard_s": 0.05,
    }
    return BinanceRestConfig(**{**settings, **overrides})  # type: ignore[arg-type]


def minutes(count: int, start: dt.datetime = START) -> TimeRange:
    return TimeRange(start, start + count * MINUTE)


def open_times_ms(frame: pl.DataFrame) -> list[int]:
    return [int(t.timestamp() * 1000) for t in frame["open_time"]]


@pytest.fixture
def btc_2500() -> Iterator[tuple[FakeBinance, list[list]]]:
    rows = synthetic_kline_rows("BTCUSDT", "1m", START, 2500)
    with FakeBinance({("BTCUSDT", "1m"): rows}) as fake:
        yield fake, rows


# -- paging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 999, 1000, 1001, 2500])
def test_n_rows_take_ceil_n_over_1000_requests_and_come_back_exactly(n_rows: int) -> None:
    rows = synthetic_kline_rows("BTCUSDT", "1m", START, n_rows)
    with FakeBinance({("BTCUSDT", "1m"): rows}) as fake:
        with BinanceRestClient(fast_config(fake)) as client:
            frame = client.fetch_klines("BTCUSDT", "1m", minutes(n_rows))

        klines_requests = fake.requests_to("klines")
        assert len(klines_requests) == math.ceil(n_rows / 1000)
        assert frame.equals(klines_from_binance_rows(rows, "binance_rest"))
        first = klines_requests[0].params
        end_ms = minutes(n_rows).end_ms
        assert first == {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "startTime": str(minutes(n_rows).start_ms),
            "endTime": str(end_ms - 1),
            "limit": "1000",
        }
        for previous, request in zip(klines_requests, klines_requests[1:], strict=False):
            assert (
                int(request.params["startTime"])
                == int(previous.params["startTime"]) + 1000 * 60_000
            )


def test_pages_are_one_frame_per_request_in_the_contract_schema(btc_2500) -> None:
    fake, rows = btc_2500
    with BinanceRestClient(fast_config(fake)) as client:
        pages = list(client.iter_kline_pages("BTCUSDT", "1m", minutes(2500)))
    assert [page.height for page in pages] == [1000, 1000, 500]
    assert all(page.schema == pl.Schema(RAW_KLINE_SCHEMA) for page in pages)
    assert pl.concat(pages)["source"].unique().to_list() == ["binance_rest"]


def test_rows_outside_the_range_are_never_returned(btc_2500) -> None:
    fake, rows = btc_2500
    inner = TimeRange(START + 700 * MINUTE + dt.timedelta(seconds=30), START + 1900 * MINUTE)
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", inner)
    assert frame.equals(klines_from_binance_rows(rows[701:1900], "binance_rest"))
    assert len(fake.requests_to("klines")) == 2


def test_a_short_page_ends_paging_when_the_range_has_no_more_rows(btc_2500) -> None:
    fake, rows = btc_2500
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(4000))  # data ends at 2500
    assert frame.height == 2500
    assert len(fake.requests_to("klines")) == 3


def test_an_empty_range_of_data_takes_one_request_and_gives_an_empty_contract_frame(
    btc_2500,
) -> None:
    fake, _ = btc_2500
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(10, START - dt.timedelta(days=30)))
    assert frame.height == 0
    assert frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert len(fake.requests_to("klines")) == 1


def test_gaps_in_the_data_are_kept_as_gaps_not_filled(btc_2500) -> None:
    _, rows = btc_2500
    with_gap = rows[:100] + rows[160:1200]
    with (
        FakeBinance({("BTCUSDT", "1m"): with_gap}) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(1200))
    assert open_times_ms(frame) == [row[0] for row in with_gap]


# -- real Binance bodies ---------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_klines_body_round_trips_into_the_contract_with_exact_values(shared_binance) -> None:
    klines = load_real_klines(shared_binance)
    info = load_real_exchange_info(shared_binance)
    time_range = TimeRange(
        dt.datetime(2021, 10, 22, 23, 0, tzinfo=UTC), dt.datetime(2021, 10, 23, 0, 0, tzinfo=UTC)
    )
    with (
        FakeBinance(klines, exchange_info=info) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        frame = client.fetch_klines("BTCUSDT", "1m", time_range)

    assert frame.height == 10
    assert frame.schema == pl.Schema(RAW_KLINE_SCHEMA)
    assert frame.row(0, named=True) == {
        "open_time": dt.datetime(2021, 10, 22, 23, 3, tzinfo=UTC),
        "open": 60685.22,
        "high": 60729.84,
        "low": 60670.90,
        "close": 60719.27,
        "volume": 21.63272,
        "close_time": dt.datetime(2021, 10, 22, 23, 3, 59, 999000, tzinfo=UTC),
        "quote_volume": 1313200.0134041,
        "trades": 617,
        "taker_buy_base_volume": 12.28492,
        "taker_buy_quote_volume": 745719.4102284,
        "source": "binance_rest",
    }
    assert open_times_ms(frame)[-1] == 1634944320000
    assert frame.equals(klines_from_binance_rows(klines[("BTCUSDT", "1m")], "binance_rest"))
    # The real exchangeInfo publishes REQUEST_WEIGHT 1200/min (2021); the client adopts it.
    assert client.weight_limit == 1200


@pytest.mark.shared_data
def test_the_complete_real_exchange_info_validates_and_suggests_close_symbols(
    shared_binance, caplog
) -> None:
    info = load_real_exchange_info(shared_binance, complete=True)
    assert len(info["symbols"]) > 1500
    not_trading = next(s["symbol"] for s in info["symbols"] if s["status"] != "TRADING")
    with FakeBinance(exchange_info=info) as fake, BinanceRestClient(fast_config(fake)) as client:
        client.validate("ETHBTC", "1h")
        with pytest.raises(UnknownSymbolError, match=r"'ETHBTX'.*did you mean ETHBTC"):
            client.validate("ETHBTX", "1h")
        with caplog.at_level(logging.WARNING):
            client.validate(not_trading, "1m")
    assert f"{not_trading} on spot has status" in caplog.text


# -- bad requests ----------------------------------------------------------------------------------


def test_unknown_symbol_names_it_and_suggests_close_matches(btc_2500) -> None:
    fake, _ = btc_2500
    with (
        BinanceRestClient(fast_config(fake)) as client,
        pytest.raises(UnknownSymbolError) as raised,
    ):
        client.fetch_klines("BTCUSTD", "1m", minutes(10))
    message = str(raised.value)
    assert "'BTCUSTD' is not listed on Binance spot" in message
    assert "did you mean BTCUSDT?" in message
    assert fake.requests_to("klines") == []


def test_unknown_symbol_rejected_by_the_server_maps_to_unknown_symbol_error(btc_2500) -> None:
    fake, _ = btc_2500
    with (
        BinanceRestClient(fast_config(fake)) as client,
        pytest.raises(UnknownSymbolError, match=r"symbol=NOPEUSDT.*-1121 Invalid symbol"),
    ):
        list(client.iter_kline_pages("NOPEUSDT", "1m", minutes(10)))


@pytest.mark.parametrize(
    ("market", "interval", "expected"),
    [
        ("spot", "7m", r"unsupported kline interval '7m'; expected one of 1s, 1m"),
        ("spot", "1w", r"unsupported kline interval '1w'"),
        (
            "futures_um",
            "1s",
            r"interval '1s' is not offered on Binance futures_um; expected one of 1m",
        ),
    ],
)
def test_unsupported_interval_names_it_and_the_choices(
    btc_2500, market: str, interval: str, expected: str
) -> None:
    fake, _ = btc_2500
    with (
        BinanceRestClient(fast_config(fake, market=market)) as client,
        pytest.raises(UnsupportedIntervalError, match=expected),
    ):
        client.fetch_klines("BTCUSDT", interval, minutes(10))
    assert fake.requests_to("klines") == []


def test_binance_error_codes_map_to_specific_errors(btc_2500) -> None:
    fake, _ = btc_2500
    fake.script(
        Fault.api_error(-1120, "Invalid interval.", path="klines"),
        Fault.api_error(-1130, "Data sent for parameter 'limit' is not valid.", path="klines"),
    )
    with BinanceRestClient(fast_config(fake)) as client:
        with pytest.raises(UnsupportedIntervalError, match=r"interval=1m.*-1120 Invalid interval"):
            client.fetch_klines("BTCUSDT", "1m", minutes(10))
        with pytest.raises(BinanceAPIError) as raised:
            client.fetch_klines("BTCUSDT", "1m", minutes(10))
    message = str(raised.value)
    assert "HTTP 400, code -1130: Data sent for parameter 'limit' is not valid." in message
    assert f"{fake.url}/api/v3/klines?symbol=BTCUSDT" in message
    assert client.stats.retries == 0


def test_start_after_end_and_future_dates_are_refused_before_any_request() -> None:
    with pytest.raises(
        InvalidRequestError, match=r"start 2024-03-02T00:00:00\+00:00 is not before"
    ):
        TimeRange.checked("2024-03-02", "2024-03-01")
    now = dt.datetime(2024, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(InvalidRequestError, match=r"is in the future \(now is 2024-03-01T12:00"):
        TimeRange.checked("2024-03-05", "2024-03-06", now=now)
    assert TimeRange.checked("2024-03-01", "2024-03-02", now=now).end == now


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match=r"page_limit 1001 is out of range for spot"):
        BinanceRestConfig(page_limit=1001)
    with pytest.raises(InvalidRequestError, match=r"unknown market 'coin_m'"):
        BinanceRestConfig(market="coin_m")
    with pytest.raises(InvalidRequestError, match=r"unknown Binance preset 'kraken'"):
        config_from_preset("kraken")


def test_presets_name_the_documented_endpoints() -> None:
    assert BASE_URLS == {
        "spot": "https://api.binance.com",
        "futures_um": "https://fapi.binance.com",
        "binance_us": "https://api.binance.us",
        "spot_testnet": "https://testnet.binance.vision",
    }
    futures = config_from_preset("futures_um", timeout_s=3.0)
    assert (futures.base_url, futures.market, futures.weight_limit_per_minute) == (
        "https://fapi.binance.com",
        "futures_um",
        2400,
    )
    assert futures.timeout_s == 3.0
    assert BinanceRestConfig.preset("spot_testnet").market == "spot"


# -- 429, 418 and transient failures ---------------------------------------------------------------


def test_429_waits_exactly_retry_after_then_returns_the_right_rows(btc_2500) -> None:
    fake, rows = btc_2500
    fake.script(Fault.rate_limited(retry_after=1, path="klines", skip=1))
    with BinanceRestClient(fast_config(fake)) as client:
        began = time.monotonic()
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(2500))
        elapsed = time.monotonic() - began
    assert frame.equals(klines_from_binance_rows(rows, "binance_rest"))
    assert client.stats.rate_limited == 1
    assert client.stats.rate_limit_wait_s == 1.0
    assert elapsed >= 1.0  # it really waited; no upper bound, a loaded CI machine is slower
    statuses = [r.status for r in fake.requests_to("klines")]
    assert statuses == [200, 429, 200, 200]


def test_429_beyond_its_own_budget_raises_naming_the_url(btc_2500) -> None:
    fake, _ = btc_2500
    fake.script(*[Fault.rate_limited(retry_after=0, path="klines") for _ in range(3)])
    with (
        BinanceRestClient(fast_config(fake, max_rate_limit_retries=2)) as client,
        pytest.raises(
            BinanceAPIError, match=r"GET .*/api/v3/klines\?.* rate limited \(429\) 3 times"
        ),
    ):
        client.fetch_klines("BTCUSDT", "1m", minutes(10))
    assert client.stats.rate_limited == 3


def test_418_stops_at_once_and_no_further_requests_are_sent(btc_2500) -> None:
    fake, _ = btc_2500
    fake.script(Fault.banned(retry_after=120, path="klines", skip=1))
    with BinanceRestClient(fast_config(fake)) as client:
        with pytest.raises(BinanceIPBannedError, match=r"418 \(IP banned\).*Retry-After 120 s"):
            client.fetch_klines("BTCUSDT", "1m", minutes(2500))
        assert len(fake.requests_to("klines")) == 2
        with pytest.raises(BinanceIPBannedError, match=r"not sending GET .* banned this IP"):
            client.fetch_klines("BTCUSDT", "1m", minutes(10))
    assert len(fake.requests_to("klines")) == 2
    assert client.stats.retries == 0


def test_500s_are_retried_then_succeed(btc_2500) -> None:
    fake, rows = btc_2500
    fake.script(*[Fault.server_error(500, path="klines") for _ in range(3)])
    with BinanceRestClient(fast_config(fake, max_retries=3)) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(1000))
    assert frame.equals(klines_from_binance_rows(rows[:1000], "binance_rest"))
    assert client.stats.retries == 3
    assert [r.status for r in fake.requests_to("klines")] == [500, 500, 500, 200]
    assert client.stats.backoff_wait_s > 0


def test_500s_beyond_max_retries_raise_naming_url_and_attempts(btc_2500) -> None:
    fake, _ = btc_2500
    fake.script(*[Fault.server_error(500, path="klines") for _ in range(4)])
    with (
        BinanceRestClient(fast_config(fake, max_retries=3)) as client,
        pytest.raises(BinanceAPIError) as raised,
    ):
        client.fetch_klines("BTCUSDT", "1m", minutes(10))
    message = str(raised.value)
    assert f"GET {fake.url}/api/v3/klines?symbol=BTCUSDT&interval=1m" in message
    assert "failed after 4 attempts (max_retries=3)" in message
    assert "last failure: HTTP 500: code -1000" in message
    assert len(fake.requests_to("klines")) == 4


def test_a_timeout_on_page_two_is_retried_and_the_result_is_complete_without_duplicates(
    btc_2500,
) -> None:
    fake, rows = btc_2500
    fake.script(Fault.delay(1.0, path="klines", skip=1))
    with BinanceRestClient(fast_config(fake, timeout_s=0.3)) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(2500))
    assert frame.equals(klines_from_binance_rows(rows, "binance_rest"))
    assert frame["open_time"].is_unique().all()
    assert client.stats.retries == 1
    assert client.stats.requests == 1 + 4  # exchangeInfo; pages 1, 2 (timed out), 2 again, 3
    assert len({r.params["startTime"] for r in fake.requests_to("klines")}) == 3


@pytest.mark.parametrize(
    "fault",
    [
        Fault.truncate(path="klines", skip=1),
        Fault.reset(path="klines", skip=1),
        Fault.bad_json(path="klines", skip=1),
        Fault.server_error(502, path="klines", skip=1),
        Fault.server_error(503, path="klines", skip=1),
    ],
    ids=["truncated-body", "connection-reset", "invalid-json", "502", "503"],
)
def test_broken_responses_are_retried(btc_2500, fault: Fault) -> None:
    fake, rows = btc_2500
    fake.script(fault)
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(2500))
    assert frame.equals(klines_from_binance_rows(rows, "binance_rest"))
    assert client.stats.retries == 1
    assert fake.pending_faults() == 0
    assert len(fake.requests_to("klines")) == 4


# -- request weight --------------------------------------------------------------------------------


def test_a_backfill_paced_by_weight_gets_no_429s_and_waits_for_the_window() -> None:
    series = synthetic_series("BTCUSDT", "1m", START, 1200)
    with FakeBinance({("BTCUSDT", "1m"): series}, weight_limit=10, window_s=1.0) as fake:
        config = fast_config(fake, page_limit=100, weight_limit_per_minute=10, weight_window_s=1.0)
        with BinanceRestClient(config) as client:
            frame = pl.concat(client.iter_kline_pages("BTCUSDT", "1m", minutes(1200)))
    assert frame.equals(klines_from_binance_rows(series.rows(), "binance_rest"))
    assert [r.status for r in fake.requests] == [200] * 12
    assert client.stats.rate_limited == 0
    assert client.stats.throttle_wait_s > 0
    assert client.stats.weight_used == 24


def test_without_pacing_the_same_backfill_meets_429s_the_control() -> None:
    series = synthetic_series("BTCUSDT", "1m", START, 1200)
    with FakeBinance({("BTCUSDT", "1m"): series}, weight_limit=10, window_s=1.0) as fake:
        config = fast_config(fake, page_limit=100, weight_limit_per_minute=10_000)
        with BinanceRestClient(config) as client:
            frame = pl.concat(client.iter_kline_pages("BTCUSDT", "1m", minutes(1200)))
    assert frame.height == 1200
    assert client.stats.rate_limited > 0
    assert 429 in [r.status for r in fake.requests]


def test_weight_used_by_others_on_the_ip_is_read_from_the_header() -> None:
    series = synthetic_series("BTCUSDT", "1m", START, 600)
    with FakeBinance({("BTCUSDT", "1m"): series}, weight_limit=10, window_s=1.0) as fake:
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": "100"}
        for _ in range(4):  # another process on the same IP uses 8 of the 10
            response = httpx.get(f"{fake.url}/api/v3/klines", params=params)
        assert response.headers["X-MBX-USED-WEIGHT-1M"] in {"8", "2", "4", "6"}
        config = fast_config(fake, page_limit=100, weight_limit_per_minute=10, weight_window_s=1.0)
        with BinanceRestClient(config) as client:
            frame = pl.concat(client.iter_kline_pages("BTCUSDT", "1m", minutes(600)))
    assert frame.height == 600
    assert client.stats.rate_limited == 0
    assert 429 not in [r.status for r in fake.requests]


def test_a_lower_published_limit_in_exchange_info_is_adopted(btc_2500) -> None:
    fake, _ = btc_2500
    fake.exchange_info = synthetic_exchange_info(["BTCUSDT"], weight_limit=1200)
    with BinanceRestClient(fast_config(fake)) as client:
        assert client.weight_limit == 6000
        client.validate("BTCUSDT", "1m")
        assert client.weight_limit == 1200


# -- markets, exchangeInfo -------------------------------------------------------------------------


def test_futures_use_the_fapi_paths_and_their_weights(btc_2500) -> None:
    fake, rows = btc_2500
    with BinanceRestClient(fast_config(fake, market="futures_um")) as client:
        frame = client.fetch_klines("BTCUSDT", "1m", minutes(2500))
    assert frame.equals(klines_from_binance_rows(rows, "binance_rest"))
    assert {r.path for r in fake.requests} == {"/fapi/v1/exchangeInfo", "/fapi/v1/klines"}
    assert client.stats.weight_used == 1 + 3 * 5  # exchangeInfo 1; klines limit 1000 weigh 5


def test_exchange_info_is_fetched_once_per_client(btc_2500) -> None:
    fake, _ = btc_2500
    with BinanceRestClient(fast_config(fake)) as client:
        client.fetch_klines("BTCUSDT", "1m", minutes(5))
        client.fetch_klines("BTCUSDT", "1m", minutes(5, START + 10 * MINUTE))
        client.validate("BTCUSDT", "5m")
    assert len(fake.requests_to("exchangeInfo")) == 1
    assert client.stats.weight_used == 20 + 2 * 2
    with BinanceRestClient(fast_config(fake)) as second:
        second.validate("BTCUSDT", "1m")
    assert len(fake.requests_to("exchangeInfo")) == 2


def test_check_symbols_names_every_unknown_symbol_after_one_exchange_info_request(
    btc_2500,
) -> None:
    fake, _ = btc_2500
    with BinanceRestClient(fast_config(fake)) as client:
        client.check_symbols(["BTCUSDT"])
        with pytest.raises(UnknownSymbolError) as raised:
            client.check_symbols(["BTCUSDT", "DOTUSDT", "BTCUSTD"])
    message = str(raised.value)
    assert "DOTUSDT, BTCUSTD are not listed on Binance spot" in message
    assert "BTCUSTD (did you mean BTCUSDT?)" in message
    assert "'BTCUSDT'" not in message and "exchangeInfo" in message
    assert len(fake.requests_to("exchangeInfo")) == 1
    assert fake.requests_to("klines") == []


def test_a_rest_source_asks_for_exchange_info_once_per_run_not_once_per_symbol() -> None:
    rows = {
        (symbol, "1m"): synthetic_kline_rows(symbol, "1m", START, 30)
        for symbol in ("BTCUSDT", "ETHUSDT", "DOTUSDT")
    }
    with FakeBinance(rows) as fake:
        source = RestSource(fast_config(fake))
        source.check_symbols(["BTCUSDT", "ETHUSDT", "DOTUSDT"])
        frames = [source.fetch_klines(s, "1m", minutes(30)) for s in ("BTCUSDT", "ETHUSDT")]
        source.fetch_klines("DOTUSDT", "1m", minutes(10))
    assert [frame.height for frame in frames] == [30, 30]
    assert len(fake.requests_to("exchangeInfo")) == 1  # weight 20, not 20 per symbol and day
    assert len(fake.requests_to("klines")) == 3


def test_a_404_names_the_url_and_says_the_base_url_or_market_is_wrong(btc_2500) -> None:
    fake, _ = btc_2500
    config = fast_config(fake, base_url=f"{fake.url}/wrong")
    with BinanceRestClient(config) as client, pytest.raises(BinanceAPIError) as raised:
        client.fetch_klines("BTCUSDT", "1m", minutes(5))
    message = str(raised.value)
    assert f"GET {fake.url}/wrong/api/v3/exchangeInfo" in message
    assert "HTTP 404 (empty body)" in message
    assert "no such endpoint" in message and "base_url" in message and "market" in message
    assert not message.rstrip().endswith(":")


def test_a_kline_value_that_is_not_a_number_names_symbol_row_open_time_and_field() -> None:
    rows = synthetic_kline_rows("BTCUSDT", "1m", START, 10)
    rows[3] = [*rows[3][:4], "n/a", *rows[3][5:]]  # close
    with (
        FakeBinance({("BTCUSDT", "1m"): rows}) as fake,
        BinanceRestClient(fast_config(fake)) as client,
        pytest.raises(SourceDataError) as raised,
    ):
        client.fetch_klines("BTCUSDT", "1m", minutes(10))
    message = str(raised.value)
    assert "BTCUSDT 1m kline row 3" in message
    assert "open time 2024-03-01T00:03:00+00:00" in message
    assert "close is 'n/a', not a number" in message


def test_a_symbol_not_trading_is_served_with_a_warning(caplog) -> None:
    rows = synthetic_kline_rows("LUNAUSDT", "1h", START, 5)
    info = synthetic_exchange_info(["LUNAUSDT"], statuses={"LUNAUSDT": "BREAK"})
    with (
        FakeBinance({("LUNAUSDT", "1h"): rows}, exchange_info=info) as fake,
        BinanceRestClient(fast_config(fake)) as client,
        caplog.at_level(logging.WARNING),
    ):
        frame = client.fetch_klines(
            "LUNAUSDT", "1h", TimeRange(START, START + dt.timedelta(hours=5))
        )
    assert frame.height == 5
    assert "LUNAUSDT on spot has status BREAK (not TRADING)" in caplog.text


def test_server_time_and_ping(btc_2500) -> None:
    fake, _ = btc_2500
    with BinanceRestClient(fast_config(fake)) as client:
        client.ping()
        assert abs(client.server_time_ms() - time.time() * 1000) < 5_000
    assert [r.path for r in fake.requests] == ["/api/v3/ping", "/api/v3/time"]


# -- the fake speaks Binance's wire format (later tests and benchmarks rely on it) -----------------


def test_the_fake_follows_binance_klines_selection_and_errors(btc_2500) -> None:
    fake, rows = btc_2500
    get = lambda path, **params: httpx.get(f"{fake.url}{path}", params=params)  # noqa: E731

    default = get("/api/v3/klines", symbol="BTCUSDT", interval="1m")
    assert default.status_code == 200
    assert default.json() == rows[-500:]  # no startTime: the most recent, default limit 500
    assert default.headers["X-MBX-USED-WEIGHT-1M"] == default.headers["X-MBX-USED-WEIGHT"]

    window = get(
        "/api/v3/klines",
        symbol="BTCUSDT",
        interval="1m",
        startTime=rows[10][0],
        endTime=rows[20][0],
        limit=5,
    )
    assert window.json() == rows[10:15]
    both_ends = get(
        "/api/v3/klines",
        symbol="BTCUSDT",
        interval="1m",
        startTime=rows[10][0],
        endTime=rows[20][0],
    )
    assert both_ends.json() == rows[10:21]  # endTime is inclusive of an open time

    row = window.json()[0]
    assert [type(v).__name__ for v in row] == ["int"] + ["str"] * 5 + ["int", "str", "int"] + [
        "str"
    ] * 3
    assert row[-1] == "0"

    def error(path: str, **params: object) -> tuple[int, dict]:
        response = get(path, **params)
        return response.status_code, response.json()

    assert error("/api/v3/klines", symbol="NOPE", interval="1m") == (
        400,
        {"code": -1121, "msg": "Invalid symbol."},
    )
    assert error("/api/v3/klines", symbol="BTCUSDT", interval="7m") == (
        400,
        {"code": -1120, "msg": "Invalid interval."},
    )
    assert error("/fapi/v1/klines", symbol="BTCUSDT", interval="1s") == (
        400,
        {"code": -1120, "msg": "Invalid interval."},
    )
    assert error("/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1001) == (
        400,
        {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."},
    )
    unknown_path = get("/api/v3/nothing")  # Binance's nginx: 404 with an empty body
    assert (unknown_path.status_code, unknown_path.content) == (404, b"")
    assert unknown_path.headers["Content-Length"] == "0"
    assert len(get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1500).json()) == 1500
    assert get("/api/v3/ping").json() == {}
    assert set(get("/fapi/v1/time").json()) == {"serverTime"}
    assert [r.status for r in fake.requests][-4:] == [404, 200, 200, 200]


def test_the_fake_enforces_weight_with_binance_429() -> None:
    with FakeBinance({}, weight_limit=20, window_s=60.0) as fake:
        first = httpx.get(f"{fake.url}/api/v3/exchangeInfo")
        second = httpx.get(f"{fake.url}/api/v3/exchangeInfo")
    assert first.headers["X-MBX-USED-WEIGHT-1M"] == "20"
    assert second.status_code == 429
    assert 1 <= int(second.headers["Retry-After"]) <= 60
    assert second.json()["code"] == -1003
    assert "current limit is 20 request weight per 1 MINUTE" in second.json()["msg"]


# == aggregate trades ==============================================================================

HOUR = dt.timedelta(hours=1)
HOUR_MS = 3_600_000


def trades_in(rows: list[dict], time_range: TimeRange) -> pl.DataFrame:
    """What an exact fetch of ``time_range`` must return: the rows with T in [start, end)."""
    kept = [r for r in rows if time_range.start_ms <= r["T"] < time_range.end_ms]
    return agg_trades_from_binance_rows(kept, "binance_rest")


def assert_no_duplicates_or_holes(frame: pl.DataFrame) -> None:
    ids = frame["agg_trade_id"].to_list()
    assert ids == list(range(ids[0], ids[0] + len(ids)))


@pytest.fixture
def busy_hour() -> Iterator[tuple[FakeBinance, list[dict]]]:
    """6000 trades at ~0.25 s from START (about 25 minutes), then nothing."""
    trades = synthetic_agg_trades("BTCUSDT", START, 6000, mean_gap_ms=250)
    with FakeBinance(agg_trades={"BTCUSDT": trades}) as fake:
        yield fake, trades.rows()


@pytest.mark.parametrize("n_trades", [1, 999, 1000, 1001, 2500])
def test_agg_trades_paging_is_exact_and_takes_n_over_1000_plus_one_requests(
    busy_hour, n_trades: int
) -> None:
    fake, rows = busy_hour
    # the range ends just after trade n-1: the trades in it are exactly rows[:n]
    time_range = TimeRange(START, dt.datetime.fromtimestamp((rows[n_trades]["T"]) / 1000, UTC))
    assert rows[n_trades]["T"] > rows[n_trades - 1]["T"]
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_agg_trades("BTCUSDT", time_range)

    assert frame.equals(agg_trades_from_binance_rows(rows[:n_trades], "binance_rest"))
    assert_no_duplicates_or_holes(frame)
    requests = fake.requests_to("aggTrades")
    assert len(requests) == n_trades // 1000 + 1
    assert requests[0].params == {
        "symbol": "BTCUSDT",
        "startTime": str(rows[0]["T"]),
        "endTime": str(rows[n_trades]["T"] - 1),
        "limit": "1000",
    }
    for number, request in enumerate(requests[1:], start=1):  # then by id, exactly after the last
        assert request.params == {
            "symbol": "BTCUSDT",
            "fromId": str(rows[0]["a"] + 1000 * number),
            "limit": "1000",
        }
    assert client.stats.weight_used == 20 + 4 * len(requests)  # exchangeInfo 20, aggTrades 4


def test_multi_hour_range_walks_empty_hours_then_pages_by_id_through_quiet_hours() -> None:
    # 1500 trades, three silent hours, 2500 trades, five silent hours, 700 trades
    pauses = {1500: 3 * HOUR_MS, 4000: 5 * HOUR_MS}
    trades = synthetic_agg_trades("ETHUSDT", START, 4700, mean_gap_ms=1000, pauses=pauses)
    rows = trades.rows()
    time_range = TimeRange(START - 2 * HOUR - MINUTE, START + 12 * HOUR)
    with (
        FakeBinance(agg_trades={"ETHUSDT": trades}) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        pages = list(client.iter_agg_trade_pages("ETHUSDT", time_range))
    frame = pl.concat(pages)
    assert frame.equals(trades_in(rows, time_range)) and frame.height == 4700
    assert_no_duplicates_or_holes(frame)
    assert all(page.schema == pl.Schema(AGG_TRADE_SCHEMA) for page in pages)
    windows = [r.params for r in fake.requests_to("aggTrades") if "startTime" in r.params]
    starts = [int(w["startTime"]) for w in windows]
    assert starts == [time_range.start_ms + k * HOUR_MS for k in range(3)]  # 2 empty hours
    assert all(int(w["endTime"]) - int(w["startTime"]) == HOUR_MS - 1 for w in windows)
    by_id = [int(r.params["fromId"]) for r in fake.requests_to("aggTrades")[3:]]
    assert by_id == [rows[0]["a"] + k * 1000 for k in range(1, 5)]  # 1000 a page, 4700 in all
    assert [page.height for page in pages] == [1000] * 4 + [700]


def test_range_edges_keep_trades_at_start_and_drop_trades_at_end() -> None:
    ms = int(START.timestamp() * 1000)
    times = [ms - 1, ms, ms, ms + 5, ms + 9, ms + 10, ms + 10, ms + 11]
    rows = [
        {"a": 100 + i, "p": "1.00000000", "q": "2.00000000", "f": 7 + i, "l": 7 + i, "T": t,
         "m": i % 2 == 0, "M": True}
        for i, t in enumerate(times)
    ]  # fmt: skip
    time_range = TimeRange(START, START + dt.timedelta(milliseconds=10))
    with (
        FakeBinance(agg_trades={"BTCUSDT": rows}) as fake,
        BinanceRestClient(fast_config(fake, trades_page_limit=2)) as client,
    ):
        frame = client.fetch_agg_trades("BTCUSDT", time_range)
        assert frame["agg_trade_id"].to_list() == [101, 102, 103, 104]
        assert frame.equals(trades_in(rows, time_range))
        assert [r.params.get("fromId") for r in fake.requests_to("aggTrades")] == [
            None, "103", "105",
        ]  # fmt: skip
        fake.clear_log()
        # a range with sub-millisecond ends: [ms + 0.5, ms + 9.5) holds the trades at ms+5, ms+9
        half = dt.timedelta(microseconds=500)
        inner = TimeRange(START + half, START + dt.timedelta(milliseconds=9) + half)
        assert client.fetch_agg_trades("BTCUSDT", inner)["agg_trade_id"].to_list() == [103, 104]
        first = fake.requests_to("aggTrades")[0].params
        assert (first["startTime"], first["endTime"]) == (str(ms), str(ms + 9))


def test_a_range_without_trades_is_an_empty_contract_frame(busy_hour) -> None:
    fake, _ = busy_hour
    time_range = TimeRange(START - 3 * HOUR + MINUTE, START)
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_agg_trades("BTCUSDT", time_range)
    assert frame.height == 0 and frame.schema == pl.Schema(AGG_TRADE_SCHEMA)
    windows = [(r.params["startTime"], r.params["endTime"]) for r in fake.requests_to("aggTrades")]
    assert [(int(a), int(b)) for a, b in windows] == [
        (time_range.start_ms, time_range.start_ms + HOUR_MS - 1),
        (time_range.start_ms + HOUR_MS, time_range.start_ms + 2 * HOUR_MS - 1),
        (time_range.start_ms + 2 * HOUR_MS, time_range.end_ms - 1),
    ]


@pytest.mark.shared_data
def test_real_agg_trades_body_round_trips_into_the_contract_with_exact_values(
    shared_binance,
) -> None:
    trades = load_real_agg_trades(shared_binance)
    info = load_real_exchange_info(shared_binance)
    rows = trades["BTCUSDT"]
    time_range = TimeRange(
        dt.datetime(2021, 10, 22, 23, 8, tzinfo=UTC), dt.datetime(2021, 10, 22, 23, 9, tzinfo=UTC)
    )
    with (
        FakeBinance(agg_trades=trades, exchange_info=info) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        frame = client.fetch_agg_trades("BTCUSDT", time_range)

    assert fake.requests_to("aggTrades")[0].params["startTime"] == "1634944080000"
    assert frame.height == 10
    assert frame.schema == pl.Schema(AGG_TRADE_SCHEMA)
    assert frame.row(0, named=True) == {
        "agg_trade_id": 966492862,
        "ts": dt.datetime(2021, 10, 22, 23, 8, 16, 633000, tzinfo=UTC),
        "price": 60759.6,
        "qty": 0.00841,
        "first_trade_id": 1111480471,
        "last_trade_id": 1111480471,
        "is_buyer_maker": False,
        "source": "binance_rest",
    }
    assert frame.row(2)[6] is True  # "m": true, the taker sold
    assert frame["agg_trade_id"].to_list() == [r["a"] for r in rows]
    assert frame["price"].to_list() == [float(r["p"]) for r in rows]
    assert frame["qty"].to_list() == [float(r["q"]) for r in rows]
    assert [int(t.timestamp() * 1000) for t in frame["ts"]] == [r["T"] for r in rows]
    assert_no_duplicates_or_holes(frame)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limited(retry_after=0, path="aggTrades", skip=1),
        Fault.server_error(500, path="aggTrades", skip=2),
        Fault.server_error(503, path="aggTrades", skip=1),
        Fault.truncate(path="aggTrades", skip=2),
        Fault.reset(path="aggTrades", skip=1),
    ],
    ids=["429", "500", "503", "truncated-body", "connection-reset"],
)
def test_failures_during_agg_trade_paging_are_retried_without_duplicates_or_holes(
    busy_hour, fault: Fault
) -> None:
    fake, rows = busy_hour
    fake.script(fault)
    time_range = TimeRange(START, START + 30 * MINUTE)
    with BinanceRestClient(fast_config(fake)) as client:
        frame = client.fetch_agg_trades("BTCUSDT", time_range)
    assert frame.equals(trades_in(rows, time_range)) and frame.height == 6000
    assert_no_duplicates_or_holes(frame)
    assert fake.pending_faults() == 0
    sent = fake.requests_to("aggTrades")
    assert len(sent) == 7 + 1  # 6 full pages, the empty page that ends it, one repeated
    assert len({tuple(sorted(r.params.items())) for r in sent}) == 7
    assert client.stats.rate_limited + client.stats.retries == 1


def test_unknown_symbol_for_agg_trades_and_depth(busy_hour) -> None:
    fake, _ = busy_hour
    with BinanceRestClient(fast_config(fake)) as client:
        with pytest.raises(UnknownSymbolError, match=r"'BTCUSTD' is not listed.*BTCUSDT\?"):
            client.fetch_agg_trades("BTCUSTD", TimeRange(START, START + MINUTE))
        with pytest.raises(UnknownSymbolError, match=r"'NOPE' is not listed on Binance spot"):
            client.depth_snapshot("NOPE", 100)
        # a symbol the exchange refuses on its own (-1121) maps to the same error
        with pytest.raises(UnknownSymbolError, match=r"symbol=GONE.*-1121 Invalid symbol"):
            list(client.iter_agg_trade_pages("GONE", TimeRange(START, START + MINUTE)))
    assert [r.params.get("symbol") for r in fake.requests_to("aggTrades")] == ["GONE"]
    assert fake.requests_to("depth") == []


def test_futures_agg_trades_use_fapi_and_weigh_20(busy_hour) -> None:
    fake, rows = busy_hour
    time_range = TimeRange(START, START + 10 * MINUTE)
    with BinanceRestClient(fast_config(fake, market="futures_um")) as client:
        frame = client.fetch_agg_trades("BTCUSDT", time_range)
    assert frame.equals(trades_in(rows, time_range))
    assert {r.path for r in fake.requests} == {"/fapi/v1/exchangeInfo", "/fapi/v1/aggTrades"}
    assert client.stats.weight_used == 1 + 20 * len(fake.requests_to("aggTrades"))


def test_agg_trade_pages_that_break_the_id_order_are_refused() -> None:
    good = synthetic_agg_trades("BTCUSDT", START, 5).rows()
    swapped = [good[0], good[2], good[1], *good[3:]]
    with pytest.raises(SourceDataError, match=r"aggregate trade 1 is malformed"):
        agg_trades_from_binance_rows([good[0], {**good[1], "m": "false"}])
    with (
        FakeBinance(agg_trades={"BTCUSDT": good}) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        fake.agg_trades["BTCUSDT"].rows = swapped  # a server that sends ids out of order
        with pytest.raises(SourceDataError, match=r"id 1000001 after 1000002"):
            client.fetch_agg_trades("BTCUSDT", TimeRange(START, START + MINUTE))


# == depth snapshots ===============================================================================


@pytest.mark.shared_data
def test_real_depth_body_gives_a_snapshot_with_exact_levels(shared_binance) -> None:
    depths = load_real_depths(shared_binance)
    info = synthetic_exchange_info(sorted(depths))
    with (
        FakeBinance(depth=depths, exchange_info=info) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        before = dt.datetime.now(UTC)
        snapshot = client.depth_snapshot("BTCUSDT", limit=5)
        nkn = client.depth_snapshot("NKNUSDT")  # a real limit=1000 answer: 609 bids, 1000 asks

    assert snapshot.symbol == "BTCUSDT"
    assert snapshot.last_update_id == 14527958487
    assert snapshot.bids == [
        (60650.0, 0.00213), (60648.08, 0.06346), (60648.01, 0.0643), (60648.0, 0.09332),
        (60647.53, 0.19622),
    ]  # fmt: skip
    assert snapshot.asks[:3] == [(60650.01, 0.61982), (60653.68, 0.00696), (60653.69, 0.00026)]
    assert len(snapshot.asks) == 5
    assert before <= snapshot.received_at <= dt.datetime.now(UTC)
    assert snapshot.transaction_time is None  # spot sends no "T"
    assert (nkn.last_update_id, len(nkn.bids), len(nkn.asks)) == (499869752, 609, 1000)
    assert nkn.bids[0] == (0.3521, 672.0) and nkn.asks[0] == (0.3525, 3959.0)
    assert [r.params["limit"] for r in fake.requests_to("depth")] == ["5", "1000"]
    assert client.stats.weight_used == 20 + 5 + 50

    row = snapshot.to_frame(levels=3)
    assert row.schema == pl.Schema(DEPTH_SNAPSHOT_SCHEMA)
    assert row.row(0, named=True) == {
        "ts": snapshot.received_at,
        "last_update_id": 14527958487,
        "bid_prices": [60650.0, 60648.08, 60648.01],
        "bid_sizes": [0.00213, 0.06346, 0.0643],
        "ask_prices": [60650.01, 60653.68, 60653.69],
        "ask_sizes": [0.61982, 0.00696, 0.00026],
        "source": "binance_rest",
    }


@pytest.mark.parametrize(
    ("market", "limit", "weight"),
    [
        ("spot", 1, 5), ("spot", 100, 5), ("spot", 101, 25), ("spot", 500, 25),
        ("spot", 501, 50), ("spot", 1000, 50), ("spot", 1001, 250), ("spot", 5000, 250),
        ("futures_um", 5, 2), ("futures_um", 50, 2), ("futures_um", 100, 5),
        ("futures_um", 500, 10), ("futures_um", 1000, 20),
    ],
)  # fmt: skip
def test_depth_weight_by_limit_is_charged_and_matches_the_server(
    market: str, limit: int, weight: int
) -> None:
    book = {"BTCUSDT": synthetic_depth_body(1200)}
    with FakeBinance(depth=book, window_s=1e9) as fake:  # one weight window for the whole test
        with BinanceRestClient(fast_config(fake, market=market)) as client:
            client.validate_symbol("BTCUSDT")
            used_before = client.stats.weight_used
            snapshot = client.depth_snapshot("BTCUSDT", limit)
        response = fake.requests_to("depth")[0]
        assert client.stats.weight_used - used_before == weight == client.depth_weight(limit)
        assert response.params["limit"] == str(limit)
        used = httpx.get(f"{fake.url}{response.path}", params=response.params).headers
    assert int(used["X-MBX-USED-WEIGHT-1M"]) == used_before + 2 * weight
    assert len(snapshot.bids) == len(snapshot.asks) == min(limit, 1200)
    assert (snapshot.transaction_time is not None) == (market == "futures_um")


@pytest.mark.parametrize(
    ("market", "limit", "expected"),
    [
        ("spot", 0, r"depth limit 0 is out of range for spot; expected 1..5000"),
        ("spot", 5001, r"depth limit 5001 is out of range"),
        ("futures_um", 7, r"depth limit 7 is not offered on Binance futures_um; expected one of 5"),
        ("futures_um", 5000, r"depth limit 5000 is not offered"),
    ],
)
def test_invalid_depth_limits_are_refused_before_any_request(
    market: str, limit: int, expected: str
) -> None:
    with FakeBinance(depth={"BTCUSDT": synthetic_depth_body(10)}) as fake:
        with (
            BinanceRestClient(fast_config(fake, market=market)) as client,
            pytest.raises(InvalidRequestError, match=expected),
        ):
            client.depth_snapshot("BTCUSDT", limit)
        assert fake.requests == []


def test_depth_snapshots_poll_into_contract_rows_and_bad_books_are_refused() -> None:
    book = synthetic_depth_body(50, last_update_id=7)
    with (
        FakeBinance(depth={"BTCUSDT": book}) as fake,
        BinanceRestClient(fast_config(fake)) as client,
    ):
        polled = [client.depth_snapshot("BTCUSDT", 20) for _ in range(3)]
        fake.script(Fault.server_error(502, path="depth"))
        polled.append(client.depth_snapshot("BTCUSDT", 20))  # a 5xx is retried
    frame = depth_snapshots_frame(polled, levels=10)
    assert frame.schema == pl.Schema(DEPTH_SNAPSHOT_SCHEMA) and frame.height == 4
    assert frame["ts"].is_sorted() and frame["last_update_id"].to_list() == [7] * 4
    assert frame["bid_prices"][0].to_list() == [float(p) for p, _ in book["bids"][:10]]
    assert frame["ask_sizes"][0].to_list() == [float(q) for _, q in book["asks"][:10]]
    assert depth_snapshots_frame([]).schema == pl.Schema(DEPTH_SNAPSHOT_SCHEMA)
    assert polled[0].to_frame()["bid_prices"][0].len() == 20  # levels=None keeps all

    received = dt.datetime(2024, 1, 1, tzinfo=UTC)
    crossed = {"lastUpdateId": 1, "bids": [["10.0", "1"]], "asks": [["9.5", "1"]]}
    unsorted = {"lastUpdateId": 1, "bids": [["9.0", "1"], ["9.5", "1"]], "asks": []}
    with pytest.raises(SourceDataError, match=r"crossed: best bid 10.0 >= best ask 9.5"):
        depth_snapshot_from_binance(crossed, "X", received)
    with pytest.raises(SourceDataError, match=r"bids level 1 price 9.5 follows 9.0"):
        depth_snapshot_from_binance(unsorted, "X", received)
    with pytest.raises(SourceDataError, match=r"expected an object with lastUpdateId"):
        depth_snapshot_from_binance([], "X", received)
    assert isinstance(depth_snapshot_from_binance(book, "X", received), DepthSnapshot)


# == the fake speaks Binance's aggTrades and depth =================================================


def test_the_fake_follows_binance_agg_trades_and_depth_rules() -> None:
    trades = synthetic_agg_trades("BTCUSDT", START, 2000, mean_gap_ms=250)
    with FakeBinance(agg_trades={"BTCUSDT": trades}, window_s=1e9) as fake:  # one weight window
        fake.add_depth("BTCUSDT", synthetic_depth_body(6000))
        check_fake_agg_trades_and_depth(fake.url, trades.rows())


def check_fake_agg_trades_and_depth(url: str, rows: list[dict]) -> None:
    get = lambda path, **params: httpx.get(f"{url}{path}", params=params)  # noqa: E731
    first = rows[0]["a"]

    latest = get("/api/v3/aggTrades", symbol="BTCUSDT")
    assert latest.json() == rows[-500:]  # no fromId/startTime: the most recent, default 500
    assert latest.headers["X-MBX-USED-WEIGHT-1M"] == "4"
    assert (
        get("/api/v3/aggTrades", symbol="BTCUSDT", fromId=first + 10, limit=3).json()
        == (rows[10:13])
    )
    window = get("/api/v3/aggTrades", symbol="BTCUSDT", startTime=rows[5]["T"],
                 endTime=rows[8]["T"]).json()  # fmt: skip
    assert window[0]["T"] >= rows[5]["T"] and window[-1]["T"] == rows[8]["T"]  # both inclusive
    assert list(window[0]) == ["a", "p", "q", "f", "l", "T", "m", "M"]
    futures = get("/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=first, limit=2)
    assert list(futures.json()[0]) == ["a", "p", "q", "f", "l", "T", "m"]  # futures: no "M"
    assert int(futures.headers["X-MBX-USED-WEIGHT-1M"]) == 4 + 20 + 4 + 4

    too_wide = get("/api/v3/aggTrades", symbol="BTCUSDT", startTime=0, endTime=HOUR_MS)
    assert (too_wide.status_code, too_wide.json()) == (
        400,
        {"code": -1127, "msg": "More than 1 hours between startTime and endTime."},
    )
    just_under = get("/api/v3/aggTrades", symbol="BTCUSDT", startTime=0, endTime=HOUR_MS - 1)
    assert just_under.status_code == 200
    assert get("/api/v3/aggTrades", symbol="BTCUSDT", limit=1001).json()["code"] == -1130
    assert get("/api/v3/aggTrades", symbol="NOPE").json() == {
        "code": -1121,
        "msg": "Invalid symbol.",
    }
    assert all(r["l"] + 1 == n["f"] for r, n in zip(rows, rows[1:], strict=False))

    default = get("/api/v3/depth", symbol="BTCUSDT").json()
    assert list(default) == ["lastUpdateId", "bids", "asks"] and len(default["bids"]) == 100
    assert len(get("/api/v3/depth", symbol="BTCUSDT", limit=6000).json()["asks"]) == 5000
    fut = get("/fapi/v1/depth", symbol="BTCUSDT").json()
    assert list(fut) == ["lastUpdateId", "E", "T", "bids", "asks"] and len(fut["bids"]) == 500
    assert get("/fapi/v1/depth", symbol="BTCUSDT", limit=7).json()["code"] == -1130
    assert get("/api/v3/depth", symbol="BTCUSDT", limit=5000).headers["X-MBX-USED-WEIGHT"]
