"""The Leaderboard page on the test lake: the honest board with baselines beside it, filters,
the controls apart with why, and one cell's detail."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dagster_project.assets.catalog import CATALOG_VIEWS
from dagster_project.core.lake import LAKE_ENV_VAR, Lake, build_catalog, connect
from ml.results import CELL_KEY, METRICS_TABLE, RESULTS_LAYER
from tests.app.conftest import HONEST, LEAKY, SHUFFLED, opened

pytestmark = pytest.mark.slow


@pytest.fixture
def page(app_env):
    return opened("pages/leaderboard.py")


def board_cells(at) -> list[str]:
    return list(at.dataframe[0].value["cell"])


def test_the_board_holds_the_honest_cell_only_and_the_controls_apart(page):
    assert not page.error
    assert board_cells(page) == [HONEST.key]
    assert [h.value for h in page.main.header] == [
        "What the original research reported, and why",
        "Cell detail",
    ]
    controls = page.dataframe[1].value
    assert sorted(controls["cell"]) == sorted([LEAKY.key, SHUFFLED.key])
    assert controls["why"].str.len().min() > 0


def test_the_chart_shows_the_model_beside_every_baseline_and_the_control(page):
    chart = page.get("vega_lite_chart")[0].proto
    marks = [layer["mark"]["type"] for layer in json.loads(chart.spec)["layer"]]
    assert marks == ["rule", "point", "rule"]  # CI, score, chance line
    scorers = [
        pa.ipc.open_stream(dataset.data.data).read_all().to_pydict().get("scorer")
        for dataset in chart.datasets
    ]
    assert ["custom", "majority", "persistence", "logistic_returns", "shuffled control"] in scorers


def filter_by(at, title: str):
    return next(widget for widget in at.sidebar.multiselect if widget.label == title)


def test_a_filter_changes_the_rows_shown(page):
    assert filter_by(page, "Label").options == ["leaky_last_candle_up", "next_up_1"]
    filter_by(page, "Label").select("leaky_last_candle_up").run()
    assert not page.exception
    assert [i.value for i in page.info] == ["No leaderboard rows match the filters."]
    assert list(page.dataframe[0].value["cell"]) == [LEAKY.key]  # the controls' table alone
    assert page.selectbox[0].options == [LEAKY.key]
    filter_by(page, "Label").set_value(["next_up_1"]).run()
    assert board_cells(page) == [HONEST.key]
    assert sorted(page.dataframe[1].value["cell"]) == [SHUFFLED.key]


def test_the_horizon_filter_is_the_labels_look_ahead(page):
    horizon = filter_by(page, "Horizon (bars)")
    assert horizon.options == [
        "0",
        "1",
    ]  # (as shown) leaky_last_candle_up looks 0 bars ahead, next_up_1 one
    horizon.select(0).run()
    assert not page.exception
    assert [i.value for i in page.info] == ["No leaderboard rows match the filters."]
    assert list(page.dataframe[0].value["cell"]) == [LEAKY.key]
    filter_by(page, "Horizon (bars)").set_value([1]).run()
    assert board_cells(page) == [HONEST.key]


REASON = "beats every baseline by more than its CI: injected by the test"


@pytest.fixture
def flagged_lake(app_lake, tmp_path, monkeypatch) -> Lake:
    """A copy of the test lake whose honest cell's pooled test score is flagged suspicious."""
    lake = Lake(shutil.copytree(app_lake.root, tmp_path / "lake"))
    keys = {CELL_KEY: HONEST.key}
    metrics = lake.read_partition(RESULTS_LAYER, METRICS_TABLE, keys)
    pooled = (pl.col("role") == "model") & (pl.col("split") == "test") & pl.col("block").is_null()
    lake.write_partition(
        RESULTS_LAYER,
        METRICS_TABLE,
        keys,
        metrics.with_columns(
            suspicious=pooled | pl.col("suspicious"),
            suspicious_reason=pl.when(pooled).then(pl.lit(REASON)).otherwise("suspicious_reason"),
        ),
    )
    build_catalog(lake, CATALOG_VIEWS)
    monkeypatch.setenv(LAKE_ENV_VAR, str(lake.root))
    return lake


def test_a_suspicious_cell_is_shown_with_its_reason(flagged_lake):
    page = opened("pages/leaderboard.py")
    assert [w.value for w in page.warning] == [f"Suspicious: {HONEST.key}: {REASON}"]
    assert not page.success
    board = page.dataframe[0].value
    assert list(board["suspicious"]) == [True] and list(board["suspicious_reason"]) == [REASON]


def test_suspicious_flags_or_their_absence_are_stated(page):
    assert [s.value for s in page.success] == ["No suspicious scores among these cells."]


def test_a_cells_detail_shows_its_config_learning_curve_and_curves(page):
    page.selectbox[0].select(HONEST.key).run()
    assert not page.exception and not page.error
    assert [s.value for s in page.subheader] == [
        f"Configuration of {HONEST.key}",
        "Learning curve",
        "Confusion matrix",
        "ROC curve",
        "Calibration",
        "Precision-recall curve",
    ]
    config = page.json[0].value
    assert HONEST.key in config and "fingerprint" in config


def test_a_controls_detail_opens_too(page):
    page.selectbox[0].select(LEAKY.key).run()
    assert not page.exception and not page.error
    assert page.subheader[0].value == f"Configuration of {LEAKY.key}"


def detail_frames(at) -> list[dict[str, list]]:
    """Every dataset of every chart on the page, as columns."""
    return [
        pa.ipc.open_stream(dataset.data.data).read_all().to_pydict()
        for chart in at.get("vega_lite_chart")
        for dataset in chart.proto.datasets
    ]


def frame_with(at, *columns: str) -> dict[str, list]:
    """The longest chart dataset that has ``columns`` (not a two-point chance line)."""
    return max(
        (f for f in detail_frames(at) if set(columns) <= set(f)), key=lambda f: len(f[columns[0]])
    )


def test_the_detail_curves_and_counts_agree_with_the_lake(page, app_env):
    page.selectbox[0].select(HONEST.key).run()
    con = connect(app_env.catalog_path, read_only=True)
    try:
        stored_auroc = con.execute(
            "select auroc from metrics where cell = ? and scorer = ? and split = 'test' "
            "and block is null",
            [HONEST.key, HONEST.model],
        ).fetchone()[0]
        counts = dict(
            con.execute(
                "select (label = 1)::int * 2 + (probability >= 0.5)::int, count(*) "
                "from predictions where cell = ? and scorer = ? and split = 'test' group by all",
                [HONEST.key, HONEST.model],
            ).fetchall()
        )
    finally:
        con.close()
    roc = frame_with(page, "fpr", "tpr")
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(stored_auroc, abs=1e-9)
    shown = frame_with(page, "actual", "predicted", "rows")
    cells = zip(shown["actual"], shown["predicted"], shown["rows"], strict=True)
    drawn = {(actual == "up") * 2 + (predicted == "up"): n for actual, predicted, n in cells}
    assert drawn == {key: counts.get(key, 0) for key in range(4)}
