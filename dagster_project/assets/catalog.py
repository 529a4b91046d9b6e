"""Catalog layer: the DuckDB file with one view per lake table, for ad-hoc SQL."""

import dagster as dg

from dagster_project.assets.common import EXPERIMENT_CELLS, check_result
from dagster_project.assets.curated import CURATED_KLINES, KLINE_GAPS
from dagster_project.assets.datasets import LABELS, SPLITS, WINDOWS
from dagster_project.assets.features import INDICATORS, MICROSTRUCTURE
from dagster_project.assets.images import IMAGES
from dagster_project.assets.raw import RAW_AGG_TRADES, RAW_DEPTH_SNAPSHOTS, RAW_KLINES
from dagster_project.core.checks import files_intact
from dagster_project.core.integrity import verify_lake
from dagster_project.core.lake import PART_GLOB, CatalogView, build_catalog
from dagster_project.resources import LakeResource
from ml.results import RESULT_VIEWS

# View name → lake table (or, derived, a query over other views). Views read a glob, so partitions
# landed later appear without a rebuild; the catalog needs rebuilding only when a new table appears.
CATALOG_VIEWS = (
    CatalogView("klines", "curated", "klines"),
    CatalogView("kline_gaps", "curated", "kline_gaps"),
    CatalogView("raw_klines", "raw", "klines"),
    CatalogView("agg_trades", "raw", "agg_trades", PART_GLOB),
    CatalogView("depth_snapshots", "raw", "depth_snapshots", PART_GLOB),
    CatalogView("depth_updates", "raw", "depth_updates", PART_GLOB),
    CatalogView("microstructure", "features", "microstructure"),
    CatalogView("indicators", "features", "indicators"),
    CatalogView("indicator_availability", "features", "indicator_availability"),
    CatalogView("labels", "labels", "labels"),
    CatalogView("windows", "windows", "windows"),
    CatalogView("splits", "windows", "splits"),
    CatalogView("split_specs", "windows", "split_specs"),
    *(CatalogView(f"images_{dataset}", "images", dataset) for dataset in IMAGES),
    *RESULT_VIEWS,  # predictions, metrics and the leaderboard / controls views over them
)
CATALOG = dg.AssetKey(["catalog"])


@dg.asset(
    key=CATALOG,
    deps=[
        RAW_KLINES,
        CURATED_KLINES,
        KLINE_GAPS,
        RAW_AGG_TRADES,
        RAW_DEPTH_SNAPSHOTS,
        MICROSTRUCTURE,
        INDICATORS,
        LABELS,
        WINDOWS,
        SPLITS,
        *IMAGES.values(),
        EXPERIMENT_CELLS,
    ],
    group_name="catalog",
    kinds={"duckdb"},
    # Here, not per partition: the catalog spans the whole lake, so its check hashes every file
    # of every table (images and split specs too) and names each damaged one.
    check_specs=[dg.AssetCheckSpec("lake_files_intact", asset=CATALOG)],
    description="lake/candlelake.duckdb: one view per lake table over its Hive-partitioned "
    'Parquet, e.g. `duckdb lake/candlelake.duckdb -c "select symbol, count(*) from klines '
    'group by all"`.',
)
def catalog(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    the_lake = lake.get()
    views = build_catalog(the_lake, CATALOG_VIEWS)
    context.log.info(f"catalog {the_lake.catalog_path} has views {views}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(the_lake.catalog_path)),
            "views": ", ".join(views),
        },
        check_results=[check_result(CATALOG, files_intact(verify_lake(the_lake)))],
    )
