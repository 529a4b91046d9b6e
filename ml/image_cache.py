"""Candlestick images of the datasets' labelled windows, rendered once and cached in the lake.

A shard holds the images of one dataset at one window size and style, for one symbol-interval-day:

    images/<dataset>/symbol=…/interval=…/date=…/window_size=…/style=…/part-0.parquet

``style`` names the style and the image size (``candle-64x64``, ``ohlc_bar-96x90``; ``-novol``,
``-noma`` for a chart without volume or moving average). Rows are the windows that have a value of
their paired label, oldest first, exactly the samples ``ml.image_dataset`` yields: decision_time,
label, value, known_at, the image as one fixed-length binary of C·H·W bytes (the uint8
``(C, H, W)`` array in C order) and channels, height, width. The file's key-value metadata records
the whole style and a hash of the renderer's source, so a reader uses a shard only while it still
equals what rendering would give.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import ml.rendering
from dagster_project.core.checks import CheckOutcome
from dagster_project.core.days import consecutive_stretches
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.integrity import verify_files
from dagster_project.core.klines import CURATED_INTERVALS
from dagster_project.core.lake import Lake
from dagster_project.transform.windows import DATASETS, WINDOW_SIZES
from ml.rendering import STYLES, CandleStyle, OhlcBarStyle, Style, WindowBatch, render
from ml.window_data import WindowPartition, attach_labels, load_windows

log = logging.getLogger(__name__)

LAYER = "images"
# What the images assets cache unless configured otherwise: every dataset and window size in the
# candle style, at the intervals where that stays cheap. 1m holds 78 % of a day's windows: caching
# it too made the images step of `candlelake run` (3 symbols x 3 days) 39 s instead of 11 s and
# the lake 101 MB larger instead of 9 MB (docs/lake.md); ml.image_dataset renders any interval on
# the fly.
DEFAULT_INTERVALS = ("15m", "1h")
DEFAULT_STYLES: tuple[Style, ...] = (CandleStyle(),)
SHARD_COLUMNS = ("decision_time", "label", "value", "known_at")
STYLE_METADATA = b"candlelake.style"
RENDERER_METADATA = b"candlelake.renderer"
CHECK_NAME = "images_match_windows"


@dataclass(frozen=True)
class ImageCacheSettings:
    """Which shards to render: every combination of these, for each day's datasets."""

    styles: tuple[Style, ...] = DEFAULT_STYLES
    window_sizes: tuple[int, ...] = WINDOW_SIZES
    intervals: tuple[str, ...] = DEFAULT_INTERVALS

    def __post_init__(self) -> None:
        for what in ("styles", "window_sizes", "intervals"):
            if not getattr(self, what):
                raise InvalidRequestError(f"no {what} to render; expected at least one")
        for interval in self.intervals:
            check_choice("interval", interval, CURATED_INTERVALS)
        for size in self.window_sizes:
            for style in self.styles:
                check_style(style, size)


@dataclass(frozen=True)
class CachedShard:
    interval: str
    window_size: int
    style: str  # the shard's style key
    images: int
    bytes: int


@dataclass(frozen=True)
class ImageShard:
    """A shard read back: its rows and their images, uint8 ``(B, C, H, W)``, in the same order."""

    frame: pl.DataFrame
    images: np.ndarray


def cache_dataset_day(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    day: dt.date,
    dataset: str,
    settings: ImageCacheSettings | None = None,
) -> list[CachedShard]:
    """Render and write every shard of one dataset for a symbol-day: each configured interval
    that has windows that day, each window size and style."""
    return cache_dataset_days(lake, con, symbol, [day], dataset, settings)


def cache_dataset_days(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    days: Sequence[dt.date],
    dataset: str,
    settings: ImageCacheSettings | None = None,
) -> list[CachedShard]:
    """``cache_dataset_day`` for each of a symbol's ``days``: the windows of consecutive days
    are loaded and rendered at once per interval, window size and style, then written one shard
    per day (the same shards as day by day, a query per stretch instead of per day)."""
    settings = settings or ImageCacheSettings()
    check_choice("dataset", dataset, dataset_names())
    shards = []
    for interval in settings.intervals:
        for stretch in window_stretches(lake, symbol, interval, days):
            for window_size in settings.window_sizes:
                part = WindowPartition(
                    symbol, interval, stretch[0], dataset, window_size, last_day=stretch[-1]
                )
                batch, frame = labelled_windows(lake, con, part)
                dates = frame["decision_time"].dt.date().to_numpy()
                for style in settings.styles:
                    images = render(batch, style)
                    for day in stretch:
                        rows = np.flatnonzero(dates == day)
                        day_part = dataclasses.replace(part, day=day, last_day=None)
                        shards.append(
                            write_shard(lake, day_part, style, images[rows], frame[rows])
                        )
    return shards


