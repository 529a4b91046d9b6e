"""A torch dataset of candlestick images drawn on the fly from the lake's partitions.

``LakeImageDataset`` streams the samples of one dataset and window size (``windows/windows``
joined to ``labels/labels``) for some symbols at one interval over a range of UTC days, one
symbol-interval-day partition at a time: it loads the partition's windows
(``ml.window_data.load_windows``), joins their label values, drops windows without one, keeps one
split of one split spec's ``windows/splits`` if asked, and renders the rest in chunks. It holds
one partition's windows and one chunk of images at a time, never the whole range. Each item is an
``ImageSample``: the uint8 image ``(C, H, W)``, the label's value as a float32 scalar tensor, and
the decision time in microseconds since 1970-01-01 UTC (an int, so a DataLoader batches it into
an int64 tensor).

With ``use_cache=True`` a partition's images come from its cached ``images/<dataset>`` shard
(``ml.image_cache``) when the shard was drawn in the same style by the same renderer and
holds every wanted window, and are rendered otherwise; either way the bytes are the same.

Order is deterministic: symbols as given, days ascending, decision times ascending. Under a
DataLoader with several workers, partitions are dealt round-robin to the workers, so every sample
is produced exactly once. ``image_loader`` builds that DataLoader with spawned workers: a worker
forked from a process that has used polars can deadlock in polars' thread pool.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dagster_project.core.days import day_range
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import CURATED_INTERVALS
from dagster_project.core.lake import Lake, connect
from dagster_project.transform.labels import label_names
from ml.image_cache import (
    ImageShard,
    check_choice,
    check_style,
    dataset_names,
    labelled_windows,
    read_shard,
    render_chunks,
)
from ml.rendering import CandleStyle, Style
from ml.split_specs import DEFAULT_SPEC, SPEC, SplitSpec, resolve_spec
from ml.splits import SPLIT_LABELS, SplitError, label_horizon_bars
from ml.window_data import WindowPartition, attach_labels

CHUNK_SIZE = 256  # windows rendered at a time


class ImageSample(NamedTuple):
    image: torch.Tensor  # uint8 (C, H, W)
    label: torch.Tensor  # float32 scalar: the label's value
    decision_time: int  # µs since 1970-01-01 UTC


class LakeImageDataset(IterableDataset):
    """The labelled windows of ``dataset`` at ``window_size`` candles, as images.

    ``start`` and ``end`` are the first and last UTC day (inclusive). ``split`` keeps the samples
    of one split (train, validation, test, purged, embargoed) of the split spec ``split_spec``
    (``windows/splits/spec=<split_spec>``). ``between`` keeps the samples whose decision time
    lies in ``[start, end)`` (UTC datetimes), with or without a split: a fold's own test block
    out of its spec's test range, or a range chosen by its dates alone. ``label`` replaces each
    window's paired label by another one, e.g. a leakage control; the split filter still goes by
    the window's own sample, purged on the paired label's ``known_at``, so with a split the
    spec's embargo must cover the other label's horizon (a ``SplitError`` otherwise). Every
    partition must exist; a missing one is an error when the dataset is built, not in the middle
    of an epoch.
    """

    def __init__(
        self,
        lake: Lake | str | Path,
        symbols: str | Sequence[str],
        interval: str,
        start: dt.date | str,
        end: dt.date | str,
        dataset: str,
        window_size: int,
        style: Style | None = None,
        split: str | None = None,
        label: str | None = None,
        use_cache: bool = False,
        split_spec: str = DEFAULT_SPEC,
        chunk_size: int = CHUNK_SIZE,
        between: tuple[dt.datetime, dt.datetime] | None = None,
    ) -> None:
        super().__init__()
        self.lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
        self.symbols = (symbols,) if isinstance(symbols, str) else tuple(symbols)
        self.style = style or CandleStyle()
        self.split = split
        self.label = label
        self.use_cache = use_cache
        self.chunk_size = chunk_size
        self.between = check_between(between)
        check_request(interval, dataset, window_size, self.style, split, label, chunk_size)
        self.split_spec = resolve_spec(self.lake, split_spec) if split is not None else None
        if self.split_spec is not None and label is not None:
            check_embargo_covers(self.split_spec, label)
        self.partitions = tuple(
            WindowPartition(symbol, interval, day, dataset, window_size)
            for symbol in self.symbols
            for day in day_range(start, end)
        )
        check_partitions_exist(self.lake, self.partitions, self.split_spec)

    def __iter__(self) -> Iterator[ImageSample]:
        con = connect()
        try:
            if get_worker_info() is not None:  # workers already run in parallel
                con.execute("set threads = 1")
            for part in partitions_of_this_worker(self.partitions):
                yield from self.partition_samples(con, part)
        finally:
            con.close()

    def partition_samples(
        self, con: duckdb.DuckDBPyConnection, part: WindowPartition
    ) -> Iterator[ImageSample]:
        """The samples of one partition, in time order."""
        cached = self.cached_partition(part) if self.use_cache else None
        frame, chunks = cached if cached is not None else self.rendered_partition(con, part)
        values = torch.from_numpy(frame["value"].to_numpy().astype(np.float32))
        times = frame["decision_time"].dt.epoch("us").to_list()
        row = 0
        for chunk in chunks:
            for image in torch.from_numpy(chunk):
                yield ImageSample(image, values[row], times[row])
                row += 1

    def rendered_partition(
        self, con: duckdb.DuckDBPyConnection, part: WindowPartition
    ) -> tuple[pl.DataFrame, Iterator[np.ndarray]]:
        batch, frame = labelled_windows(self.lake, con, part, self.label)
        keep = self.kept_rows(part, frame)
        if keep is not None:
            batch, frame = batch.take(np.flatnonzero(keep.to_numpy())), frame.filter(keep)
        return frame, render_chunks(batch, self.style, self.chunk_size)

    def cached_partition(
        self, part: WindowPartition
    ) -> tuple[pl.DataFrame, Iterator[np.ndarray]] | None:
        """The wanted samples' images from the partition's shard; None when there is no current
        shard or it lacks some wanted window (labels landed after it was written)."""
        shard = read_shard(self.lake, part, self.style)
        if shard is None:
            return None
        wanted = self.wanted_windows(part)
        rows = shard_rows(shard, wanted)
        if rows is None:
            return None
        images = shard.images[rows]  # a copy: writable, and only the wanted rows
        chunks = (
            images[first : first + self.chunk_size]
            for first in range(0, len(images), self.chunk_size)
        )
        return wanted, chunks

    def wanted_windows(self, part: WindowPartition) -> pl.DataFrame:
        """decision_time, label, value, known_at of the samples to yield, read from
        ``windows/windows`` and ``labels/labels`` without loading candles."""
        windows = (
            self.lake.read_partition("windows", "windows", part.keys)
            .filter(
                (pl.col("dataset") == part.dataset) & (pl.col("window_size") == part.window_size)
            )
            .select("decision_time", "label")
            .sort("decision_time")
        )
        frame = attach_labels(self.lake, part, windows, self.label).filter(
            pl.col("value").is_not_null()
        )
        keep = self.kept_rows(part, frame)
        return frame if keep is None else frame.filter(keep)

    def kept_rows(self, part: WindowPartition, frame: pl.DataFrame) -> pl.Series | None:
        """Which of the partition's labelled windows ``frame`` are samples: in ``self.split``
        and within ``self.between``, where given; None keeps every row."""
        times = frame["decision_time"]
        keep = None
        if self.split is not None:
            keep = times.is_in(self.split_times(part).implode())
        if self.between is not None:
            start, end = self.between
            inside = (times >= start) & (times < end)
            keep = inside if keep is None else keep & inside
        return keep

    def split_times(self, part: WindowPartition) -> pl.Series:
        """The decision times of the partition's samples in ``self.split`` of the spec."""
        keys = {SPEC: self.split_spec.name, "symbol": part.symbol, "interval": part.interval}
        start = dt.datetime.combine(part.day, dt.time(), tzinfo=dt.UTC)
        return (
            pl.scan_parquet(self.lake.partition_files("windows", "splits", keys))
            .filter(
                (pl.col("dataset") == part.dataset)
                & (pl.col("window_size") == part.window_size)
                & (pl.col("split") == self.split)
                & (pl.col("decision_time") >= start)
                & (pl.col("decision_time") < start + dt.timedelta(days=1))
            )
            .select("decision_time")
            .collect()
            .to_series()
        )


