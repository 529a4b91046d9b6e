"""Split specs and windows/splits: one calendar for every series, immutable specs, and the
no_training_label_reaches_test check across series."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

import ml.split_specs as lake_splits
from dagster_project.assets.catalog import CATALOG_VIEWS
from dagster_project.core.lake import Lake, build_catalog, connect
from ml.split_specs import (
    BUILTIN_SPECS,
    DEFAULT_SPEC,
    SplitSpec,
    SplitSpecError,
    assign,
    assign_splits,
    no_training_label_reaches_test,
    resolve_spec,
    split_leaks,
    store_spec,
    stored_specs,
)
from ml.splits import time_split
from tests.helpers import simulated_dataset_lake

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
KEYS = ["symbol", "interval", "dataset", "window_size", "decision_time"]


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 3, day, hour, minute, tzinfo=UTC)


# BTC landed for four days, ETH for the last one only (the reproduced defect).
FOUR_DAYS = SplitSpec("four_days", validation_start=at(3), test_start=at(4))


def samples(symbol: str, days: range, seed: int = 0) -> pl.DataFrame:
    """1m samples like sql/windows/samples.sql's: regular, window 15, next_up_1."""
    dec = [at(d) + (i + 1) * MINUTE for d in days for i in range(1440)]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "interval": "1m",
            "dataset": "regular",
            "window_size": 15,
            "decision_time": dec,
            "label": "next_up_1",
            "value": np.random.default_rng(seed).integers(0, 2, len(dec)).astype(float),
            "known_at": [d + MINUTE for d in dec],
        },
        schema_overrides={
            "decision_time": pl.Datetime("us", "UTC"),
            "known_at": pl.Datetime("us", "UTC"),
        },
    )


def btc_four_days_eth_last() -> pl.DataFrame:
    return pl.concat([samples("BTCUSDT", range(1, 5)), samples("ETHUSDT", range(4, 5), seed=1)])


def cut_each_series_by_row_fraction(frame: pl.DataFrame) -> pl.DataFrame:
    """The old assignment: each series alone, its own rows cut 60/20/20 in time order."""
    parts = []
    for _, rows in frame.group_by(["symbol", "interval", "dataset", "window_size"]):
        times = rows.sort("decision_time")["decision_time"]
        val, test = (times[round(rows.height * share)] for share in (0.6, 0.8))
        parts.append(time_split(rows, val, test, embargo_bars=30))
    return pl.concat(parts).with_columns(spec=pl.lit(FOUR_DAYS.name))


# --- the spec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Weekly"}, "bad split spec name 'Weekly'"),
        ({"name": "a-b"}, "bad split spec name 'a-b'"),
        ({"name": ""}, "bad split spec name ''"),
        ({"validation_start": dt.datetime(2024, 3, 3)}, "validation_start must be a UTC datetime"),
        (
            {"test_start": dt.datetime(2024, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
            "test_start must be a UTC datetime",
        ),
        ({"test_start": at(2)}, "validation_start 2024-03-03T00:00:00\\+00:00 must be before"),
        ({"train_start": at(3)}, "train_start .* must be before validation_start"),
        ({"test_end": at(4)}, "test_start .* must be before test_end"),
        ({"embargo_bars": -1}, "embargo_bars must be an integer ≥ 0, got -1"),
        ({"embargo_bars": True}, "embargo_bars must be an integer"),
    ],
)
def test_a_malformed_spec_is_refused(kwargs, message):
    fields = {"name": "x", "validation_start": at(3), "test_start": at(4)} | kwargs
    with pytest.raises(SplitSpecError, match=message):
        SplitSpec(**fields)


def test_the_default_spec_fits_the_main_jobs_days():
    spec = BUILTIN_SPECS[DEFAULT_SPEC]
    assert (spec.validation_start, spec.test_start) == (at(2), at(3))
    assert spec.train_start is None and spec.test_end is None
    assert spec.embargo_bars == 30  # the longest horizon (tb_30, window_up_30) and window (30)