def window_stretches(
    lake: Lake, symbol: str, interval: str, days: Sequence[dt.date]
) -> list[list[dt.date]]:
    """``days`` with a windows partition at ``interval``, cut into runs of consecutive days."""
    return consecutive_stretches(d for d in days if has_windows(lake, symbol, interval, d))


def labelled_windows(
    lake: Lake, con: duckdb.DuckDBPyConnection, part: WindowPartition, label: str | None = None
) -> tuple[WindowBatch, pl.DataFrame]:
    """The partition's windows that have a value of their label (``label`` replaces the paired
    one), oldest first, and a frame decision_time, label, value, known_at in the same order."""
    batch, frame = load_windows(lake, con, part)
    frame = attach_labels(lake, part, frame, label)
    keep = frame["value"].is_not_null()
    return batch.take(np.flatnonzero(keep.to_numpy())), frame.filter(keep)


def render_chunks(batch: WindowBatch, style: Style, chunk_size: int) -> Iterator[np.ndarray]:
    """The batch's images, ``chunk_size`` windows at a time."""
    for first in range(0, batch.size, chunk_size):
        yield render(batch.take(slice(first, first + chunk_size)), style)


def write_shard(
    lake: Lake, part: WindowPartition, style: Style, images: np.ndarray, frame: pl.DataFrame
) -> CachedShard:
    """Write one day's shard: ``images`` rendered from the windows of ``frame``, in its order."""
    table = shard_table(frame, images, style, part.window_size)
    path = lake.write_partition(LAYER, part.dataset, shard_keys(part, style), table)
    key = style_key(style, part.window_size)
    return CachedShard(part.interval, part.window_size, key, len(images), path.stat().st_size)


def shard_table(frame: pl.DataFrame, images: np.ndarray, style: Style, window_size: int):
    """The shard's Arrow table: the frame's columns, the images as fixed-length binaries, their
    shape, and the style and renderer version as key-value metadata."""
    count, channels, height, width = images.shape
    flat = np.ascontiguousarray(images).reshape(count, channels * height * width)
    image = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(channels * height * width), count, [None, pa.py_buffer(flat)]
    )
    table = frame.select(SHARD_COLUMNS).to_arrow()
    table = table.append_column("image", image)
    for name, value in (("channels", channels), ("height", height), ("width", width)):
        table = table.append_column(name, pa.array(np.full(count, value, dtype=np.int16)))
    return table.replace_schema_metadata(shard_metadata(style, window_size))


def read_shard(lake: Lake, part: WindowPartition, style: Style) -> ImageShard | None:
    """The cached shard, or None when there is none or it was drawn with another style or
    another version of the renderer. Its images are a read-only view of the file's buffer."""
    path = shard_path(lake, part, style)
    verify_files([path])
    if not shard_is_current(path, style, part.window_size):
        return None
    table = pq.read_table(path)
    shape = image_shape(style, part.window_size)
    images = images_from_column(table.column("image"), shape)
    return ImageShard(pl.from_arrow(table.select(list(SHARD_COLUMNS))), images)


def shard_is_current(path: Path, style: Style, window_size: int) -> bool:
    if not path.is_file():
        return False
    metadata = pq.read_schema(path).metadata or {}
    expected = shard_metadata(style, window_size)
    if any(metadata.get(key) != value for key, value in expected.items()):
        log.info("ignoring %s: drawn with another style or renderer version", path)
        return False
    return True


