"""The lake: Hive-partitioned Parquet under one root, written atomically, plus its DuckDB catalog.

Layout: ``<root>/<layer>/<table>/<key>=<value>/…/part-0.parquet`` with keys in the order
``symbol``, ``interval``, ``date`` (then any others). One partition is one leaf directory. A write
goes to a hidden temporary file in the leaf directory, is fsynced, then renamed over
``part-0.parquet`` (``os.replace`` is atomic on POSIX), so readers see the old partition or the new
one, never a mix, and a failure at any point leaves the old one in place.

A long-running writer (the order-book collector) adds to a partition instead: each flush is one
more immutable file ``part-<label>.parquet`` in the leaf, written the same atomic way, so what was
received survives a crash and nothing is rewritten. Readers take every ``part-*.parquet`` of a leaf.

Every data file gets a sidecar naming the sha256 of its bytes (``dagster_project.core.integrity``),
created before the rename, so damage on disk is detected before the file feeds another partition.
A temporary file's name holds its writer's pid and host; a writer sweeps the leftovers of dead
writers from the leaf it writes (a kill between the write and the rename leaves one).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_project.core.errors import InvalidRequestError, LakeWriteError
from dagster_project.core.integrity import (
    digest_of,
    leaf_names,
    orphan_sidecars,
    sidecar_path,
    sidecars,
    verify_files,
)
from dagster_project.core.sql import load_sql, parameters_of

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

# A temporary file: ``.<target>.<pid>@<host>.<hex>.tmp`` (older writers: ``.<target>.<hex>.tmp``),
# plus DuckDB's ``.wal`` beside a catalog being built.
_TEMP = re.compile(
    r"^\.(?P<target>.+?)\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?[0-9a-f]{32}\.tmp(?:\.wal)?$"
)
# A leftover whose writer's liveness cannot be checked (another host, or an old name without a
# pid) is swept once this old; a partition write takes seconds.
STALE_TEMP_SECONDS = 3600

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
        for orphan in orphan_sidecars(target.parent):
            orphan.unlink(missing_ok=True)
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
        return pl.read_parquet(verify_files(files))

    def partitions(self, layer: str, table: str) -> Iterator[dict[str, str]]:
        """The keys of every partition of a table that has a data file."""
        base = self.table_dir(layer, table)
        leaves = sorted({file.parent for file in base.rglob(PART_GLOB)})
        for leaf in leaves:
            yield dict(part.split("=", 1) for part in leaf.relative_to(base).parts)


def write_file_atomically(target: Path, data: pl.DataFrame | pa.Table, keys) -> Path:
    """Write ``data`` (partition keys dropped) to ``target`` via an fsynced temporary file,
    recording its hash in a sidecar before the rename (see ``dagster_project.core.integrity``)."""
    arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
    arrow = drop_partition_columns(arrow, keys)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(target.parent, "part-")
    tmp, new_sidecar = temp_path(target), None
    try:
        pq.write_table(arrow, tmp, compression="zstd")
        fsync(tmp)
        sidecar, new_sidecar = record_digest(tmp, target)
        os.replace(tmp, target)
        new_sidecar = None  # now the record of the target's bytes: kept whatever follows
        fsync(target.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if new_sidecar is not None:
            new_sidecar.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            raise LakeWriteError(
                f"could not write partition {target}: {exc}; the previous version is intact"
            ) from exc
        raise
    drop_other_sidecars(target, sidecar)
    log.debug("wrote %s rows to %s", arrow.num_rows, target)
    return target


def record_digest(tmp: Path, target: Path) -> tuple[Path, Path | None]:
    """Create ``target``'s sidecar for the bytes of ``tmp``, durably (the directory is fsynced,
    so the rename that follows cannot reach the disk before it). Returns the sidecar, and it
    again when this call created it (None when the same bytes were already recorded)."""
    sidecar = sidecar_path(target, digest_of(tmp))
    if sidecar.exists():
        return sidecar, None
    sidecar.touch()
    fsync(target.parent)
    return sidecar, sidecar


def drop_other_sidecars(target: Path, keep: Path) -> None:
    for sidecar in sidecars(target):
        if sidecar != keep:
            sidecar.unlink(missing_ok=True)


def temp_path(target: Path, pid: int | None = None, host: str | None = None) -> Path:
    """A fresh temporary name for ``target`` in its directory, naming the writer (this process
    unless ``pid`` and ``host`` say otherwise) so that a sweep can tell a dead writer's."""
    writer = f"{pid or os.getpid()}@{host or this_host()}"
    return target.parent / f".{target.name}.{writer}.{uuid.uuid4().hex}.tmp"


def sweep_stale_temps(directory: Path, target_prefix: str) -> list[Path]:
    """Delete the temporary files in ``directory`` of targets named ``target_prefix…`` whose
    writer is dead (this host) or that are older than ``STALE_TEMP_SECONDS`` (another host, or
    no writer in the name). A live writer's temporary file is never touched."""
    swept = []
    for name in leaf_names(directory):
        match = _TEMP.match(name)
        if match and match["target"].startswith(target_prefix) and is_stale(directory / name):
            (directory / name).unlink(missing_ok=True)
            swept.append(directory / name)
    if swept:
        log.info("swept %s leftover temporary files of dead writers from %s", len(swept), directory)
    return swept


def is_stale(path: Path) -> bool:
    match = _TEMP.match(path.name)
    if match["pid"] and match["host"] == this_host():
        return not pid_alive(int(match["pid"]))
    try:
        return time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS
    except FileNotFoundError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@functools.cache
