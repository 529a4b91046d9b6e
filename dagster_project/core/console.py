"""A safe SQL console over the lake catalog: one read-only query at a time, bounded in rows, time.

The catalog is opened read-only, then locked down before any user SQL runs: DuckDB may read files
only below the lake's root (which the catalog views read), nothing else on disk or on the network,
may not install or load extensions, and the configuration is locked so no ``SET`` undoes that.
On top, only a single ``select``-like statement is accepted, at most ``row_limit`` rows come back
(the result says when it was cut), and a watchdog interrupts a query running past ``timeout_s``.

Used by ``candlelake sql`` and meant for the explorer app; each query runs on its own cursor, so
one console may serve several threads.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import duckdb
import polars as pl

from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.lake import Lake, catalog_root_mismatch, connect

DEFAULT_ROW_LIMIT = 1000
DEFAULT_TIMEOUT_S = 60.0

# Statement types a console runs; DESCRIBE, SHOW, SUMMARIZE, FROM-first and VALUES parse as SELECT.
READ_ONLY_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})

# The catalog under the name the `duckdb` command gives it, so qualified names read the same.
_ATTACH_CATALOG = "attach $path as candlelake (read_only)"
_USE_CATALOG = "use candlelake"
# Applied in this order: the allowed directories must be set while external access is still on,
# and locking the configuration comes last.
_LOCKDOWN = (
    "set allowed_directories = $directories",
    "set enable_external_access = false",
    "set autoinstall_known_extensions = false",
    "set autoload_known_extensions = false",
    "set lock_configuration = true",
)


class ConsoleError(CandlelakeError):
    """A console query was refused, failed or ran too long; the message says which and why."""


@dataclass(frozen=True)
class ConsoleResult:
    """The first rows of a query's result; ``truncated`` when the query had more than were kept."""

    columns: list[str]
    rows: list[tuple]
    truncated: bool

    def frame(self) -> pl.DataFrame:
        """The rows as a DataFrame; repeated column names get a ``_2``, ``_3``… suffix."""
        return pl.DataFrame(
            self.rows, schema=unique_names(self.columns), orient="row", infer_schema_length=None
        )

    def table(self) -> str:
        """The rows as a text table, every row and column shown."""
        with pl.Config(
            tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_hide_dataframe_shape=True
        ):
            return str(self.frame())


@dataclass
class Console:
    """A locked-down, read-only connection to a lake's catalog (see ``open_console``)."""

    connection: duckdb.DuckDBPyConnection
    row_limit: int = DEFAULT_ROW_LIMIT
    timeout_s: float = DEFAULT_TIMEOUT_S
    warnings: list[str] = field(default_factory=list)  # e.g. the catalog was built for another lake

    def run(self, sql: str) -> ConsoleResult:
        """Run one read-only statement; at most ``row_limit`` rows, stopped after ``timeout_s``."""
        check_read_only(self.connection, sql)
        cursor = self.connection.cursor()
        timed_out = threading.Event()
        watchdog = threading.Timer(self.timeout_s, interrupt, (cursor, timed_out))
        watchdog.start()
        try:
            cursor.execute(_USE_CATALOG)  # a cursor starts in the in-memory database
            cursor.execute(sql)
            columns = [column[0] for column in cursor.description]
            rows = cursor.fetchmany(self.row_limit + 1)
        except duckdb.InterruptException as exc:
            if timed_out.is_set():
                raise ConsoleError(
                    f"query stopped after {self.timeout_s:g} s, the console's time limit; narrow "
                    "it (where on symbol, interval, date) or raise the limit"
                ) from exc
            raise ConsoleError("query interrupted") from exc
        except duckdb.PermissionException as exc:
            raise ConsoleError(
                f"{first_line(exc)}; the console reads only the lake, through the catalog views"
            ) from exc
        except duckdb.Error as exc:
            raise ConsoleError(first_line(exc)) from exc
        finally:
            watchdog.cancel()
            cursor.close()
        return ConsoleResult(columns, rows[: self.row_limit], len(rows) > self.row_limit)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_console(
    lake: Lake, row_limit: int = DEFAULT_ROW_LIMIT, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Console:
    """The lake's catalog, read-only and locked down, for untrusted ad-hoc queries.

    Raises ``InvalidRequestError`` when the lake has no catalog and ``ConsoleError`` when DuckDB
    cannot open it (another process holds it for writing, or it is not a DuckDB file).
    """
    if row_limit < 1:
        raise ConsoleError(f"row limit {row_limit} is not positive; expected at least 1 row")
    if not timeout_s > 0:
        raise ConsoleError(f"timeout {timeout_s} s is not positive; expected more than 0 s")
    if not lake.catalog_path.is_file():
        raise InvalidRequestError(
            f"no catalog at {lake.catalog_path}; build it with `candlelake catalog`"
        )
    # Not open_catalog(): DuckDB shares one database instance among a process's connections to a
    # file, so locking that down would lock every other connection to the catalog too. A private
    # in-memory database attaching the catalog read-only is locked down alone.
    con = connect()
    try:
        mismatch = catalog_root_mismatch(lake)
        con.execute(_ATTACH_CATALOG, {"path": str(lake.catalog_path)})
        lock_down(con, lake)
    except duckdb.Error as exc:
        con.close()
        raise ConsoleError(f"cannot open catalog {lake.catalog_path}: {first_line(exc)}") from exc
    return Console(con, row_limit, timeout_s, [mismatch] if mismatch else [])


def lock_down(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Let ``con`` read files below the lake's root only, load nothing, and change no setting."""
    # Both spellings of the root: the views name it as given, which may run through a symlink.
    roots = {str(lake.root), os.path.realpath(lake.root)}
    directories = sorted(os.path.join(root, "") for root in roots)  # trailing /: not lake2/
    for statement in _LOCKDOWN:
        params = {"directories": directories} if "$directories" in statement else None
        con.execute(statement, params)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ``ConsoleError`` unless ``sql`` is a single read-only statement."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConsoleError(first_line(exc)) from exc
    if not statements:
        raise ConsoleError(
            f"no statement in {sql!r}; expected one query, e.g. select * from klines limit 10"
        )
    if len(statements) > 1:
        raise ConsoleError(
            f"refused {len(statements)} statements; the console runs one query at a time"
        )
    statement = statements[0]
    if statement.type.name not in READ_ONLY_STATEMENTS:
        kind, word = statement.type.name, statement.query.split(maxsplit=1)[0].upper()
        named = word if word == kind else f"{word} (a {kind} statement)"  # INSTALL is a LOAD
        raise ConsoleError(
            f"refused {named}: the console runs read-only queries only "
            "(select, from, with, describe, show, summarize, explain)"
        )


def interrupt(cursor: duckdb.DuckDBPyConnection, timed_out: threading.Event) -> None:
    timed_out.set()
    cursor.interrupt()


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique
