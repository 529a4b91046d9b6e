"""Data contracts of the order-book and trade tables (klines live in ``core.klines``).

Every producer (REST, Vision, the stream collector, recorded-stream replay, the simulator) returns
polars DataFrames with exactly these columns; ``symbol`` and ``date`` are partition keys and live
in the path. Books are stored as parallel lists, best level first.
"""

from __future__ import annotations

import polars as pl

from dagster_project.core.errors import SourceDataError
from dagster_project.core.klines import TIMESTAMP

PRICES = pl.List(pl.Float64())

# raw/depth_snapshots: the top of the local book sampled at a fixed cadence. Grain: ts.
DEPTH_SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "ts": TIMESTAMP,  # the sample time: the book as of the last event with event_time <= ts
    "last_update_id": pl.Int64(),  # final update id of the last event applied (or the snapshot's)
    "bid_prices": PRICES,  # best (highest) first, at most top N levels
    "bid_sizes": PRICES,
    "ask_prices": PRICES,  # best (lowest) first
    "ask_sizes": PRICES,
    "source": pl.String(),  # binance_stream, binance_replay, binance_rest, simulator
}

# raw/depth_updates: every diff-depth event applied to the book, for exact replay.
# Grain: final_update_id.
DEPTH_UPDATE_SCHEMA: dict[str, pl.DataType] = {
    "event_time": TIMESTAMP,  # Binance's "E"
    "first_update_id": pl.Int64(),  # "U"
    "final_update_id": pl.Int64(),  # "u"
    "prev_final_update_id": pl.Int64(),  # "pu" (USD-M futures only; NULL on spot)
    "bid_prices": PRICES,  # level updates as sent: quantity 0 removes the level
    "bid_sizes": PRICES,
    "ask_prices": PRICES,
    "ask_sizes": PRICES,
    "received_at": TIMESTAMP,  # local receive time (NULL when unknown)
    "source": pl.String(),
}

# raw/agg_trades: Binance aggregate trades. Grain: agg_trade_id.
AGG_TRADE_SCHEMA: dict[str, pl.DataType] = {
    "agg_trade_id": pl.Int64(),  # "a"
    "ts": TIMESTAMP,  # trade time "T"
    "price": pl.Float64(),  # "p"
    "qty": pl.Float64(),  # "q"
    "first_trade_id": pl.Int64(),  # "f"
    "last_trade_id": pl.Int64(),  # "l"
    "is_buyer_maker": pl.Boolean(),  # "m": true when the taker sold
    "source": pl.String(),  # binance_rest, binance_vision, binance_stream, simulator
}

# raw table → (schema, the time column that decides a row's UTC day partition)
RAW_TABLES: dict[str, tuple[dict[str, pl.DataType], str]] = {
    "depth_snapshots": (DEPTH_SNAPSHOT_SCHEMA, "ts"),
    "depth_updates": (DEPTH_UPDATE_SCHEMA, "event_time"),
    "agg_trades": (AGG_TRADE_SCHEMA, "ts"),
}

DEPTH_SNAPSHOT_COLUMNS = tuple(DEPTH_SNAPSHOT_SCHEMA)
DEPTH_UPDATE_COLUMNS = tuple(DEPTH_UPDATE_SCHEMA)
AGG_TRADE_COLUMNS = tuple(AGG_TRADE_SCHEMA)


def conform_to(frame: pl.DataFrame, schema: dict[str, pl.DataType], table: str) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, order and types (extra columns dropped)."""
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise SourceDataError(f"{table} frame lacks columns {missing}; has {frame.columns}")
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
