"""Jobs and schedules: land and curate klines per partition; rebuild the catalog."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key

klines_job = dg.define_asset_job(
    "klines_job",
    selection=dg.AssetSelection.assets(["raw", "klines"]) | dg.AssetSelection.groups("curate"),
    description="Land raw klines for one day × symbol partition and curate them (any source).",
)
market_job = dg.define_asset_job(
    "market_job",
    selection=dg.AssetSelection.groups("ingest", "curate", "features")
    - dg.AssetSelection.assets(["raw", "depth_updates"]),
    description="Everything of one day × symbol partition: klines, trades, order-book snapshots, "
    "curation and features (sources with book history: the simulator).",
)
catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.groups("catalog"),
    description="Rebuild lake/candlelake.duckdb (one view per lake table).",
)


@dg.schedule(cron_schedule="15 0 * * *", job=klines_job, execution_timezone="UTC")
def daily_klines_schedule(context: dg.ScheduleEvaluationContext):
    """Shortly after midnight UTC, land and curate yesterday for every registered symbol."""
    yesterday = (context.scheduled_execution_time - dt.timedelta(days=1)).date()
    symbols = context.instance.get_dynamic_partitions(SYMBOLS_PARTITION_NAME)
    if not symbols:
        return dg.SkipReason("no symbols registered; add some with `candlelake symbols add`")
    return [
        dg.RunRequest(run_key=str(key), partition_key=str(key))
        for key in (day_symbol_key(yesterday, symbol) for symbol in symbols)
    ]


@dg.schedule(cron_schedule="45 0 * * *", job=catalog_job, execution_timezone="UTC")
def daily_catalog_schedule(context: dg.ScheduleEvaluationContext):
    """After the daily landing, rebuild the catalog so new tables get views."""
    return dg.RunRequest(run_key=context.scheduled_execution_time.date().isoformat())
