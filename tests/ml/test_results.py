"""ml.results: the cell result tables, their flags, the catalog's leaderboard and controls views,
and the seed CSV export, on synthetic scored rows (seeded numpy, ~500 rows per test block)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import math

import numpy as np
import polars as pl
import pytest

from dagster_project.core.lake import DerivedView, Lake, build_catalog, connect
from ml import protocols
from ml.evaluate import classification_metrics
from ml.results import (
    BASELINE_NAMES,
    METRICS_SCHEMA,
    PREDICTIONS_SCHEMA,
    RESULT_VIEWS,
    SEED_CSV_COLUMNS,
    CellInfo,
    ResultsError,
    Scored,
    cell_results,
    coin,
    export_seed_csv,
    period,
    read_metrics,
    stored_fingerprint,
    suspicion_reasons,
    write_cell_results,
)

ROWS = 500  # per test block
N_BOOT = 40
MINUTE_US = 60_000_000
HONEST = protocols.experiment_i("2024-03-01", "2024-03-04", "1m", train_lengths=["600b"], blocks=2)
SEED = protocols.seed_replica("2024-03-01", "2024-03-04", "1m", train_length="600b", blocks=2)
LEAKY = "leaky_last_candle_up"


def info_of(model: str, plan=HONEST, label: str = "next_up_1", shuffled: bool = False):
    training = plan.folds[0].training_name
    leaky = label.startswith("leaky")
    suffix = (f".{label}" if label != "next_up_1" else "") + (".shuffled" if shuffled else "")
    return CellInfo(
        key=f"BTCUSDT.1m.regular.w5.{model}.{training}{suffix}",
        symbol="BTCUSDT",
        interval="1m",
        dataset="regular",
        window_size=5,
        model=model,
        protocol=plan.protocol,
        training=training,
        label=label,
        label_is_leaky=leaky,
        shuffled=shuffled,
    )


def times_of(start: dt.datetime, n: int) -> np.ndarray:
    first = int(start.timestamp() * 1_000_000)
    return first + MINUTE_US * np.arange(n, dtype=np.int64)


def labels_of(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.float64)


def skill(label: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Probabilities that rank positives above negatives more often as ``strength`` grows
    (0: chance, 1: perfect)."""
    noise = np.random.default_rng(seed).uniform(0, 1, label.size)
    return np.clip(strength * label + (1 - strength) * noise, 0, 1)


def scored_sets(
    info: CellInfo,
    plan,
    test_strength: float,
    train_strength: float = 0.3,
    baselines: bool = True,
    baseline_strength: float = 0.0,
) -> list[Scored]:
    """The cell's model (or shuffled control) and, optionally, every baseline, on one train set
    and one set per test block of ``plan``; every scorer sees the same rows and labels."""
    role = "shuffled_control" if info.shuffled else "model"
    scorers = [(info.model, role, test_strength, train_strength)]
    if baselines:
        scorers += [(name, "baseline", baseline_strength, 0.0) for name in BASELINE_NAMES]
    folds = plan.folds
    train_label = labels_of(1, ROWS)
    sets = []
    for i, (scorer, role_, strength, train_skill) in enumerate(scorers):
        sets.append(
            Scored(
                scorer,
                role_,
                "train",
                folds[0],
                times_of(folds[0].train_start, ROWS),
                times_of(folds[0].train_start, ROWS) + 1,
                train_label,
                skill(train_label, train_skill, 100 + i),
            )
        )
        for fold in folds:
            label = labels_of(10 + fold.block, ROWS)
            times = times_of(fold.test_start, ROWS)
            sets.append(
                Scored(
                    scorer,
                    role_,
                    "test",
                    fold,
                    times,
                    times + MINUTE_US,
                    label,
                    skill(label, strength, 200 + 10 * i + fold.block),
                )
            )
    return sets


@functools.cache  # cells shared by several tests are computed once
def results_of(info, plan, test_strength, *, last_known=None, **kw):
    fold = plan.folds[0]
    bar = dt.timedelta(minutes=1)
    last = last_known or fold.train_end - (fold.embargo_bars + 1) * bar
    return cell_results(
        info,
        scored_sets(info, plan, test_strength, **kw),
        fingerprint=f"fp-{info.key}",
        last_training_known_at=last,
        dependence=5,
        n_boot=N_BOOT,
        seed=7,
        created_at=dt.datetime(2024, 4, 1, tzinfo=dt.UTC),
        training={"epochs_run": 3, "best_epoch": 2, "stop_reason": "max_epochs"},
    )


