"""The lake: Hive-partitioned Parquet under one root, written atomically, plus its DuckDB catalog.

Layout: ``<root>/<layer>/<table>/<key>=<value>/…/part-0.parquet`` with keys in the order
``symbol``, ``interval``, ``date`` (then any others). One partition is one leaf directory. A write
goes to a hidden temporary file in the leaf directory, is fsynced, then renamed over
``part-0.parquet`` (``os.replace`` is atomic on POSIX), so readers see the old partition or the new
one, never a mix, and a failure at any point leaves the old one in place.

A long-running writer (the order-book collector) adds to a partition instead: each flush is one
more immutable file ``part-<label>.parquet`` in the leaf, written the same atomic way, so what was
received survives a crash and nothing is rewritten. Readers take every ``part-*.parquet`` of a leaf.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_project.errors import InvalidRequestError, LakeWriteError

log = logging.getLogger(__name__)

LAKE_ENV_VAR = "CANDLELAKE_LAKE"
DEFAULT_LAKE_ROOT = "lake"
PARTITION_FILE = "part-0.parquet"
PART_GLOB = "part-*.parquet"
_PART_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
CATALOG_FILE = "candlelake.duckdb"
# The catalog is written in an older storage format so that the `duckdb` command (the duckdb-cli
# package, a release behind the Python package) opens it as well as Python does.
CATALOG_STORAGE_VERSION = "v1.4.0"

# Partition keys in path order; any other key follows these, in the order given. A split spec
# (windows/splits) comes first: one spec's splits are one folder.
KEY_ORDER = ("spec", "symbol", "interval", "date")
# DuckDB types of the partition keys, so a view never guesses ("1INCHUSDT" stays text).
HIVE_TYPES = {
    "symbol": "VARCHAR",
    "interval": "VARCHAR",
    "date": "DATE",
    "window_size": "INTEGER",
}

_KEY_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Lake:
    """A lake rooted at ``root``; every path the project writes or reads comes from here."""

    root: Path

    @classmethod
    def from_env(cls, default: str | Path = DEFAULT_LAKE_ROOT) -> Lake:
        return cls(Path(os.environ.get(LAKE_ENV_VAR, default)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILE

    def table_dir(self, layer: str, table: str) -> Path:
        for what, name in (("layer", layer), ("table", table)):
            if not _NAME.match(name):
                raise InvalidRequestError(
                    f"bad lake {what} name {name!r}; expected lowercase letters, digits and _"
                )
        return self.root / layer / table

    def partition_dir(self, layer: str, table: str, keys: Mapping[str, object]) -> Path:
        path = self.table_dir(layer, table)
        for key, value in ordered_keys(keys):
            path = path / f"{key}={value}"
        return path

    def partition_file(self, layer: str, table: str, keys: Mapping[str, object]) -> Path:
        return self.partition_dir(layer, table, keys) / PARTITION_FILE

    def glob(
        self, layer: str, table: str, keys: tuple[str, ...] = (), files: str = PARTITION_FILE
    ) -> str:
        """The ``read_parquet`` glob of every partition file of a table.

        Given the table's partition keys, the glob spells out each level and the file name
        (``symbol=*/interval=*/date=*/part-0.parquet``): DuckDB expands that about twice as fast
        as a recursive ``**/*.parquet`` on a lake of thousands of partitions. Tables a collector
        appends to pass ``files=PART_GLOB``.
        """
        if not keys:
            return str(self.table_dir(layer, table) / "**" / "*.parquet")
        levels = [f"{key}=*" for key, _ in ordered_keys(dict.fromkeys(keys, "x"))]
        return str(self.table_dir(layer, table).joinpath(*levels, files))

    def write_partition(
        self,
        layer: str,
        table: str,
        keys: Mapping[str, object],
        data: pl.DataFrame | pa.Table,
    ) -> Path:
        """Replace one partition with ``data`` atomically; returns the partition file."""
        target = self.partition_file(layer, table, keys)
        written = write_file_atomically(target, data, keys)
        for stale in target.parent.glob(PART_GLOB):
            if stale != target:  # parts appended by a collector: the partition is replaced whole
                stale.unlink(missing_ok=True)
        return written

    def append_part(
        self,
        layer: str,
        table: str,
        keys: Mapping[str, object],
        data: pl.DataFrame | pa.Table,
        label: str,
    ) -> Path:
        """Add ``data`` to a partition as one more file ``part-<label>.parquet``, atomically."""
        if not _PART_LABEL.match(label) or label == "0":
            raise InvalidRequestError(
                f"bad part label {label!r}; expected letters, digits, '_', '.', '-' (not '0')"
            )
        target = self.partition_dir(layer, table, keys) / f"part-{label}.parquet"
        return write_file_atomically(target, data, keys)

    def partition_files(self, layer: str, table: str, keys: Mapping[str, object]) -> list[Path]:
        return sorted(self.partition_dir(layer, table, keys).glob(PART_GLOB))

    def read_partition(self, layer: str, table: str, keys: Mapping[str, object]) -> pl.DataFrame:
        files = self.partition_files(layer, table, keys)
        if not files:
            raise InvalidRequestError(
                f"partition {self.partition_dir(layer, table, keys)} has no data files"
            )
        return pl.read_parquet(files)

    def partitions(self, layer: str, table: str) -> Iterator[dict[str, str]]:
        """The keys of every partition of a table that has a data file."""
        base = self.table_dir(layer, table)
        leaves = sorted({file.parent for file in base.rglob(PART_GLOB)})
        for leaf in leaves:
            yield dict(part.split("=", 1) for part in leaf.relative_to(base).parts)


def write_file_atomically(target: Path, data: pl.DataFrame | pa.Table, keys) -> Path:
    """Write ``data`` (partition keys dropped) to ``target`` via an fsynced temporary file."""
    arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
    arrow = drop_partition_columns(arrow, keys)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(arrow, tmp, compression="zstd")
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            raise LakeWriteError(
                f"could not write partition {target}: {exc}; the previous version is intact"
            ) from exc
        raise
    log.debug("wrote %s rows to %s", arrow.num_rows, target)
    return target


def ordered_keys(keys: Mapping[str, object]) -> list[tuple[str, str]]:
    """Keys in lake path order, values as validated strings (dates as ``YYYY-MM-DD``)."""
    rest = [k for k in keys if k not in KEY_ORDER]
    ordered = [k for k in KEY_ORDER if k in keys] + rest
    result = []
    for key in ordered:
        value = keys[key]
        text = value.isoformat() if isinstance(value, dt.date) else str(value)
        if not _NAME.match(key) or not _KEY_VALUE.match(text):
            raise InvalidRequestError(
                f"bad partition key {key}={text!r}; expected a lowercase name and a value of "
                "letters, digits, '_', '.', ':' or '-'"
            )
        result.append((key, text))
    return result


def drop_partition_columns(arrow: pa.Table, keys: Mapping[str, object]) -> pa.Table:
    """Partition keys live in the path (Hive style), never inside the file."""
    present = [k for k in keys if k in arrow.column_names]
    return arrow.drop_columns(present) if present else arrow


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# DuckDB: connections and the catalog of views


def connect(
    database: str | Path = ":memory:", read_only: bool = False, config: dict | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that works in UTC (``time_bucket`` and casts depend on the time zone)."""
    con = duckdb.connect(str(database), read_only=read_only, config=config or {})
    con.execute("set global TimeZone = 'UTC'")  # global: cursors of this connection inherit it
    return con


@dataclass(frozen=True)
class CatalogView:
    """A catalog view ``name`` over the lake table ``layer/table``."""

    name: str
    layer: str
    table: str
    files: str = PARTITION_FILE  # PART_GLOB for tables a collector appends parts to


def build_catalog(lake: Lake, views: tuple[CatalogView, ...]) -> list[str]:
    """(Re)build ``<root>/candlelake.duckdb`` with one view per table that has data.

    Built in a temporary file and renamed into place, so an open catalog is never half-built.
    Returns the names of the views created.
    """
    lake.root.mkdir(parents=True, exist_ok=True)
    tmp = lake.root / f".{CATALOG_FILE}.{uuid.uuid4().hex}.tmp"
    created = []
    try:
        con = connect(tmp, config={"storage_compatibility_version": CATALOG_STORAGE_VERSION})
        try:
            for view in views:
                keys = next(lake.partitions(view.layer, view.table), None)
                if keys is not None:
                    glob = lake.glob(view.layer, view.table, tuple(keys), view.files)
                    con.execute(view_ddl(view.name, glob, tuple(keys)))
                    created.append(view.name)
        finally:
            con.close()
        os.replace(tmp, lake.catalog_path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return created


def view_ddl(name: str, glob: str, keys: tuple[str, ...]) -> str:
    """``create view`` over a Hive-partitioned glob.

    Not ``union_by_name``: it reads every file's schema on each query (3x slower at 2,000
    partitions); the writer keeps one schema per table instead.

    DuckDB views cannot take parameters, so the path is embedded as a quoted literal; the name is
    checked against ``_NAME`` and the path quoted, never interpolated raw.
    """
    if not _NAME.match(name):
        raise InvalidRequestError(f"bad view name {name!r}; expected lowercase letters, digits, _")
    hive_types = ", ".join(f"'{k}': {HIVE_TYPES.get(k, 'VARCHAR')}" for k in keys if _NAME.match(k))
    return (
        f"create or replace view {name} as select * from read_parquet({sql_literal(glob)}, "
        f"hive_partitioning = true, hive_types = {{{hive_types}}})"
    )


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
