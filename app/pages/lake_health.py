"""Lake health: per lake table its partitions, rows, first and last day and freshness; the gaps
of each series; and the latest asset-check results recorded in the Dagster instance, each
asset linked to the Dagster UI."""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
import time
from pathlib import Path

import dagster as dg
import polars as pl
import streamlit as st

from app.data import catalog_mtime, query, require_catalog, view_columns

DAGSTER_UI_ENV = "DAGSTER_UI_URL"
DEFAULT_DAGSTER_UI = "http://127.0.0.1:3000"
DEFAULT_DAGSTER_HOME = ".dagster_home"  # what `make run` records into when DAGSTER_HOME is unset
# The check evaluations read from the instance, newest first: enough to hold the latest result of
# every check of every asset (the event log has no index of check keys without the definitions).
CHECK_EVENTS_SCANNED = 20_000
_VIEW_GLOB = re.compile(r"read_parquet\('((?:[^']|'')*)'")
_DAY = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def main() -> None:
    st.title("Lake health")
    require_catalog()
    ui = dagster_ui_url()
    st.subheader("Tables")
    st.dataframe(
        table_health(catalog_mtime(), ui),
        hide_index=True,
        height="content",  # one row per table: a few dozen, all of them in view
        column_config={
            "first_day": st.column_config.DateColumn(format="YYYY-MM-DD"),
            "last_day": st.column_config.DateColumn(format="YYYY-MM-DD"),
            "dagster": st.column_config.LinkColumn(display_text="open in Dagster"),
        },
    )
    st.subheader("Gaps")
    show_gaps()
    st.subheader("Asset checks")
    show_checks(dagster_home(), ui)


def dagster_ui_url() -> str:
    return os.environ.get(DAGSTER_UI_ENV, DEFAULT_DAGSTER_UI).rstrip("/")


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).absolute()


def asset_link(ui: str, asset_path: list[str] | tuple[str, ...]) -> str:
    return f"{ui}/assets/{'/'.join(asset_path)}"


@st.cache_data(ttl=60, show_spinner="Reading the lake's tables…")
def table_health(_catalog_mtime: float | None, ui: str) -> pl.DataFrame:
    """One row per catalog view over a lake table (derived views have no files of their own)."""
    now = time.time()
    rows = []
    for view, sql in query("health_views").iter_rows():
        pattern = view_glob(sql)
        if pattern is not None:
            rows.append(table_row(view, pattern, now, ui))
    return pl.DataFrame(rows, schema=TABLE_SCHEMA, orient="row")


TABLE_SCHEMA = {
    "view": pl.String,
    "table": pl.String,
    "partitions": pl.Int64,
    "files": pl.Int64,
    "rows": pl.Int64,
    "first_day": pl.Date,
    "last_day": pl.Date,
    "newest_file_age": pl.String,
    "newest_day_age": pl.String,
    "dagster": pl.String,
}


def view_glob(view_sql: str) -> str | None:
    """The Parquet glob a catalog view reads, or None for a view over other views."""
    found = _VIEW_GLOB.search(view_sql)
    return found.group(1).replace("''", "'") if found else None


def table_row(view: str, pattern: str, now: float, ui: str) -> tuple:
    files = [Path(name) for name in glob.glob(pattern, recursive=True)]
    table = table_path(pattern)
    days = sorted({day for file in files for day in days_of(file)})
    newest_mtime = max((file.stat().st_mtime for file in files), default=None)
    last_day = days[-1] if days else None
    return (
        view,
        "/".join(table),
        len({file.parent for file in files}),
        len(files),
        query("health_table_rows", view=view)["rows"][0],
        days[0] if days else None,
        last_day,
        None if newest_mtime is None else age_text(now - newest_mtime),
        None if last_day is None else day_age_text(last_day),
        asset_link(ui, table),
    )


def table_path(pattern: str) -> tuple[str, str]:
    """``(layer, table)`` of a view's glob: the two folders above its first wildcard level; also
    the table's Dagster asset key (asset keys equal lake paths)."""
    parts = Path(pattern).parts
    first_wild = next(i for i, part in enumerate(parts) if "*" in part)
    return parts[first_wild - 2], parts[first_wild - 1]


def days_of(file: Path) -> list[dt.date]:
    return [dt.date.fromisoformat(m.group(1)) for part in file.parts if (m := _DAY.match(part))]


def age_text(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def day_age_text(day: dt.date) -> str:
    days = (dt.datetime.now(dt.UTC).date() - day).days
    return "today" if days == 0 else f"{days} d"


def show_gaps() -> None:
    if "kline_gaps" not in view_columns():
        st.info("No `kline_gaps` table in the catalog: no gaps have been recorded.")
        return
    gaps = query("health_gaps")
    if gaps.is_empty():
        st.success("No gaps recorded in any series.")
    else:
        st.dataframe(gaps, hide_index=True)


def show_checks(home: Path, ui: str) -> None:
    if not (home / "dagster.yaml").is_file():
        st.warning(
            f"No Dagster instance at `{home}` (DAGSTER_HOME, default ./.dagster_home), so no "
            "asset-check results to show. Create it with `make run`, which records the main "
            "job's runs and checks there."
        )
        return
    checks = latest_checks(str(home), ui)
    if checks.is_empty():
        st.info(f"The Dagster instance at `{home}` has no asset-check results yet.")
        return
    failed = checks.filter(~pl.col("passed"))
    st.caption(f"{checks.height} checks, {failed.height} failing (latest result of each)")
    st.dataframe(
        checks,
        hide_index=True,
        column_config={"dagster": st.column_config.LinkColumn(display_text="open in Dagster")},
    )


CHECK_SCHEMA = {
    "asset": pl.String,
    "check": pl.String,
    "passed": pl.Boolean,
    "severity": pl.String,
    "partition": pl.String,
    "evaluated_at": pl.Datetime("us", "UTC"),
    "run_id": pl.String,
    "dagster": pl.String,
}


@st.cache_data(ttl=30, show_spinner="Reading the Dagster instance…")
def latest_checks(home: str, ui: str) -> pl.DataFrame:
    """The latest evaluation of each asset check in the instance at ``home`` (read only)."""
    instance = dg.DagsterInstance.from_config(home)
    try:
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
            limit=CHECK_EVENTS_SCANNED,
            ascending=False,
        )
    finally:
        instance.dispose()
    latest = {}
    for record in records:  # newest first: the first evaluation of a check is its latest
        entry = record.event_log_entry
        evaluation = entry.dagster_event.event_specific_data
        key = (tuple(evaluation.asset_key.path), evaluation.check_name)
        if key not in latest:
            latest[key] = check_row(evaluation, entry, ui)
    rows = sorted(latest.values(), key=lambda row: (row[2], row[0], row[1]))
    return pl.DataFrame(rows, schema=CHECK_SCHEMA, orient="row")


def check_row(evaluation: dg.AssetCheckEvaluation, entry, ui: str) -> tuple:
    return (
        "/".join(evaluation.asset_key.path),
        evaluation.check_name,
        evaluation.passed,
        evaluation.severity.value,
        evaluation.partition,
        dt.datetime.fromtimestamp(entry.timestamp, dt.UTC),
        entry.run_id,
        asset_link(ui, evaluation.asset_key.path),
    )


main()
