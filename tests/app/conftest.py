"""Fixtures of the explorer's tests: one small lake with every table the pages read (curated
klines, labels, windows, splits, indicators, experiment results of one tiny cell with its
baselines, a shuffled and a leaky control) and its catalog, built once per session."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dagster_project.core.lake import LAKE_ENV_VAR, Lake, build_catalog, connect
from dagster_project.transform.indicators import build_indicators
from ml.experiment import Cell, CellSettings, run_grid
from ml.train import TrainConfig
from tests.helpers import simulated_dataset_lake

RUN_TIMEOUT_S = 120  # one script run; the first imports torch and the ml stack
APP_DIR = Path(__file__).resolve().parents[2] / "app"
SYMBOL = "BTCUSDT"
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
HONEST = Cell(SYMBOL, "1m", "regular", 5, "custom", "exp1_t720bar")
SHUFFLED = Cell(SYMBOL, "1m", "regular", 5, "custom", "exp1_t720bar", shuffled=True)
LEAKY = Cell(SYMBOL, "1m", "regular", 5, "custom", "exp1_t720bar", "leaky_last_candle_up")
CELLS = (HONEST, SHUFFLED, LEAKY)
SETTINGS = CellSettings(
    blocks=1,
    image_size=32,
    train=TrainConfig(lr=3e-3, batch_size=64, max_epochs=1, t_0=1, patience=1),
    n_boot=50,
    export_onnx=False,
    model_overrides={"channels": (8, 16, 32), "dropout": 0.0},
)


@pytest.fixture(scope="session")
def app_lake(tmp_path_factory) -> Lake:
    """The explorer's test lake, with its catalog (read-only for the tests: build it once)."""
    from dagster_project.assets.catalog import CATALOG_VIEWS  # tests may read orchestration

    lake = simulated_dataset_lake(tmp_path_factory.mktemp("app_lake"), SYMBOL, DAYS)
    con = connect()
    try:
        build_indicators(lake, con, SYMBOL, DAYS)
    finally:
        con.close()
    run_grid(lake, CELLS, SETTINGS)
    build_catalog(lake, CATALOG_VIEWS)
    return lake


@pytest.fixture
def app_env(monkeypatch, app_lake) -> Lake:
    """``app_lake`` as the lake the app reads (CANDLELAKE_LAKE)."""
    monkeypatch.setenv(LAKE_ENV_VAR, str(app_lake.root))
    return app_lake


def app_test(page: str) -> AppTest:
    """An AppTest of ``app/<page>`` with a timeout that allows importing torch on a busy machine."""
    return AppTest.from_file(str(APP_DIR / page), default_timeout=RUN_TIMEOUT_S)


def opened(page: str) -> AppTest:
    """``app/<page>`` after its first run, which must show no exception and no error box (a
    vanished lake shows as the missing-catalog error here, not as a missing widget later)."""
    at = app_test(page).run()
    problems = [element.value for element in (*at.exception, *at.error)]
    assert not problems, problems
    return at
