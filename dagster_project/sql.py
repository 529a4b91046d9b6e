"""Load a query from ``sql/`` and run it with DuckDB named parameters (``$name``).

Values reach DuckDB only as bound parameters; the text of a query is never formatted in Python.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

import duckdb

from dagster_project.errors import InvalidRequestError

SQL_ROOT = Path(__file__).resolve().parents[1] / "sql"

_PARAMETER = re.compile(r"(?<![\w$])\$([a-z_][a-z0-9_]*)")
_LINE_COMMENT = re.compile(r"--[^\n]*")
_STRING = re.compile(r"'(?:[^']|'')*'")


@functools.cache
def load_sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (``name`` like ``"curate/klines"``)."""
    path = SQL_ROOT / f"{name}.sql"
    if not path.is_file():
        known = sorted(
            str(p.relative_to(SQL_ROOT).with_suffix("")) for p in SQL_ROOT.rglob("*.sql")
        )
        raise InvalidRequestError(f"no SQL file {path}; known queries: {', '.join(known)}")
    return path.read_text()


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
