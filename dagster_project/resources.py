"""Dagster resources: the lake, DuckDB, and the market-data source (with the Binance clients)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from dagster_project.core.lake import Lake, connect
from dagster_project.ingest.landing import KlineSource
from dagster_project.ingest.sources import SourceSettings, make_source


class LakeResource(dg.ConfigurableResource):
    """The lake root and its atomic partition writer.

    An empty ``root`` means ``CANDLELAKE_LAKE`` (default ``./lake``), read when a run uses the
    lake, not when the definitions are imported.
    """

    root: str = ""

    def get(self) -> Lake:
        return Lake(self.root) if self.root else Lake.from_env()


class DuckDBResource(dg.ConfigurableResource):
    """In-memory DuckDB connections (UTC) for running the project's SQL over the lake."""

    threads: int = 0  # 0 lets DuckDB use every core
    memory_limit: str = ""  # e.g. "4GB"; empty keeps DuckDB's default (80% of RAM)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = connect()
        if self.threads:
            con.execute("set threads = $n", {"n": self.threads})
        if self.memory_limit:
            con.execute("set memory_limit = $m", {"m": self.memory_limit})
        try:
            yield con
        finally:
            con.close()


class MarketSourceResource(dg.ConfigurableResource):
    """Where raw klines come from: simulator (offline default), binance, vision, freqtrade.

    An empty ``kind`` or base URL means ``CANDLELAKE_SOURCE`` / ``CANDLELAKE_REST_URL`` /
    ``CANDLELAKE_VISION_URL`` when set (read when a run uses the source), so that `dagster dev`
    started with them backfills real data from the UI without launchpad config.
    """

    kind: str = ""  # empty: $CANDLELAKE_SOURCE, else "simulator"
    interval: str = "1m"  # the interval landed in raw/klines
    rest_base_url: str = ""  # empty: $CANDLELAKE_REST_URL, else Binance spot
    rest_market: str = SourceSettings.rest_market
    vision_base_url: str = ""  # empty: $CANDLELAKE_VISION_URL, else data.binance.vision
    vision_market: str = SourceSettings.vision_market
    vision_cache_dir: str = ""
    freqtrade_dir: str = ""
    simulator_seed: int = SourceSettings.simulator_seed
    depth_cadence_s: float = 1.0  # raw/depth_snapshots sampling cadence on the exchange clock
    depth_levels: int = 50  # levels per side kept in each snapshot
    depth_recordings: str = ""  # folder of recorded streams to replay books from (optional)

    def settings(self) -> SourceSettings:
        return SourceSettings(
            kind=self.kind or os.environ.get("CANDLELAKE_SOURCE") or "simulator",
            rest_base_url=self.rest_base_url
            or os.environ.get("CANDLELAKE_REST_URL")
            or SourceSettings.rest_base_url,
            rest_market=self.rest_market,
            vision_base_url=self.vision_base_url
            or os.environ.get("CANDLELAKE_VISION_URL")
            or SourceSettings.vision_base_url,
            vision_market=self.vision_market,
            vision_cache_dir=self.vision_cache_dir,
            freqtrade_dir=self.freqtrade_dir,
            simulator_seed=self.simulator_seed,
            depth_recordings=self.depth_recordings,
        )

    def build(self, lake: Lake) -> KlineSource:
        return make_source(self.settings(), lake.root)
