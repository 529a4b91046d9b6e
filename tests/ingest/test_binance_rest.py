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

from dagster_project.errors import (
    BinanceAPIError,
    BinanceIPBannedError,
    InvalidRequestError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from dagster_project.ingest.binance_rest import (
    BASE_URLS,
    BinanceRestClient,
    BinanceRestConfig,
    config_from_preset,
)
from dagster_project.klines import RAW_KLINE_SCHEMA, TimeRange, klines_from_binance_rows
from tests.fakes.binance_server import (
    FakeBinance,
    Fault,
    load_real_exchange_info,
    load_real_klines,
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
    assert len(get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1500).json()) == 1500
    assert get("/api/v3/ping").json() == {}
    assert set(get("/fapi/v1/time").json()) == {"serverTime"}
    assert [r.status for r in fake.requests][-4:] == [400, 200, 200, 200]


def test_the_fake_enforces_weight_with_binance_429() -> None:
    with FakeBinance({}, weight_limit=20, window_s=60.0) as fake:
        first = httpx.get(f"{fake.url}/api/v3/exchangeInfo")
        second = httpx.get(f"{fake.url}/api/v3/exchangeInfo")
    assert first.headers["X-MBX-USED-WEIGHT-1M"] == "20"
    assert second.status_code == 429
    assert 1 <= int(second.headers["Retry-After"]) <= 60
    assert second.json()["code"] == -1003
    assert "current limit is 20 request weight per 1 MINUTE" in second.json()["msg"]