def this_host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


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


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` (written beside ``target``) over ``target`` once its bytes are on disk, and
    make the rename itself durable: readers see the old file or the new one, never a mix."""
    fsync(tmp)
    os.replace(tmp, target)
    fsync(target.parent)


def write_bytes_atomically(target: Path, data: bytes) -> None:
    """``data`` to ``target`` through a temporary file in its directory, renamed over it (the
    lake's writing rule for files that are not Parquet partitions: checkpoints, model cards)."""
    tmp = temp_path(target)
    try:
        tmp.write_bytes(data)
        replace_durably(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# DuckDB: connections and the catalog of views


class CatalogRootWarning(UserWarning):
    """The catalog was built for a lake at another location (a copied or moved lake)."""


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


@dataclass(frozen=True)
class DerivedView:
    """A catalog view ``name`` defined by the query ``sql/<query>.sql`` over other views (a
    leaderboard over ``metrics``): created after the table views, in the order given, and only
    when every view it ``reads`` was created."""

    name: str
    query: str  # e.g. "results/leaderboard"
    reads: tuple[str, ...]


def build_catalog(lake: Lake, views: tuple[CatalogView | DerivedView, ...]) -> list[str]:
    """(Re)build ``<root>/candlelake.duckdb`` with one view per table that has data, then the
    derived views whose inputs exist.

    Built in a temporary file and renamed into place, so an open catalog is never half-built.
    Returns the names of the views created.
    """
    lake.root.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(lake.root, CATALOG_FILE)
    tmp = temp_path(lake.catalog_path)
    created = []
    try:
        con = connect(tmp, config={"storage_compatibility_version": CATALOG_STORAGE_VERSION})
        try:
            record_catalog_root(con, lake)
            for view in views:
                if isinstance(view, DerivedView):
                    continue
                keys = next(lake.partitions(view.layer, view.table), None)
                if keys is not None:
                    glob = lake.glob(view.layer, view.table, tuple(keys), view.files)
                    create_view(con, lake, view, view_ddl(view.name, glob, tuple(keys)))
                    created.append(view.name)
            for view in views:
                if isinstance(view, DerivedView) and set(view.reads) <= set(created):
                    con.execute(derived_view_ddl(view))
                    created.append(view.name)
        finally:
            con.close()
        os.replace(tmp, lake.catalog_path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return created


def create_view(
    con: duckdb.DuckDBPyConnection, lake: Lake, view: CatalogView, ddl: str
) -> None:
    """Run ``ddl``; DuckDB reads a file of the table to bind the view, so a failure there is
    reported as the table's damaged files when there are any."""
    try:
        con.execute(ddl)
    except duckdb.Error:
        verify_files(sorted(lake.table_dir(view.layer, view.table).rglob(view.files)))
        raise


def record_catalog_root(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Store where the catalog was built, in its one table (the rest are views): the views hold
    absolute globs into that lake, so a copied lake's catalog would read the original's files."""
    con.execute("create table candlelake_catalog (lake_root varchar, built_at timestamptz)")
    con.execute("insert into candlelake_catalog values ($root, now())", {"root": str(lake.root)})


def open_catalog(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the lake's catalog; warns when it reads another lake's files."""
    if not lake.catalog_path.is_file():
        raise InvalidRequestError(
            f"no catalog at {lake.catalog_path}; build it with `candlelake catalog`"
        )
    con = connect(lake.catalog_path, read_only=True)
    mismatch = catalog_root_mismatch_on(con, lake)
    if mismatch:
        warnings.warn(mismatch, CatalogRootWarning, stacklevel=2)
    return con


def catalog_root_mismatch(lake: Lake) -> str | None:
    """Why the lake's catalog would not read this lake's files, or None when it does.

    A copied or moved lake keeps a catalog whose views name the original location's files.
    """
    if not lake.catalog_path.is_file():
        return None
    con = connect(lake.catalog_path, read_only=True)
    try:
        return catalog_root_mismatch_on(con, lake)
    finally:
        con.close()


def catalog_root_mismatch_on(con: duckdb.DuckDBPyConnection, lake: Lake) -> str | None:
    fix = f"rebuild it with `candlelake --lake {lake.root} catalog`"
    recorded = con.execute(
        "select 1 from duckdb_tables() where table_name = 'candlelake_catalog'"
    ).fetchall()
    if not recorded:
        return (
            f"catalog {lake.catalog_path} does not record which lake it was built for (built "
            f"before candlelake recorded it); its views may read another lake's files; {fix}"
        )
    ((built_root,),) = con.execute("select lake_root from candlelake_catalog").fetchall()
    if same_path(Path(built_root), lake.root):
        return None
    return (
        f"catalog {lake.catalog_path} was built for the lake at {built_root}, not {lake.root}: "
        f"its views read {built_root}'s files; {fix}"
    )


def same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


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


def derived_view_ddl(view: DerivedView) -> str:
    """``create view`` over the query of ``view``, which takes no parameters (a view has none)."""
    if not _NAME.match(view.name):
        raise InvalidRequestError(
            f"bad view name {view.name!r}; expected lowercase letters, digits, _"
        )
    query = load_sql(view.query)
    if parameters_of(query):
        raise InvalidRequestError(
            f"sql/{view.query}.sql takes parameters {sorted(parameters_of(query))}; a derived "
            "view's query takes none"
        )
    return f"create or replace view {view.name} as\n{query.rstrip().removesuffix(';')}"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
