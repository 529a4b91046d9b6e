"""Jobs and schedules: land and curate klines per partition; rebuild the catalog."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from dagster_project.assets.experiments import EXPERIMENT_CELLS, register_experiment_cells
from dagster_project.assets.raw import RAW_DEPTH_SNAPSHOTS, RAW_DEPTH_UPDATES
from dagster_project.backfill import register_symbols
from dagster_project.core.lake import PARTITION_FILE, Lake
from dagster_project.partitions import SYMBOLS_PARTITION_NAME, day_symbol_key
from dagster_project.resources import LakeResource

KLINES = dg.AssetSelection.assets(["raw", "klines"]) | dg.AssetSelection.groups("curate")
WINDOWS = (
    KLINES
    | dg.AssetSelection.assets(["features", "indicators"])
    | dg.AssetSelection.assets(["labels", "labels"], ["windows", "windows"])
)

# The jobs name the asset selections `candlelake build --through` runs over a range, one run per
# symbol (partitions.RANGE_POLICY). From the UI, backfill ranges from the asset graph: Dagster
# 1.13 cuts a job's Partitions-tab range runs to one partition, which the assets refuse
# (docs/backfills.md).
klines_job = dg.define_asset_job(
    "klines_job",
    selection=KLINES,
    description="Land raw klines (any source) and curate them: 1m plus 5m/15m/1h, and the gaps.",
)
windows_job = dg.define_asset_job(
    "windows_job",
    selection=WINDOWS,
    description="Klines through the datasets: raw and curated klines, indicators, labels with "
    "known_at and the sliding windows (`candlelake build --through windows`).",
)
images_job = dg.define_asset_job(
    "images_job",
    selection=WINDOWS | dg.AssetSelection.groups("images"),
    description="windows_job plus the cached candlestick images of every dataset "
    "(`candlelake build --through images`).",
)
market_job = dg.define_asset_job(
    "market_job",
    selection=dg.AssetSelection.groups("ingest", "curate", "features", "datasets", "images")
    - dg.AssetSelection.assets(["windows", "splits"])
    - dg.AssetSelection.assets(["raw", "depth_updates"]),
    description="Everything of a day × symbol range: klines, trades and order-book snapshots "
    "(where the source has them: the simulator, REST/Vision trades, recordings), curation, "
    "microstructure, indicators, labels, windows and their cached images.",
)
catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.groups("catalog") | dg.AssetSelection.assets(["windows", "splits"]),
    description="The whole-lake assets: dataset splits over every landed sample, and "
    "lake/candlelake.duckdb (one view per lake table).",
)

experiments_job = dg.define_asset_job(
    "experiments_job",
    selection=[EXPERIMENT_CELLS],
    description="Train and score experiment cells: one partition of experiments/cells a run "
    "(`candlelake run` runs its default grid through it).",
)


@dg.job(
    description="Register a slice of the experiment grid (every combination of symbols, "
    "intervals, datasets, window sizes, models, trainings, labels and shuffled) as partitions "
    "of experiments/cells; then backfill them from the asset's Partitions tab."
)
def experiment_grid_job() -> None:
    register_experiment_cells()


@dg.schedule(cron_schedule="15 0 * * *", job=klines_job, execution_timezone="UTC")
def daily_klines_schedule(context: dg.ScheduleEvaluationContext):
    """Shortly after midnight UTC, land and curate yesterday for every registered symbol."""
    yesterday = (context.scheduled_execution_time - dt.timedelta(days=1)).date()
    symbols = context.instance.get_dynamic_partitions(SYMBOLS_PARTITION_NAME)
    if not symbols:
        return dg.SkipReason(
            "no symbols registered; land some with `candlelake ingest` or `candlelake build`"
        )
    return [
        dg.RunRequest(run_key=str(key), partition_key=str(key))
        for key in (day_symbol_key(yesterday, symbol) for symbol in symbols)
    ]


@dg.schedule(cron_schedule="45 0 * * *", job=catalog_job, execution_timezone="UTC")
def daily_catalog_schedule(context: dg.ScheduleEvaluationContext):
    """After the daily landing, rebuild the catalog so new tables get views."""
    return dg.RunRequest(run_key=context.scheduled_execution_time.date().isoformat())


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def collected_depth_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Shows in Dagster the book partitions that `collect-depth` / `poll-depth` append to.

    Those long-running processes write parts into the lake outside any run; each tick reports a
    materialization for every partition that received new parts since the last tick (and adds
    its symbol to the symbol partitions), so the UI and downstream assets see them.
    """
    seen_ns = int(context.cursor or 0)
    newest_ns = seen_ns
    events = []
    for asset_key in (RAW_DEPTH_SNAPSHOTS, RAW_DEPTH_UPDATES):
        for keys, parts in appended_parts(lake.get(), asset_key.path[-1], seen_ns):
            newest_ns = max(newest_ns, *(mtime for _, mtime in parts))
            register_symbols(context.instance, [keys["symbol"]])
            events.append(
                dg.AssetMaterialization(
                    asset_key=asset_key,
                    partition=str(day_symbol_key(keys["date"], keys["symbol"])),
                    metadata={"new_parts": len(parts), "written_by": "collector"},
                )
            )
    return dg.SensorResult(asset_events=events, cursor=str(newest_ns))


def appended_parts(lake: Lake, table: str, newer_than_ns: int):
    """(partition keys, [(part, mtime ns)]) for partitions with parts appended after a time."""
    for keys in lake.partitions("raw", table):
        parts = [
            (path, path.stat().st_mtime_ns)
            for path in lake.partition_files("raw", table, keys)
            if path.name != PARTITION_FILE
        ]
        fresh = [(path, mtime) for path, mtime in parts if mtime > newer_than_ns]
        if fresh:
            yield keys, fresh