# --- cell_results ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chance_cell():
    info = info_of("custom")
    return info, *results_of(info, HONEST, 0.0)


def test_tables_have_the_contract_columns_and_one_row_per_scorer_and_set(chance_cell):
    info, predictions, metrics = chance_cell
    assert dict(predictions.schema) == PREDICTIONS_SCHEMA
    assert dict(metrics.schema) == METRICS_SCHEMA
    assert predictions.height == 4 * 3 * ROWS  # 4 scorers × (train + 2 blocks)
    per_scorer = metrics.group_by("scorer").agg(
        pl.col("split").sort().str.join(","), pl.col("block").sort().cast(pl.String).str.join(",")
    )
    assert per_scorer.height == 4
    assert set(per_scorer["split"]) == {"test,test,test,train"}
    # pooled and train rows have no block
    assert metrics.filter(pl.col("block").is_null()).height == 8
    train = metrics.filter(pl.col("split") == "train")
    assert train["auroc_low"].is_null().all() and train["mcc_se"].is_null().all()
    test = metrics.filter(pl.col("split") == "test")
    assert test["auroc_low"].is_not_null().all()
    assert (test["auroc_low"] <= test["auroc"]).all() and (
        test["auroc"] <= test["auroc_high"]
    ).all()
    assert set(metrics.filter(pl.col("role") == "baseline")["epochs_run"].to_list()) == {None}
    assert set(metrics.filter(pl.col("role") == "model")["epochs_run"].to_list()) == {3}


def test_pooled_row_scores_every_block_back_to_back(chance_cell):
    _, predictions, metrics = chance_cell
    for scorer in ("custom", "logistic_returns"):
        rows = predictions.filter((pl.col("scorer") == scorer) & (pl.col("split") == "test"))
        rows = rows.sort("decision_time")
        expected = classification_metrics(rows["label"].to_numpy(), rows["probability"].to_numpy())
        pooled = metrics.filter(
            (pl.col("scorer") == scorer) & (pl.col("split") == "test") & pl.col("block").is_null()
        ).row(0, named=True)
        assert pooled["n_rows"] == 2 * ROWS
        assert pooled["auroc"] == expected["auroc"] and pooled["f1"] == expected["f1"]
        assert pooled["fold"] == "exp1_t600bar"
        assert pooled["test_start"] == HONEST.folds[0].test_start
        assert pooled["test_end"] == HONEST.folds[1].test_end


def test_calendar_and_known_at_flags(chance_cell):
    _, _, metrics = chance_cell
    block1 = metrics.filter((pl.col("scorer") == "custom") & (pl.col("block") == 1)).row(
        0, named=True
    )
    fold = HONEST.folds[1]
    assert block1["fold"] == fold.name
    assert (block1["test_start"], block1["test_end"]) == (fold.test_start, fold.test_end)
    assert block1["purge_embargo_bars"] == fold.spec.embargo_bars
    assert block1["embargo_end"] == HONEST.folds[0].train_end - dt.timedelta(minutes=1)
    assert metrics["known_at_ok"].all() and metrics["is_honest"].all()
    # the embargo ends exactly where block 0 starts: the test must start strictly after it
    one_bar_late = HONEST.folds[0].train_end - dt.timedelta(minutes=fold.embargo_bars)
    _, late = results_of(info_of("custom"), HONEST, 0.0, last_known=one_bar_late)
    bad = late.filter(~pl.col("known_at_ok"))
    assert set(zip(bad["split"], bad["block"], strict=True)) == {
        ("train", None),
        ("test", 0),
        ("test", None),
    }


def test_a_chance_model_is_not_suspicious_a_perfect_one_is(chance_cell):
    _, _, chance = chance_cell
    assert not chance["suspicious"].any()
    assert chance["suspicious_reason"].is_null().all()
    _, perfect = results_of(info_of("jkx"), HONEST, 1.0)
    model_tests = perfect.filter((pl.col("role") == "model") & (pl.col("split") == "test"))
    assert model_tests["suspicious"].all()
    reason = model_tests["suspicious_reason"][0]
    assert "beats every baseline by more than its CI" in reason
    assert "test AUROC above train by more than its CI" in reason
    assert "a perfect score: accuracy, auroc = 1.0" in reason
    # only the model's test rows are judged
    assert not perfect.filter(pl.col("role") == "baseline")["suspicious"].any()
    assert not perfect.filter(pl.col("split") == "train")["suspicious"].any()