def image_loader(
    dataset: LakeImageDataset, batch_size: int = CHUNK_SIZE, num_workers: int = 0, **kwargs
) -> DataLoader:
    """A DataLoader over ``dataset`` whose workers are spawned, not forked (unless
    ``multiprocessing_context`` says otherwise): batches are ``ImageSample`` of stacked tensors."""
    if num_workers > 0:
        kwargs.setdefault("multiprocessing_context", "spawn")
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)


def shard_rows(shard: ImageShard, wanted: pl.DataFrame) -> np.ndarray | None:
    """The shard row of each wanted decision time, or None if any is missing."""
    index = shard.frame.select("decision_time").with_row_index("row")
    rows = wanted.select("decision_time").join(
        index, on="decision_time", how="left", maintain_order="left"
    )["row"]
    return None if rows.null_count() else rows.to_numpy()


def partitions_of_this_worker(partitions: Sequence[WindowPartition]) -> Sequence[WindowPartition]:
    """Every partition in the main process; worker k of n takes partitions k, k + n, …"""
    worker = get_worker_info()
    if worker is None:
        return partitions
    return partitions[worker.id :: worker.num_workers]


def check_request(
    interval: str,
    dataset: str,
    window_size: int,
    style: Style,
    split: str | None,
    label: str | None,
    chunk_size: int,
) -> None:
    check_choice("interval", interval, CURATED_INTERVALS)
    check_choice("dataset", dataset, dataset_names())
    check_style(style, window_size)
    if split is not None:
        check_choice("split", split, SPLIT_LABELS)
    if label is not None:
        check_choice("label", label, label_names())
    if chunk_size < 1:
        raise InvalidRequestError(f"chunk_size must be at least 1, got {chunk_size}")


