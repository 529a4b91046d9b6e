"""Order-book and trade features of a symbol-day: ``features/microstructure``, built in SQL
(``sql/features/microstructure.sql``) from the day's 1m curated klines, depth snapshots and
agg trades."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.integrity import verify_files
from dagster_project.core.lake import Lake
from dagster_project.core.sql import run_sql
from dagster_project.transform.curate import curated_file


@dataclass(frozen=True)
class MicrostructureSettings:
    top_n: int = 5  # levels per side summed by imbalance_top_n


def microstructure_inputs(lake: Lake, symbol: str, day: dt.date) -> dict[str, Path]:
    """The day's 1m curated klines, depth snapshots and agg trades files, by query parameter."""
    return {
        "kline_files": curated_file(lake, symbol, "1m", day),
        "snapshot_files": lake.partition_file(
            "raw", "depth_snapshots", {"symbol": symbol, "date": day}
        ),
        "trade_files": lake.partition_file("raw", "agg_trades", {"symbol": symbol, "date": day}),
    }


def has_microstructure_inputs(lake: Lake, symbol: str, day: dt.date) -> bool:
    return all(path.is_file() for path in microstructure_inputs(lake, symbol, day).values())


def build_microstructure(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    day: dt.date,
    settings: MicrostructureSettings = MicrostructureSettings(),
) -> pl.DataFrame:
    """Write ``features/microstructure`` for a symbol-day from its 1m klines, book and trades."""
    inputs = microstructure_inputs(lake, symbol, day)
    missing = [str(path) for path in inputs.values() if not path.is_file()]
    if missing:
        raise InvalidRequestError(
            f"microstructure for {symbol} on {day} needs 1m curated klines, depth snapshots and "
            f"agg trades; missing {', '.join(missing)}"
        )
    verify_files(list(inputs.values()))
    params = {name: [str(path)] for name, path in inputs.items()} | {"top_n": settings.top_n}
    features = run_sql(con, "features/microstructure", params).pl()
    lake.write_partition("features", "microstructure", {"symbol": symbol, "date": day}, features)
    return features