def test_test_above_train_is_flagged_on_its_own():
    row = {"auroc_low": 0.70, "accuracy": 0.6, "auroc": 0.75}
    assert suspicion_reasons(row, {"majority": 0.5, "persistence": 0.9}, train_auroc=0.55) == [
        "test AUROC above train by more than its CI: auroc_low 0.7000 > train auroc 0.5500"
    ]
    assert suspicion_reasons(row, {"persistence": 0.9}, train_auroc=0.80) == []
    nan_row = {"auroc_low": math.nan, "accuracy": math.nan, "auroc": math.nan}
    assert suspicion_reasons(nan_row, {"majority": 0.5}, train_auroc=0.5) == []


def test_leaky_shuffled_and_seed_replica_rows_are_never_suspicious():
    leaky = results_of(info_of("custom", label=LEAKY), HONEST, 1.0)[1]
    seed = results_of(info_of("custom", SEED, label=LEAKY), SEED, 1.0)[1]
    for metrics in (leaky, seed):
        assert metrics["is_control"].all() or not metrics["is_honest"].any()
        assert not metrics["suspicious"].any()
    assert not seed["known_at_ok"].any() and not seed["is_honest"].any()
    assert seed["purge_embargo_bars"].is_null().all()
    # a shuffled control scoring far above chance on an honest cell is suspicious: a leak
    shuffled = results_of(info_of("custom", shuffled=True), HONEST, 1.0)[1]
    assert shuffled.filter(pl.col("role") == "shuffled_control")["is_control"].all()
    assert shuffled.filter((pl.col("role") == "shuffled_control") & (pl.col("split") == "test"))[
        "suspicious"
    ].all()


def _replace(sets, index, **changes):
    return [dataclasses.replace(s, **changes) if i == index else s for i, s in enumerate(sets)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sets: _replace(sets, 0, role="teacher"), "unknown role 'teacher'"),
        (lambda sets: _replace(sets, 0, split="validation"), "unknown split 'validation'"),
        (lambda sets: _replace(sets, 1, label=sets[1].label[:-1]), "equally long"),
        (
            lambda sets: _replace(sets, 1, decision_time=sets[1].decision_time[::-1].copy()),
            "strictly ascending",
        ),
        (
            lambda sets: [s for s in sets if not (s.scorer == "majority" and s.split == "train")],
            "scorer 'majority' has no train set",
        ),
        (
            lambda sets: [s for s in sets if s.role == "baseline"],
            "no scored set of the cell's model",
        ),
        (lambda sets: _replace(sets, 2, fold=HONEST.folds[0]), "two sets of test block 0"),
        (lambda sets: _replace(sets, 3, scorer="oracle"), "unknown baseline"),
        (lambda sets: _replace(sets, 0, role="shuffled_control"), "with role 'model'"),
        (
            lambda sets: _replace(
                sets, 5, decision_time=sets[5].decision_time + 1, known_at=sets[5].known_at + 1
            ),
            "scores the same test rows",
        ),
        (lambda sets: _replace(sets, 1, fold=SEED.folds[0]), "not the cell's experiment_i"),
    ],
)
def test_bad_scored_sets_are_refused_naming_the_problem(change, message):
    info = info_of("custom")
    sets = change(scored_sets(info, HONEST, 0.0))
    with pytest.raises(ResultsError, match=message):
        cell_results(
            info,
            sets,
            fingerprint="f",
            last_training_known_at=HONEST.folds[0].train_end,
            dependence=5,
            n_boot=N_BOOT,
        )


def test_overlapping_blocks_are_refused():
    info = info_of("custom")
    sets = scored_sets(info, HONEST, 0.0, baselines=False)
    late = sets[1].decision_time[-1]
    sets = _replace(sets, 2, decision_time=sets[2].decision_time - sets[2].decision_time[0] + late)
    with pytest.raises(ResultsError, match="test blocks 0 and 1 overlap"):
        cell_results(
            info,
            sets,
            fingerprint="f",
            last_training_known_at=HONEST.folds[0].train_end,
            dependence=5,
            n_boot=N_BOOT,
        )


