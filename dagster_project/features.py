"""Feature tables built in SQL from the curated and raw layers, one symbol-day at a time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from dagster_project.errors import InvalidRequestError
from dagster_project.lake import Lake
from dagster_project.sql import run_sql


@dataclass(frozen=True)
class MicrostructureSettings:
    top_n: int = 5  # levels per side summed by imbalance_top_n


def build_microstructure(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    day: dt.date,
    settings: MicrostructureSettings = MicrostructureSettings(),
) -> pl.DataFrame:
    """Write ``features/microstructure`` for a symbol-day from its 1m klines, book and trades."""
    inputs = {
        "kline_files": lake.partition_file(
            "curated", "klines", {"symbol": symbol, "interval": "1m", "date": day}
        ),
        "snapshot_files": lake.partition_file(
            "raw", "depth_snapshots", {"symbol": symbol, "date": day}
        ),
        "trade_files": lake.partition_file("raw", "agg_trades", {"symbol": symbol, "date": day}),
    }
    missing = [str(path) for path in inputs.values() if not path.is_file()]
    if missing:
        raise InvalidRequestError(
            f"microstructure for {symbol} on {day} needs 1m curated klines, depth snapshots and "
            f"agg trades; missing {', '.join(missing)}"
        )
    params = {name: [str(path)] for name, path in inputs.items()} | {"top_n": settings.top_n}
    features = run_sql(con, "features/microstructure", params).pl()
    lake.write_partition("features", "microstructure", {"symbol": symbol, "date": day}, features)
    return features
