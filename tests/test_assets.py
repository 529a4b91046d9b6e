"""End to end: the assets materialized in process on a temporary lake and Dagster instance."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from dagster_project.assets.catalog import catalog
from dagster_project.assets.curated import curated_klines
from dagster_project.assets.raw import raw_klines
from dagster_project.core.lake import Lake, connect
from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key
from dagster_project.resources import DuckDBResource, LakeResource, MarketSourceResource
from tests.fakes.binance_server import FakeBinance, Fault, synthetic_kline_rows

DAY = dt.date(2024, 3, 1)
KEY = str(day_symbol_key(DAY, "BTCUSDT"))
RAW = {"symbol": "BTCUSDT", "interval": "1m", "date": DAY}


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, ["BTCUSDT", "ETHUSDT"])
        yield instance


def resources(lake_root, source: MarketSourceResource | None = None) -> dict:
    return {
        "lake": LakeResource(root=str(lake_root)),
        "duckdb": DuckDBResource(),
        "market_source": source or MarketSourceResource(),
    }


def materialize_partition(instance, lake_root, key=KEY, source=None, raise_on_error=True):
    return dg.materialize(
        [raw_klines, curated_klines],
        partition_key=key,
        instance=instance,
        resources=resources(lake_root, source),
        raise_on_error=raise_on_error,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The step failure's message and those of its causes (the library's own exception)."""
    error = result.get_step_failure_events()[0].event_specific_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return " | ".join(messages)


def test_simulator_partition_lands_curates_and_passes_every_check(tmp_path, instance):
    result = materialize_partition(instance, tmp_path)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 11
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    lake = Lake(tmp_path)
    raw = lake.read_partition("raw", "klines", RAW)
    assert raw.height == 1440 and set(raw["source"]) == {"simulator"}
    for interval, bars in {"1m": 1440, "5m": 288, "15m": 96, "1h": 24}.items():
        curated = lake.read_partition("curated", "klines", {**RAW, "interval": interval})
        assert curated.height == bars and curated["is_complete"].all()


def test_rematerializing_a_partition_gives_the_same_rows(tmp_path, instance):
    lake = Lake(tmp_path)
    materialize_partition(instance, tmp_path)
    first = lake.read_partition("raw", "klines", RAW).drop("ingested_at")
    materialize_partition(instance, tmp_path)
    assert lake.read_partition("raw", "klines", RAW).drop("ingested_at").equals(first)


def test_catalog_asset_builds_views_over_materialized_partitions(tmp_path, instance):
    for symbol in ("BTCUSDT", "ETHUSDT"):
        materialize_partition(instance, tmp_path, key=str(day_symbol_key(DAY, symbol)))
    dg.materialize([catalog], instance=instance, resources=resources(tmp_path))
    con = connect(Lake(tmp_path).catalog_path, read_only=True)
    counts = con.sql(
        "select symbol, interval, count(*) from klines group by all order by all"
    ).fetchall()
    assert ("BTCUSDT", "1m", 1440) in counts and ("ETHUSDT", "1h", 24) in counts
    assert con.sql("select count(*) from raw_klines").fetchall() == [(2880,)]
    assert con.sql("select count(*) from kline_gaps").fetchall() == [(0,)]


def test_partition_from_binance_rest_through_a_local_server(tmp_path, instance):
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    rows = synthetic_kline_rows("BTCUSDT", "1m", start, 1440)
    del rows[100:103]  # the exchange has no bars for 3 minutes
    with FakeBinance({("BTCUSDT", "1m"): rows}) as server:
        source = MarketSourceResource(kind="binance", rest_base_url=server.url)
        result = materialize_partition(instance, tmp_path, source=source)
        assert len(server.requests_to("klines")) == 2
    lake = Lake(tmp_path)
    raw = lake.read_partition("raw", "klines", RAW)
    assert raw.height == 1437 and set(raw["source"]) == {"binance_rest"}
    gaps = lake.read_partition("curated", "kline_gaps", RAW)
    assert gaps.rows() == [
        (start + dt.timedelta(minutes=100), start + dt.timedelta(minutes=103), 3)
    ]
    gap_check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "gap_report"
    )
    assert not gap_check.passed and gap_check.severity == dg.AssetCheckSeverity.WARN


def test_failing_source_leaves_the_previous_partition_intact(tmp_path, instance):
    lake = Lake(tmp_path)
    materialize_partition(instance, tmp_path)
    before = lake.read_partition("raw", "klines", RAW)
    rows = synthetic_kline_rows("BTCUSDT", "1m", dt.datetime(2024, 3, 1, tzinfo=dt.UTC), 1440)
    with FakeBinance({("BTCUSDT", "1m"): rows}) as server:
        server.script(Fault.banned(retry_after=60, path="klines", skip=1))  # 418 on the 2nd page
        source = MarketSourceResource(kind="binance", rest_base_url=server.url)
        result = materialize_partition(instance, tmp_path, source=source, raise_on_error=False)
    assert not result.success
    assert "BinanceIPBannedError" in failure_message(result)
    assert lake.read_partition("raw", "klines", RAW).equals(before)
    leaf = lake.partition_dir("raw", "klines", RAW)
    assert [p.name for p in leaf.iterdir() if ".sha256-" not in p.name] == ["part-0.parquet"]


