"""Load a query from ``sql/`` and run it with DuckDB named parameters (``$name``).

Values reach DuckDB only as bound parameters; the text of a query is never formatted in Python.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable

import duckdb

from dagster_project.core.errors import InvalidRequestError

# The repo's top-level sql/ folder, shipped as this package (package-dir in pyproject.toml), so
# queries load the same from an editable install and from a wheel.
SQL_ROOT: Traversable = files("dagster_project.queries")

_PARAMETER = re.compile(r"(?<![\w$])\$([a-z_][a-z0-9_]*)")
_LINE_COMMENT = re.compile(r"--[^\n]*")
_STRING = re.compile(r"'(?:[^']|'')*'")


@functools.cache
def load_sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (``name`` like ``"curate/klines"``)."""
    resource = SQL_ROOT.joinpath(*f"{name}.sql".split("/"))
    if not resource.is_file():
        raise InvalidRequestError(
            f"no SQL file sql/{name}.sql; known queries: {', '.join(query_names())}"
        )
    return resource.read_text(encoding="utf-8")


def query_names() -> list[str]:
    """Every query ``load_sql`` can load, like ``"curate/klines"``."""
    return sorted(_query_names(SQL_ROOT, prefix=""))


def _query_names(folder: Traversable, prefix: str) -> Iterator[str]:
    for entry in folder.iterdir():
        if entry.is_dir():
            yield from _query_names(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".sql"):
            yield prefix + entry.name.removesuffix(".sql")


def parameters_of(sql: str) -> set[str]:
    """The ``$name`` parameters a query uses (comments and string literals ignored)."""
    code = _STRING.sub("''", _LINE_COMMENT.sub("", sql))
    return set(_PARAMETER.findall(code))


def run_sql(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, object]
) -> duckdb.DuckDBPyRelation:
    """Run ``sql/<name>.sql`` with exactly the parameters it declares."""
    sql = load_sql(name)
    expected = parameters_of(sql)
    missing, extra = expected - set(params), set(params) - expected
    if missing or extra:
        raise InvalidRequestError(
            f"sql/{name}.sql takes parameters {sorted(expected)}; "
            f"missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    return con.sql(sql, params=dict(params))