def images_from_column(column: pa.ChunkedArray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 ``(B, C, H, W)`` over a fixed-size binary column's data buffer, without copying."""
    array = column.combine_chunks()
    size = int(np.prod(shape))
    if len(array) == 0:
        return np.empty((0, *shape), dtype=np.uint8)
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return data[array.offset * size : (array.offset + len(array)) * size].reshape(-1, *shape)


def shard_path(lake: Lake, part: WindowPartition, style: Style) -> Path:
    return lake.partition_file(LAYER, part.dataset, shard_keys(part, style))


def shard_keys(part: WindowPartition, style: Style) -> dict[str, object]:
    return {
        **part.keys,
        "window_size": part.window_size,
        "style": style_key(style, part.window_size),
    }


def style_key(style: Style, window_size: int) -> str:
    """``<name>-<H>x<W>``, plus ``-novol`` / ``-noma`` where those are switched off."""
    _, height, width = image_shape(style, window_size)
    key = f"{style.name}-{height}x{width}"
    if not style.volume:
        key += "-novol"
    if isinstance(style, OhlcBarStyle) and not style.moving_average:
        key += "-noma"
    return key


def shard_metadata(style: Style, window_size: int) -> dict[bytes, bytes]:
    description = {
        **dataclasses.asdict(style),
        "shape": list(image_shape(style, window_size)),
    }
    return {
        STYLE_METADATA: json.dumps(description, sort_keys=True).encode(),
        RENDERER_METADATA: renderer_version().encode(),
    }


@functools.cache
def renderer_version() -> str:
    """A hash of ``ml/rendering.py``: a shard drawn by another version is not reused."""
    return hashlib.sha256(Path(ml.rendering.__file__).read_bytes()).hexdigest()[:16]


def image_shape(style: Style, window_size: int) -> tuple[int, int, int]:
    height, width = style.size_for(window_size)
    return style.channels, height, width


# ---------------------------------------------------------------------------------------------
# The check: one cached image per labelled window


def check_images_match_windows(
    lake: Lake, symbol: str, day: dt.date, dataset: str, settings: ImageCacheSettings
) -> CheckOutcome:
    """For each configured interval with windows that day, window size and style: the shard's
    row count equals the windows of the dataset in ``windows/windows`` whose paired label has a
    value in ``labels/labels`` (counted from those two tables, independently of the renderer's
    loader). A missing shard counts as zero images."""
    shards, mismatched = 0, []
    for interval in settings.intervals:
        if not has_windows(lake, symbol, interval, day):
            continue
        expected = labelled_window_counts(lake, symbol, interval, day, dataset)
        for window_size in settings.window_sizes:
            part = WindowPartition(symbol, interval, day, dataset, window_size)
            for style in settings.styles:
                shards += 1
                cached = cached_image_count(lake, part, style)
                if cached != expected.get(window_size, 0):
                    mismatched.append(
                        f"{interval} w={window_size} {style_key(style, window_size)}: "
                        f"{cached} images, {expected.get(window_size, 0)} labelled windows"
                    )
    return CheckOutcome(
        CHECK_NAME,
        not mismatched,
        "every cached shard holds one image per labelled window of its interval and window size",
        {"shards": shards, "mismatched": mismatched},
    )


def labelled_window_counts(
    lake: Lake, symbol: str, interval: str, day: dt.date, dataset: str
) -> dict[int, int]:
    """Per window size: the dataset's windows whose paired label has a value that day."""
    keys = {"symbol": symbol, "interval": interval, "date": day}
    windows = lake.read_partition("windows", "windows", keys).filter(pl.col("dataset") == dataset)
    labels = lake.read_partition("labels", "labels", keys).filter(pl.col("value").is_not_null())
    labelled = windows.join(labels, on=["decision_time", "label"], how="semi")
    return {int(size): count for size, count in labelled.group_by("window_size").len().rows()}


def cached_image_count(lake: Lake, part: WindowPartition, style: Style) -> int:
    path = shard_path(lake, part, style)
    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0


# ---------------------------------------------------------------------------------------------
# Validation shared with ml.image_dataset


def has_windows(lake: Lake, symbol: str, interval: str, day: dt.date) -> bool:
    keys = {"symbol": symbol, "interval": interval, "date": day}
    return lake.partition_file("windows", "windows", keys).is_file()


def dataset_names() -> tuple[str, ...]:
    return tuple(d.name for d in DATASETS)


def check_choice(what: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        expected = ", ".join(map(str, allowed))
        raise InvalidRequestError(f"unknown {what} {value!r}; expected one of {expected}")


def check_style(style: Style, window_size: int) -> None:
    """Raises when ``style`` cannot draw a window of ``window_size`` candles (too few pixels):
    the renderer's own rules decide, by drawing one flat window."""
    if not isinstance(style, CandleStyle | OhlcBarStyle):
        raise InvalidRequestError(
            f"unknown image style {style!r}; expected one of {', '.join(STYLES)} "
            "(ml.rendering.CandleStyle or OhlcBarStyle)"
        )
    check_choice("window size", window_size, WINDOW_SIZES)
    ones = np.ones((1, window_size))
    flat = WindowBatch(ones, ones, ones, ones, ones, present=ones.astype(bool), ma=ones)
    try:
        render(flat, style)
    except ValueError as exc:
        raise InvalidRequestError(
            f"style {style} cannot draw {window_size}-candle windows: {exc}"
        ) from exc


def style_from_name(
    name: str,
    candle_height: int = 64,
    candle_width: int = 64,
    ohlc_height: int | None = None,
    volume: bool = True,
) -> Style:
    """A style by its ``ml.rendering.STYLES`` name with the given sizes (``ohlc_height`` None: the
    paper's 32 / 64 / 96 rows by window length)."""
    check_choice("image style", name, tuple(STYLES))
    if name == "candle":
        return CandleStyle(height=candle_height, width=candle_width, volume=volume)
    return OhlcBarStyle(height=ohlc_height, volume=volume)