def test_a_stored_spec_never_changes(tmp_path):
    lake = Lake(tmp_path)
    stored = store_spec(lake, FOUR_DAYS, now=at(10))
    assert stored == FOUR_DAYS and stored.created_at == at(10)
    # The same cuts again: nothing changes, the first created_at stays.
    assert store_spec(lake, FOUR_DAYS, now=at(11)).created_at == at(10)
    moved = SplitSpec("four_days", validation_start=at(3, 12), test_start=at(4))
    with pytest.raises(SplitSpecError, match="'four_days' is stored in the lake with .*pick a new"):
        store_spec(lake, moved)
    longer = SplitSpec("four_days", validation_start=at(3), test_start=at(4), embargo_bars=60)
    with pytest.raises(SplitSpecError, match="never changes once stored"):
        store_spec(lake, longer)
    with pytest.raises(SplitSpecError, match="'default' is built in with validation_start"):
        store_spec(lake, SplitSpec(DEFAULT_SPEC, validation_start=at(1), test_start=at(4)))
    assert stored_specs(lake) == {"four_days": FOUR_DAYS}
    assert stored_specs(lake)["four_days"].created_at == at(10)


def test_a_new_spec_needs_an_embargo_covering_todays_labels(tmp_path):
    short = SplitSpec("short", validation_start=at(3), test_start=at(4), embargo_bars=10)
    with pytest.raises(SplitSpecError, match="embargo_bars=10 is shorter .* at least 30"):
        store_spec(Lake(tmp_path), short)


