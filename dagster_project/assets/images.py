"""Images layer: each dataset's labelled windows rendered as candlestick images, cached in the lake
(``images/<dataset>``) so training can read them instead of drawing them."""

import time

import dagster as dg

from dagster_project.assets.common import check_result
from dagster_project.assets.curated import CURATED_KLINES
from dagster_project.assets.datasets import LABELS, WINDOWS
from dagster_project.core.checks import merge_outcomes
from dagster_project.partitions import (
    days_by_symbol,
    range_asset,
    run_partition_keys,
    same_symbol_days,
)
from dagster_project.resources import DuckDBResource, LakeResource
from dagster_project.transform.dataset_days import CANDLE_HISTORY_DAYS
from dagster_project.transform.windows import WINDOW_SIZES
from ml.image_cache import (
    CHECK_NAME,
    DEFAULT_INTERVALS,
    CachedShard,
    ImageCacheSettings,
    cache_dataset_days,
    check_images_match_windows,
    dataset_names,
    style_from_name,
)

IMAGES = {name: dg.AssetKey(["images", name]) for name in dataset_names()}
# the windows' candles: the day's curated klines and the days before (ml.window_data)
WINDOW_KLINES = dg.AssetDep(CURATED_KLINES, partition_mapping=same_symbol_days(CANDLE_HISTORY_DAYS))


class ImageCacheConfig(dg.Config):
    """What to render: every combination of these styles, window sizes and intervals."""

    styles: list[str] = ["candle"]  # 'candle' and/or 'ohlc_bar' (ml.rendering.STYLES)
    window_sizes: list[int] = list(WINDOW_SIZES)
    intervals: list[str] = list(DEFAULT_INTERVALS)  # any of 1m, 5m, 15m, 1h
    candle_height: int = 64  # px of a candle image
    candle_width: int = 64
    ohlc_height: int = 0  # px of an ohlc_bar image; 0: 32 / 64 / 96 by window length (the paper)
    volume: bool = True  # draw the volume panel

    def settings(self) -> ImageCacheSettings:
        styles = tuple(
            style_from_name(
                name, self.candle_height, self.candle_width, self.ohlc_height or None, self.volume
            )
            for name in self.styles
        )
        return ImageCacheSettings(styles, tuple(self.window_sizes), tuple(self.intervals))


def image_spec(dataset: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        IMAGES[dataset],
        deps=[WINDOWS, LABELS, WINDOW_KLINES],
        kinds={"parquet", "numpy"},
        description=f"Images of the {dataset} dataset's labelled windows (ml.rendering), one shard "
        "per interval, window size and style: images/<dataset>/symbol=/interval=/date=/"
        "window_size=/style=/part-0.parquet, the uint8 (C, H, W) array as a fixed-length "
        "binary. Default: the 64x64 candle style at every window size, for the 15m and 1h "
        "intervals only (1m would double the main job's time; ml.image_dataset renders any "
        "interval on the fly). The launchpad config picks styles, sizes and intervals.",
    )


@range_asset(
    dg.multi_asset,
    specs=[image_spec(name) for name in IMAGES],
    group_name="images",
    can_subset=True,
    check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=key) for key in IMAGES.values()],
)
def images(
    context: dg.AssetExecutionContext,
    config: ImageCacheConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
):
    settings = config.settings()
    the_lake = lake.get()
    days = days_by_symbol(run_partition_keys(context))
    with duckdb.connect() as con:
        for dataset, key in IMAGES.items():
            if key not in context.selected_asset_keys:
                continue
            started = time.monotonic()
            shards, checked = [], []
            for symbol, symbol_days in days.items():
                shards += cache_dataset_days(the_lake, con, symbol, symbol_days, dataset, settings)
                for day in symbol_days:
                    outcome = check_images_match_windows(the_lake, symbol, day, dataset, settings)
                    checked.append((f"{symbol} {day}", outcome))
            seconds = time.monotonic() - started
            context.log.info(f"{dataset}: {len(shards)} shards in {seconds:.1f} s")
            check_key = dg.AssetCheckKey(key, CHECK_NAME)
            yield dg.MaterializeResult(
                asset_key=key,
                metadata=shard_metadata(shards, seconds),
                check_results=[check_result(key, merge_outcomes(CHECK_NAME, checked))]
                if check_key in context.selected_asset_check_keys
                else [],
            )


def shard_metadata(shards: list[CachedShard], seconds: float) -> dict[str, object]:
    per_interval: dict[str, int] = {}
    for shard in shards:
        per_interval[shard.interval] = per_interval.get(shard.interval, 0) + shard.images
    return {
        "images": sum(s.images for s in shards),
        "bytes": sum(s.bytes for s in shards),
        "seconds": round(seconds, 3),
        "shards": len(shards),
        "styles": ", ".join(sorted({s.style for s in shards})),
    } | {f"{interval}_images": n for interval, n in per_interval.items()}
