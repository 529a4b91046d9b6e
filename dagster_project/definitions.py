"""The one Definitions object of candlelake (``dagster dev`` loads this module)."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import catalog, curate, datasets, features, images, ingest
from dagster_project.jobs import (
    catalog_job,
    collected_depth_sensor,
    daily_catalog_schedule,
    daily_klines_schedule,
    klines_job,
    market_job,
)
from dagster_project.resources import DuckDBResource, LakeResource, MarketSourceResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest, curate, features, datasets, images, catalog]),
    jobs=[klines_job, market_job, catalog_job],
    schedules=[daily_klines_schedule, daily_catalog_schedule],
    sensors=[collected_depth_sensor],
    resources={
        "lake": LakeResource(),
        "duckdb": DuckDBResource(),
        "market_source": MarketSourceResource(),
    },
)