def test_unknown_symbol_fails_with_a_specific_message_and_writes_nothing(tmp_path, instance):
    instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, ["NOPEUSDT"])
    with FakeBinance({("BTCUSDT", "1m"): []}) as server:
        source = MarketSourceResource(kind="binance", rest_base_url=server.url)
        result = materialize_partition(
            instance,
            tmp_path,
            key=str(day_symbol_key(DAY, "NOPEUSDT")),
            source=source,
            raise_on_error=False,
        )
    assert not result.success
    assert "UnknownSymbolError" in failure_message(result)
    assert "NOPEUSDT" in failure_message(result)
    assert not (tmp_path / "raw").exists()


def test_a_partition_in_the_future_is_refused(tmp_path, instance):
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    with pytest.raises(dg.DagsterUnknownPartitionError, match="2.*BTCUSDT"):
        # the daily partitions end at the last complete day, so Dagster refuses the key itself
        materialize_partition(instance, tmp_path, key=str(day_symbol_key(tomorrow, "BTCUSDT")))
    assert not (tmp_path / "raw").exists()


def test_simulator_partition_lands_trades_books_and_microstructure(tmp_path, instance):
    from dagster_project.assets.features import microstructure
    from dagster_project.assets.raw import raw_agg_trades, raw_depth_snapshots

    result = dg.materialize(
        [raw_klines, curated_klines, raw_agg_trades, raw_depth_snapshots, microstructure],
        partition_key=KEY,
        instance=instance,
        resources=resources(tmp_path, MarketSourceResource(depth_cadence_s=10.0)),
    )
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []
    lake = Lake(tmp_path)
    books = lake.read_partition("raw", "depth_snapshots", {"symbol": "BTCUSDT", "date": DAY})
    assert books.height == 8640 and set(books["source"]) == {"simulator"}
    trades = lake.read_partition("raw", "agg_trades", {"symbol": "BTCUSDT", "date": DAY})
    klines = lake.read_partition("curated", "klines", RAW)
    assert trades["qty"].sum() == pytest.approx(klines["volume"].sum(), rel=1e-9)
    features = lake.read_partition("features", "microstructure", {"symbol": "BTCUSDT", "date": DAY})
    assert features.height == 1440
    assert features["mid"].null_count() == 0 and (features["spread_bps"] > 0).all()
    assert features["trade_count"].sum() == trades.height


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def logged_messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    return " | ".join(entry.user_message for entry in instance.all_logs(result.run_id))


def test_trades_from_a_klines_only_source_are_absent_not_failed(tmp_path, instance):
    """A real source without trades (freqtrade) leaves raw/agg_trades and microstructure
    unmaterialized, says why, and the run succeeds: nothing is simulated in their place."""
    from dagster_project.assets.features import microstructure
    from dagster_project.assets.raw import raw_agg_trades

    folder = tmp_path / "freqtrade"
    folder.mkdir()
    result = dg.materialize(
        [raw_agg_trades, microstructure],
        partition_key=KEY,
        instance=instance,
        resources=resources(
            tmp_path / "lake", MarketSourceResource(kind="freqtrade", freqtrade_dir=str(folder))
        ),
    )
    assert result.success and materialized_keys(result) == set()
    assert not result.get_asset_check_evaluations()
    logged = logged_messages(instance, result)
    assert "source 'freqtrade' has no trades: raw/agg_trades is absent" in logged
    assert not (tmp_path / "lake" / "raw").exists()


def test_depth_history_from_binance_rest_is_absent_with_the_reason(tmp_path, instance):
    from dagster_project.assets.raw import raw_depth_snapshots

    result = dg.materialize(
        [raw_depth_snapshots],
        partition_key=KEY,
        instance=instance,
        resources=resources(tmp_path, MarketSourceResource(kind="binance")),
    )
    assert result.success and materialized_keys(result) == set()
    assert "no order-book history and no recordings" in logged_messages(instance, result)
    assert not (tmp_path / "raw").exists()


def test_books_and_updates_replayed_from_a_real_recording(tmp_path, shared_binance):
    from dagster_project.assets.raw import raw_depth_snapshots, raw_depth_updates

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in ("spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"):
        (recordings / name).symlink_to(shared_binance / "streams" / name)
    source = MarketSourceResource(kind="binance", depth_recordings=str(recordings))
    lake = Lake(tmp_path / "lake")
    rows = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITION_NAME, ["BTCUSDT"])
        for day in (dt.date(2024, 8, 8), dt.date(2024, 8, 9)):
            result = dg.materialize(
                [raw_depth_snapshots, raw_depth_updates],
                partition_key=str(day_symbol_key(day, "BTCUSDT")),
                instance=instance,
                resources=resources(lake.root, source),
            )
            failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
            assert failed == {"snapshot_cadence"}  # a 10-minute recording is not a whole day
            keys = {"symbol": "BTCUSDT", "date": day}
            books = lake.read_partition("raw", "depth_snapshots", keys)
            updates = lake.read_partition("raw", "depth_updates", keys)
            assert set(books["source"]) == {"binance_replay"}
            assert books["ts"].dt.date().unique().to_list() == [day]
            assert updates["final_update_id"].is_sorted()
            rows[day] = (books.height, updates.height)
    assert sum(books for books, _ in rows.values()) == 650  # 23:54:16 .. 00:05:05, one a second
    assert sum(updates for _, updates in rows.values()) == 6493


