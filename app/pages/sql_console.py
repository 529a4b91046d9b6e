"""SQL: a console over the catalog that cannot change or escape it (read-only, no file or network
access, no extensions, one statement, a row limit and a timeout), the views' schemas beside it."""

from __future__ import annotations

import streamlit as st

from app.data import require_catalog, view_columns
from dagster_project.core.console import ConsoleError, open_console
from dagster_project.core.lake import Lake

ROW_LIMIT = 1000
DEFAULT_TIMEOUT_S = 20
MAX_TIMEOUT_S = 120
EXAMPLE = "select symbol, interval, count(*) as bars\nfrom klines\ngroup by all\norder by all"


def main() -> None:
    st.title("SQL")
    lake = require_catalog()
    editor, schema = st.columns([3, 1])
    with schema:
        show_schema()
    with editor:
        st.caption(
            f"One read-only query over the catalog views; at most {ROW_LIMIT} rows, stopped at the "
            "time limit. Writing, reading other files, ATTACH and INSTALL are refused."
        )
        sql = st.text_area("Query", EXAMPLE, height=180)
        timeout_s = st.number_input(
            "Time limit (s)", min_value=1, max_value=MAX_TIMEOUT_S, value=DEFAULT_TIMEOUT_S
        )
        if st.button("Run", type="primary"):
            run(lake, sql, timeout_s)


def run(lake: Lake, sql: str, timeout_s: float) -> None:
    try:
        with open_console(lake, row_limit=ROW_LIMIT, timeout_s=timeout_s) as console:
            for warning in console.warnings:
                st.warning(warning)
            result = console.run(sql)
    except ConsoleError as exc:
        st.error(str(exc))
        return
    st.dataframe(result.frame(), hide_index=True)
    if result.truncated:
        st.warning(f"Showing the first {ROW_LIMIT} rows; the query returned more.")


def show_schema() -> None:
    st.subheader("Views")
    for view, columns in view_columns().items():
        with st.expander(view):
            st.markdown("\n".join(f"- `{name}` {kind}" for name, kind in columns))


main()