def test_resolving_names(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    assert resolve_spec(lake, DEFAULT_SPEC) == BUILTIN_SPECS[DEFAULT_SPEC]
    store_spec(lake, FOUR_DAYS)
    assert resolve_spec(lake, "four_days") == FOUR_DAYS
    with pytest.raises(SplitSpecError, match="unknown split spec 'weekly'; known: default, four"):
        resolve_spec(lake, "weekly")
    with pytest.raises(SplitSpecError, match="bad split spec name '../x'"):
        resolve_spec(lake, "../x")
    # A built-in spec edited in code after the lake stored it is refused, not silently used.
    store_spec(lake, BUILTIN_SPECS[DEFAULT_SPEC])
    edited = SplitSpec(DEFAULT_SPEC, validation_start=at(2, 12), test_start=at(3))
    monkeypatch.setitem(lake_splits.BUILTIN_SPECS, DEFAULT_SPEC, edited)
    with pytest.raises(SplitSpecError, match="built-in spec of that name now says"):
        resolve_spec(lake, DEFAULT_SPEC)


# --- assignment and the check across series ----------------------------------------------------


def test_one_calendar_for_every_series_passes_the_check():
    assigned = assign(btc_four_days_eth_last(), FOUR_DAYS)
    outcome = no_training_label_reaches_test(assigned, {"four_days": FOUR_DAYS})
    assert outcome.passed, outcome.metadata
    assert set(outcome.metadata.values()) == {0}
    eth = assigned.filter(pl.col("symbol") == "ETHUSDT")
    assert set(eth["split"]) == {"test"}  # ETH landed only inside the test period
    btc = dict(assigned.filter(pl.col("symbol") == "BTCUSDT").group_by("split").len().rows())
    # 03-01 00:01 .. 03-02 23:29 train, 23:30 .. 23:58 embargoed, 23:59 purged (known at 03-03)
    expected = {"train": 2 * 1440 - 31, "embargoed": 2 * 29, "purged": 2, "validation": 1410}
    assert btc == expected | {"test": 1441}  # 03-04 00:00 .. 03-05 00:00


def test_the_old_per_series_cut_fails_the_check_with_the_leaking_rows_counted():
    """Fault injection: each series cut by its own row fractions puts ETH's training rows
    (03-04 until 13:54) inside BTC's test period (from 03-04 04:49)."""
    old = cut_each_series_by_row_fraction(btc_four_days_eth_last())
    btc_test = old.filter((pl.col("symbol") == "BTCUSDT") & (pl.col("split") == "test"))
    eth_train = old.filter((pl.col("symbol") == "ETHUSDT") & (pl.col("split") == "train"))
    assert btc_test["decision_time"].min() == at(4, 4, 49)
    assert eth_train["decision_time"].max() == at(4, 13, 54)

    outcome = no_training_label_reaches_test(old, {"four_days": FOUR_DAYS})
    assert not outcome.passed
    leaks = outcome.metadata
    # ETH's training rows known from 04:49 on: 04:48 .. 13:54.
    assert leaks["train_known_after_first_test"] == 547
    expected = eth_train.filter(pl.col("known_at") >= at(4, 4, 49)).height
    assert leaks["train_known_after_first_test"] == expected
    assert leaks["outside_block"] > 0 and leaks["known_after_cut"] > 0
    assert leaks["leaking_rows"] >= 547

    # The data-derived rule alone catches it: with the spec's cuts moved out of the way, the
    # cross-series comparison still counts the 547 rows.
    anywhere = SplitSpec("four_days", validation_start=at(1), test_start=at(1, 0, 1))
    assert split_leaks(old, {"four_days": anywhere})["train_known_after_first_test"] == 547


def test_the_check_compares_against_the_specs_cut_times():
    assigned = assign(btc_four_days_eth_last(), FOUR_DAYS)
    relabelled = pl.when(pl.col("decision_time") == at(3, 0, 1)).then(pl.lit("train"))
    late = assigned.with_columns(split=relabelled.otherwise(pl.col("split")))
    leaks = split_leaks(late, {"four_days": FOUR_DAYS})
    # One row, relabelled train inside validation's block: outside its block, and its label is
    # known after the validation cut (and after the first validation decision, 03-03 00:00).
    assert leaks["outside_block"] == leaks["known_after_cut"] == leaks["leaking_rows"] == 1
    assert leaks["train_known_after_first_validation"] == 1
    with pytest.raises(SplitSpecError, match="splits of spec 'four_days' but no such spec"):
        split_leaks(assigned, {})


# --- the lake ----------------------------------------------------------------------------------


def read_splits(lake: Lake, spec: str) -> pl.DataFrame:
    files = sorted((lake.root / "windows" / "splits" / f"spec={spec}").glob("*/*/part-0.parquet"))
    return pl.read_parquet(files, hive_partitioning=True).drop("spec")


def test_a_rows_split_never_changes_as_more_days_land(tmp_path):
    spec = SplitSpec("midday", validation_start=at(1, 12), test_start=at(2, 12))
    lake = simulated_dataset_lake(tmp_path, "BTCUSDT", (dt.date(2024, 3, 1), dt.date(2024, 3, 2)))
    store_spec(lake, spec)
    con = connect()
    assign_splits(lake, con, ["midday"])
    before = read_splits(lake, "midday")
    assert (lake.root / "windows/splits/spec=midday/symbol=BTCUSDT/interval=1m").is_dir()

    # 03-03 lands for BTC (03-02's last labels complete with it) and for ETH, on its own.
    simulated_dataset_lake(tmp_path, "BTCUSDT", (dt.date(2024, 3, 2), dt.date(2024, 3, 3)))
    simulated_dataset_lake(tmp_path, "ETHUSDT", (dt.date(2024, 3, 3),))
    assigned, specs = assign_splits(lake, con, ["midday", DEFAULT_SPEC])
    after = read_splits(lake, "midday")

    kept = before.join(after, on=KEYS, how="left", suffix="_after")
    assert kept["split_after"].null_count() == 0
    assert (kept["split"] == kept["split_after"]).all()
    assert after.height > before.height
    assert set(after.filter(pl.col("symbol") == "ETHUSDT")["split"]) == {"test"}
    outcome = no_training_label_reaches_test(assigned, specs)
    assert outcome.passed, outcome.metadata
    assert set(stored_specs(lake)) == {"default", "midday"}  # the built-in stored on first use

    build_catalog(lake, CATALOG_VIEWS)
    catalog = connect(lake.catalog_path, read_only=True)
    assert catalog.sql("select spec, embargo_bars from split_specs order by 1").fetchall() == [
        ("default", 30),
        ("midday", 30),
    ]
    counted = catalog.sql("select spec, count(*) from splits group by 1 order by 1").fetchall()
    assert counted == [
        ("default", assigned.filter(pl.col("spec") == "default").height),
        ("midday", after.height),
    ]


def test_assigning_an_unknown_spec_writes_nothing(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(SplitSpecError, match="unknown split spec 'weekly'"):
        assign_splits(lake, connect(), ["weekly"])
    assert not (tmp_path / "windows" / "splits").exists()