def check_between(
    between: tuple[dt.datetime, dt.datetime] | None,
) -> tuple[dt.datetime, dt.datetime] | None:
    """``between`` as two UTC datetimes, the first before the second."""
    if between is None:
        return None
    try:
        start, end = between
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"between must be (start, end), two UTC datetimes; got {between!r}"
        ) from None
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, dt.datetime) or value.utcoffset() != dt.timedelta(0):
            raise InvalidRequestError(
                f"between's {name} must be a UTC datetime (timezone-aware, offset 0), got {value!r}"
            )
    if not start < end:
        raise InvalidRequestError(
            f"between's start {start.isoformat()} must be before its end {end.isoformat()}"
        )
    return start, end


def check_embargo_covers(spec: SplitSpec, label: str) -> None:
    """Refuse ``label`` with a split of ``spec`` when it looks further ahead than the spec's
    embargo: the split was purged on each window's paired label, so a training row's ``label``
    could be known inside the next block."""
    horizon = label_horizon_bars(label)
    if horizon > spec.embargo_bars:
        raise SplitError(
            f"label {label!r} looks {horizon} bars ahead, but split spec {spec.name!r} embargoes "
            f"only {spec.embargo_bars} bars before each cut, so a training row's {label} could "
            f"be known inside the next block; use a spec with embargo_bars >= {horizon}"
        )


def check_partitions_exist(
    lake: Lake, partitions: Sequence[WindowPartition], spec: SplitSpec | None
) -> None:
    """Raises naming every missing partition and the asset that writes it."""
    missing = []
    for part in partitions:
        for layer, table in (("windows", "windows"), ("labels", "labels")):
            if not lake.partition_file(layer, table, part.keys).is_file():
                missing.append(f"{layer}/{table} {part.symbol} {part.interval} {part.day}")
    if spec is not None:
        for symbol, interval in dict.fromkeys((p.symbol, p.interval) for p in partitions):
            keys = {SPEC: spec.name, "symbol": symbol, "interval": interval}
            if not lake.partition_files("windows", "splits", keys):
                missing.append(f"windows/splits {spec.name} {symbol} {interval}")
    if missing:
        raise InvalidRequestError(
            f"the lake {lake.root} lacks {len(missing)} partition(s): {'; '.join(missing)}; "
            "materialize labels/labels and windows/windows for those days "
            "(and windows/splits of the split spec for a split) first"
        )