# --- the lake, the catalog views and the CSV ---------------------------------------------


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A lake holding six cells: two honest models (chance, perfect), the shuffled control of
    the chance one, its leaky-label control, a seed_replica cell, and a chance model whose
    training known_at reaches its first test block."""
    lake = Lake(tmp_path_factory.mktemp("results") / "lake")
    late = HONEST.folds[0].train_end
    cells = [
        (info_of("custom"), HONEST, 0.0, {}),
        (info_of("jkx"), HONEST, 1.0, {}),
        (info_of("custom", shuffled=True), HONEST, 0.0, {}),
        (info_of("custom", label=LEAKY), HONEST, 1.0, {}),
        (info_of("custom", SEED, label=LEAKY), SEED, 1.0, {"last_known": SEED.folds[0].train_end}),
        (
            dataclasses.replace(info_of("custom"), key="late", window_size=15),
            HONEST,
            0.0,
            {"last_known": late},
        ),
    ]
    for info, plan, strength, kw in cells:
        predictions, metrics = results_of(info, plan, strength, **kw)
        write_cell_results(lake, info.key, predictions, metrics)
    assert "leaderboard" in build_catalog(lake, RESULT_VIEWS)
    return lake


def query(lake: Lake, sql: str) -> list[dict]:
    con = connect(lake.catalog_path, read_only=True)
    try:
        return con.sql(sql).pl().to_dicts()
    finally:
        con.close()


def test_leaderboard_holds_honest_models_ranked_with_baselines_beside(lake):
    board = query(lake, "select * from leaderboard")
    assert [(r["cell"], r["rank"]) for r in board] == [
        ("BTCUSDT.1m.regular.w5.jkx.exp1_t600bar", 1),
        ("BTCUSDT.1m.regular.w5.custom.exp1_t600bar", 2),
    ]
    perfect, chance = board
    assert perfect["suspicious"] and perfect["beats_baselines"] and perfect["auroc"] == 1.0
    assert not chance["suspicious"] and chance["suspicious_reason"] is None
    for row in board:
        assert row["role"] == "model" and row["known_at_ok"]
        assert row["best_baseline"] in BASELINE_NAMES
        for name in BASELINE_NAMES:
            assert 0 <= row[f"{name}_auroc_low"] <= row[f"{name}_auroc_high"] <= 1
            assert row[f"{name}_accuracy"] is not None
    # the chance model's shuffled control sits beside it; the perfect one has none
    assert chance["shuffled_auroc"] is not None and perfect["shuffled_auroc"] is None
    pooled = read_metrics(lake, [chance["cell"]]).filter(
        (pl.col("split") == "test") & pl.col("block").is_null()
    )
    baselines = pooled.filter(pl.col("role") == "baseline").filter(~pl.col("auroc").is_nan())
    best = baselines.sort("auroc", descending=True).row(0, named=True)
    assert (chance["best_baseline"], chance["best_baseline_auroc"]) == (
        best["scorer"],
        best["auroc"],
    )
    assert chance["beats_baselines"] == (chance["auroc"] > best["auroc"])


def test_controls_hold_every_control_and_seed_replica_row_with_why(lake):
    controls = {r["cell"]: r for r in query(lake, "select * from controls")}
    assert set(controls) == {
        "BTCUSDT.1m.regular.w5.custom.exp1_t600bar.shuffled",
        f"BTCUSDT.1m.regular.w5.custom.exp1_t600bar.{LEAKY}",
        f"BTCUSDT.1m.regular.w5.custom.seed_t600bar.{LEAKY}",
        "late",
    }
    why = {cell: row["why"] for cell, row in controls.items()}
    assert why["late"] == "training known_at reaches the test block"
    assert why[f"BTCUSDT.1m.regular.w5.custom.seed_t600bar.{LEAKY}"] == (
        "test before train (seed_replica); leaky label: drawn in the image"
    )
    assert why[f"BTCUSDT.1m.regular.w5.custom.exp1_t600bar.{LEAKY}"] == (
        "leaky label: drawn in the image"
    )
    assert "shuffled labels" in why["BTCUSDT.1m.regular.w5.custom.exp1_t600bar.shuffled"]
    assert not any(row["suspicious"] for cell, row in controls.items() if cell != "late")
    board = {r["cell"] for r in query(lake, "select cell from leaderboard")}
    assert not board & set(controls)
    # every pooled model row is in exactly one of the two views
    pooled = query(
        lake,
        "select cell from metrics where split = 'test' and block is null and role <> 'baseline'",
    )
    assert {r["cell"] for r in pooled} == board | set(controls)


def test_stored_results_read_back_equal(lake):
    key = "BTCUSDT.1m.regular.w5.jkx.exp1_t600bar"
    assert stored_fingerprint(lake, key) == f"fp-{key}"
    assert stored_fingerprint(lake, "no.such.cell") is None
    _, fresh = results_of(info_of("jkx"), HONEST, 1.0)
    assert read_metrics(lake, [key]).equals(
        fresh.sort("cell", "scorer", "split", "block", nulls_last=True)
    )
    assert read_metrics(lake).height == 6 * 4 * 4  # cells × scorers × (train, 2 blocks, pooled)
    with pytest.raises(ResultsError, match="no.such.cell"):
        read_metrics(lake, ["no.such.cell"])


def test_write_refuses_frames_of_another_cell_or_shape(tmp_path):
    info = info_of("custom")
    predictions, metrics = results_of(info, HONEST, 0.0)
    with pytest.raises(ResultsError, match="rows of other cells"):
        write_cell_results(Lake(tmp_path), "other", predictions, metrics)
    with pytest.raises(ResultsError, match="differ from the table's"):
        write_cell_results(Lake(tmp_path), info.key, predictions, metrics.drop("mcc"))
    assert not (tmp_path / "results").exists()


def test_derived_views_are_skipped_without_their_inputs_and_take_no_parameters(tmp_path):
    empty = Lake(tmp_path / "empty")
    assert build_catalog(empty, RESULT_VIEWS) == []
    with pytest.raises(Exception, match="takes parameters"):
        build_catalog(empty, (DerivedView("windows", "windows/windows", reads=()),))


def test_seed_csv_equals_the_metrics_table(lake, tmp_path):
    files = export_seed_csv(lake, tmp_path)
    assert [f.name for f in files] == ["BTC_exp1_results.csv", "BTC_seed_replica_results.csv"]
    rows = {}
    for file in files:
        with file.open(newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames) == SEED_CSV_COLUMNS
            for row in reader:
                key = (file.name, row["Model"], row["Window_Size"], row["Month"], row["Dataset"])
                assert key not in rows
                rows[key] = row
    metrics = (
        read_metrics(lake)
        .filter(pl.col("split") == "train")
        .rows_by_key(["cell", "scorer"], named=True, unique=True)
    )
    tests = read_metrics(lake).filter(pl.col("block").is_not_null())
    expected = set()
    for m in tests.iter_rows(named=True):
        file = (
            "BTC_seed_replica_results.csv"
            if m["protocol"] == "seed_replica"
            else "BTC_exp1_results.csv"
        )
        model = ("shuffled_" if m["role"] == "shuffled_control" else "") + m["scorer"]
        model += f"@{m['label']}" if m["label_is_leaky"] else ""
        month = str(m["block"] + 1)
        for dataset, source in (("Test", m), ("Train", metrics[(m["cell"], m["scorer"])])):
            key = (file, model, str(m["window_size"]), month, dataset)
            row = rows[key]
            expected.add(key)
            assert (row["Coin"], row["Experiment"], row["Period"]) == ("BTC", "I", "600bar")
            for column, metric in (
                ("Accuracy", "accuracy"),
                ("F1", "f1"),
                ("Recall", "recall"),
                ("AUROC", "auroc"),
                ("AUPRC", "auprc"),
            ):
                value, stored = float(row[column]), source[metric]
                assert value == stored or (math.isnan(value) and math.isnan(stored))
    assert expected == set(rows)  # baselines shared by cells of one series: written once
    order = [
        (r["Model"], int(r["Window_Size"]), int(r["Month"]), r["Dataset"] != "Train")
        for (file, *_), r in rows.items()
        if file == "BTC_exp1_results.csv"
    ]
    assert order == sorted(order)


def test_seed_names():
    assert [coin(s) for s in ("BTCUSDT", "ETHBTC", "DOGEFDUSD", "BNBUSDC", "USDT")] == [
        "BTC",
        "ETH",
        "DOGE",
        "BNB",
        "USDT",
    ]
    assert period(dt.timedelta(days=7), "1m") == "7"
    assert period(dt.timedelta(hours=30), "15m") == "120bar"
