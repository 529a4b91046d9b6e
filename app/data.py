"""The explorer's one way to the lake: cached, read-only queries of the catalog.

Every query is a file ``sql/app/<name>.sql`` run on a fresh read-only connection to the lake's
catalog. Results are cached with ``st.cache_data`` keyed on the query, its parameters and the
catalog file's modification time, so a rebuilt catalog (a new materialization) shows without a
restart. Large tables are limited or sampled in the SQL itself, never loaded whole here.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from dagster_project.core.lake import Lake, connect
from dagster_project.core.sql import run_sql

SQL_FOLDER = "app"  # sql/app/<name>.sql
COLUMNS_QUERY = "catalog_columns"


def lake() -> Lake:
    """The lake the app reads: ``CANDLELAKE_LAKE``, else ``./lake``, as an absolute path."""
    return Lake.from_env()


def catalog_mtime() -> float | None:
    """The catalog file's modification time; None when it is missing."""
    path = lake().catalog_path
    return path.stat().st_mtime if path.is_file() else None


def require_catalog() -> Lake:
    """The lake, or an error naming the command that builds it, and the page stops there."""
    the_lake = lake()
    if catalog_mtime() is None:
        st.error(
            f"No lake catalog at `{the_lake.catalog_path}`. Build the lake with `make run`, or "
            "build the catalog of an existing lake with `.venv/bin/candlelake catalog` "
            "(set CANDLELAKE_LAKE to read a lake elsewhere)."
        )
        st.stop()
    return the_lake


def query(name: str, **params: object) -> pl.DataFrame:
    """The rows of ``sql/app/<name>.sql`` run with ``params`` on the catalog (cached)."""
    return _cached_query(str(lake().catalog_path), catalog_mtime(), name, params)


def view_columns() -> dict[str, list[tuple[str, str]]]:
    """Every catalog view's columns as (name, type), in column order (cached like ``query``)."""
    rows = query(COLUMNS_QUERY)
    return {
        view: list(zip(group["column_name"], group["data_type"], strict=True))
        for (view,), group in rows.group_by("view_name", maintain_order=True)
    }


# The catalog's mtime is an argument only to key the cache: a rebuilt catalog misses it.
@st.cache_data(show_spinner=False)
def _cached_query(
    catalog: str, mtime: float | None, name: str, params: dict[str, object]
) -> pl.DataFrame:
    con = connect(catalog, read_only=True)
    try:
        return run_sql(con, f"{SQL_FOLDER}/{name}", params).pl()
    finally:
        con.close()
