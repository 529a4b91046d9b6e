"""The one Definitions object of candlelake (``dagster dev`` loads this module)."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import catalog, curated, datasets, experiments, features, images, raw
from dagster_project.jobs import (
    catalog_job,
    collected_depth_sensor,
    daily_catalog_schedule,
    daily_klines_schedule,
    experiment_grid_job,
    experiments_job,
    images_job,
    klines_job,
    market_job,
    windows_job,
)
from dagster_project.resources import DuckDBResource, LakeResource, MarketSourceResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [raw, curated, features, datasets, images, experiments, catalog]
    ),
    jobs=[
        klines_job,
        windows_job,
        images_job,
        market_job,
        catalog_job,
        experiments_job,
        experiment_grid_job,
    ],
    schedules=[daily_klines_schedule, daily_catalog_schedule],
    sensors=[collected_depth_sensor],
    # A run's steps run in its one process: a step process would re-import the project (seconds
    # each), and DuckDB already uses every core inside a step.
    executor=dg.in_process_executor,
    resources={
        "lake": LakeResource(),
        "duckdb": DuckDBResource(),
        "market_source": MarketSourceResource(),
    },
)