def test_labels_and_windows_for_consecutive_simulator_days(tmp_path, instance):
    from dagster_project.assets.datasets import labels_and_windows

    lake = Lake(tmp_path)
    # the later day first: a day's labels need the next day's klines for their horizons
    for day in (DAY + dt.timedelta(days=1), DAY):
        result = dg.materialize(
            [raw_klines, curated_klines, labels_and_windows],
            partition_key=str(day_symbol_key(day, "BTCUSDT")),
            instance=instance,
            resources=resources(tmp_path),
        )
        check = next(
            e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "known_at_after_decision_time"
        )
        assert check.passed
    labels = lake.read_partition("labels", "labels", RAW)
    assert (
        labels.filter(~pl.col("is_leaky"))["known_at"]
        > labels.filter(~pl.col("is_leaky"))["decision_time"]
    ).all()
    assert set(labels.filter(pl.col("is_leaky"))["label"]) >= {"leaky_last_candle_up"}
    # the next day was landed first, so the first day's last decision times have their futures
    next_up = labels.filter(pl.col("label") == "next_up_15")
    assert next_up["decision_time"].max() == dt.datetime(2024, 3, 1, 23, 59, tzinfo=dt.UTC)
    windows = lake.read_partition("windows", "windows", {**RAW, "interval": "15m"})
    assert set(windows["dataset"]) == {
        "regular",
        "fullimage",
        "irregular_60",
        "irregular_80",
        "irregular_95",
    }


def test_splits_asset_assigns_each_configured_spec_on_one_calendar(tmp_path, instance):
    from dagster_project.assets.datasets import splits
    from ml.split_specs import SplitSpec, store_spec
    from ml.splits import SPLIT_LABELS
    from tests.helpers import simulated_dataset_lake

    lake = simulated_dataset_lake(tmp_path, "BTCUSDT")  # 03-01 and 03-02
    # a user's spec inside the two landed days, beside the built-in default (03-02 / 03-03)
    noon = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    store_spec(lake, SplitSpec("two_days", noon, noon + dt.timedelta(hours=18)))
    result = dg.materialize(
        [splits],
        instance=instance,
        resources=resources(tmp_path),
        run_config={"ops": {"windows__splits": {"config": {"specs": ["default", "two_days"]}}}},
    )
    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["no_training_label_reaches_test"]
    assert checks[0].passed and checks[0].metadata["leaking_rows"].value == 0
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["two_days_spec"] == {
        "train_start": None,
        "validation_start": "2024-03-01T12:00:00+00:00",
        "test_start": "2024-03-02T06:00:00+00:00",
        "test_end": None,
        "embargo_bars": 30,
    }
    assert metadata["default_test"] == 0 and metadata["default_validation"] > 0
    written = pl.read_parquet(lake.root / "windows" / "splits" / "spec=two_days" / "**/*.parquet")
    assert written.height == sum(metadata[f"two_days_{s}"] for s in SPLIT_LABELS)
    keys = {"spec": "two_days", "symbol": "BTCUSDT", "interval": "1m"}
    assigned = pl.read_parquet(lake.partition_files("windows", "splits", keys))
    regular = assigned.filter((pl.col("dataset") == "regular") & (pl.col("window_size") == 15))
    train, test = (regular.filter(pl.col("split") == s) for s in ("train", "test"))
    assert train.height > 0 and test.height > 0
    assert train["known_at"].max() < noon <= test["decision_time"].min() - dt.timedelta(hours=18)


def test_indicators_asset_writes_every_interval_with_its_availability(tmp_path, instance):
    from dagster_project.assets.features import indicators

    dg.materialize(
        [raw_klines, curated_klines, indicators],
        partition_key=KEY,
        instance=instance,
        resources=resources(tmp_path),
    )
    lake = Lake(tmp_path)
    for interval, bars in {"1m": 1440, "5m": 288, "15m": 96, "1h": 24}.items():
        keys = {**RAW, "interval": interval}
        frame = lake.read_partition("features", "indicators", keys)
        assert frame.height == bars and len(frame.columns) - 1 >= 40
        availability = lake.read_partition("features", "indicator_availability", keys)
        usable = set(availability.filter(pl.col("usable"))["indicator"])
        # a first day without history: only indicators of the bar itself are usable all day
        assert usable == {"hl2", "typical_price"}
