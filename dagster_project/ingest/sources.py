"""One settings object that names a market-data source, and the adapter that serves klines from it.

The Dagster resource and the CLI both build their source here, so an asset run and a CLI run land
exactly the same rows. Every adapter's ``check_symbols(symbols)`` raises ``InvalidRequestError``
(``UnknownSymbolError`` for a well-formed symbol the source does not serve) naming every bad symbol,
so a run can refuse them before anything lands: the simulator checks the format only, freqtrade
looks for a file, Binance REST asks exchangeInfo (once per source, however many symbols and days
follow) and Binance Vision its bucket listing. Every adapter closes a bar at open time + interval
- 1 ms, Binance's documented convention.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from dagster_project.core.errors import (
    InvalidRequestError,
    SourceCapabilityError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from dagster_project.core.klines import TimeRange
from dagster_project.ingest import (
    binance_rest,
    binance_vision,
    freqtrade,
    simulator,
)
from dagster_project.ingest.landing import SYMBOL_PATTERN, KlineSource, TradeSource
from dagster_project.ingest.orderbook import replay as stream_replay

SOURCE_KINDS = ("simulator", "binance", "vision", "freqtrade")


@dataclass(frozen=True)
class SourceSettings:
    kind: str = "simulator"  # one of SOURCE_KINDS; the simulator is the offline default
    rest_base_url: str = binance_rest.BASE_URLS["spot"]  # spot, USD-M futures, Binance.US, local
    rest_market: str = "spot"  # "spot" (/api/v3) or "futures_um" (/fapi/v1)
    vision_base_url: str = "https://data.binance.vision"
    vision_market: str = "spot"  # "spot" or "futures_um"
    vision_cache_dir: str = ""  # downloaded archives; default <lake>/.cache/vision
    freqtrade_dir: str = ""  # a freqtrade user_data/data/binance folder
    simulator_seed: int = simulator.SimulatorConfig().seed
    depth_recordings: str = ""  # a folder of recorded streams (<receive ns> <json> lines, .gz)


def make_source(settings: SourceSettings, lake_root: Path) -> KlineSource:
    if settings.kind == "simulator":
        return SimulatorSource(simulator.SimulatorConfig(seed=settings.simulator_seed))
    if settings.kind == "binance":
        # the preset brings the market's own weight limit (spot 6000/min, USD-M futures 2400/min)
        config = binance_rest.BinanceRestConfig.preset(
            settings.rest_market, base_url=settings.rest_base_url
        )
        return RestSource(config)
    if settings.kind == "vision":
        cache = settings.vision_cache_dir or str(lake_root / ".cache" / "vision")
        config = binance_vision.VisionConfig(
            base_url=settings.vision_base_url, market=settings.vision_market, cache_dir=Path(cache)
        )
        return VisionSource(config)
    if settings.kind == "freqtrade":
        if not settings.freqtrade_dir:
            raise InvalidRequestError("source kind 'freqtrade' needs freqtrade_dir (a data folder)")
        return FreqtradeSource(Path(settings.freqtrade_dir))
    raise InvalidRequestError(
        f"unknown market-data source {settings.kind!r}; expected one of {', '.join(SOURCE_KINDS)}"
    )


def check_symbol_format(symbols: Sequence[str]) -> None:
    """Raise ``InvalidRequestError`` naming every symbol that is not an exchange symbol."""
    bad = [symbol for symbol in symbols if not SYMBOL_PATTERN.match(symbol)]
    if bad:
        raise InvalidRequestError(
            f"bad symbols {', '.join(map(repr, bad))}; expected exchange symbols in upper case "
            "such as BTCUSDT"
        )


@dataclass
class SimulatorSource:
    config: simulator.SimulatorConfig
    name: str = "simulator"

    def check_symbols(self, symbols: Sequence[str]) -> None:
        """The simulator makes up any symbol; only the format is checked."""
        check_symbol_format(symbols)

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame:
        return simulator.simulate_klines(symbol, interval, time_range, self.config)

    def fetch_agg_trades(self, symbol: str, time_range: TimeRange) -> pl.DataFrame:
        return simulator.simulate_agg_trades(symbol, time_range, self.config)

    def fetch_depth_snapshots(
        self, symbol: str, time_range: TimeRange, cadence_s: float, levels: int
    ) -> pl.DataFrame:
        return simulator.simulate_depth_snapshots(
            symbol, time_range, cadence_s=cadence_s, levels=levels, config=self.config
        )


@dataclass
class RestSource:
    """Binance REST, one client per call (its connections closed when the call ends) sharing the
    exchangeInfo body the first call fetched: a run pays its weight (20 on spot) once."""

    config: binance_rest.BinanceRestConfig
    name: str = "binance_rest"
    _exchange_info: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def check_symbols(self, symbols: Sequence[str]) -> None:
        check_symbol_format(symbols)
        with self._client() as client:
            client.check_symbols(symbols)

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame:
        with self._client() as client:
            return client.fetch_klines(symbol, interval, time_range)

    def iter_kline_pages(
        self, symbol: str, interval: str, time_range: TimeRange
    ) -> Iterator[pl.DataFrame]:
        """The klines of ``time_range`` one request page at a time, oldest first (validated
        first), so a caller can land each day as soon as the pages have passed it."""
        with self._client() as client:
            client.validate(symbol, interval)
            yield from client.iter_kline_pages(symbol, interval, time_range)

    def fetch_agg_trades(self, symbol: str, time_range: TimeRange) -> pl.DataFrame:
        with self._client() as client:
            return client.fetch_agg_trades(symbol, time_range)

    @contextlib.contextmanager
    def _client(self) -> Iterator[binance_rest.BinanceRestClient]:
        info = self._exchange_info
        with binance_rest.BinanceRestClient(self.config, exchange_info=info) as client:
            try:
                yield client
            finally:
                self._exchange_info = client.fetched_exchange_info


@dataclass
class VisionSource:
    config: binance_vision.VisionConfig
    name: str = "binance_vision"

    def check_symbols(self, symbols: Sequence[str]) -> None:
        check_symbol_format(symbols)
        with binance_vision.VisionClient(self.config) as client:
            client.check_symbols(symbols)

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame:
        return binance_vision.fetch_klines(symbol, interval, time_range, self.config)

    def fetch_agg_trades(self, symbol: str, time_range: TimeRange) -> pl.DataFrame:
        return binance_vision.fetch_agg_trades(symbol, time_range, self.config)


@dataclass
class FreqtradeSource:
    """Serves the rows of the freqtrade file for a symbol and interval from a data folder."""

    folder: Path
    name: str = "freqtrade"

    def check_symbols(self, symbols: Sequence[str]) -> None:
        """A symbol without a file in the folder is unknown."""
        check_symbol_format(symbols)
        files = freqtrade.scan_freqtrade_dir(self.folder)
        have = {f.symbol for f in files}
        unknown = [symbol for symbol in symbols if symbol not in have]
        if unknown:
            raise self._no_file(unknown, files)

    def fetch_klines(self, symbol: str, interval: str, time_range: TimeRange) -> pl.DataFrame:
        files = freqtrade.scan_freqtrade_dir(self.folder)
        matching = [f for f in files if f.symbol == symbol and f.interval == interval]
        if not matching:
            if any(f.symbol == symbol for f in files):
                have = sorted({f.interval for f in files if f.symbol == symbol})
                raise UnsupportedIntervalError(
                    f"{self.folder} has {symbol} only at intervals {have}, not {interval!r}"
                )
            raise self._no_file([symbol], files)
        frame = freqtrade.read_freqtrade_file(matching[0])
        return frame.filter(
            pl.col("open_time").is_between(time_range.start, time_range.end, closed="left")
        )

    def _no_file(
        self, symbols: Sequence[str], files: Sequence[freqtrade.FreqtradeFile]
    ) -> UnknownSymbolError:
        return UnknownSymbolError(
            f"{self.folder} holds no freqtrade file for {', '.join(symbols)}; it has "
            f"{sorted({f.symbol for f in files})}"
        )


class BookSource(Protocol):
    """Anything that gives depth snapshots of a past day (``schemas.DEPTH_SNAPSHOT_SCHEMA``)."""

    name: str

    def fetch_depth_snapshots(
        self, symbol: str, time_range: TimeRange, cadence_s: float, levels: int
    ) -> pl.DataFrame: ...


def book_source(settings: SourceSettings, source: KlineSource) -> BookSource | None:
    """Where past books come from: recorded streams when ``settings.depth_recordings`` names a
    folder, else the source itself when it can produce them (the simulator). None for a real
    source without recordings: Binance publishes no spot depth history, so such books exist only
    where they were recorded (``candlelake collect-depth``)."""
    recordings = recording_source(settings)
    if recordings is not None:
        return recordings
    return source if isinstance(source, SimulatorSource) else None


def trades_source(source: KlineSource) -> TradeSource | None:
    """The source when it serves aggregate trades (simulator, binance, vision); None otherwise."""
    return source if hasattr(source, "fetch_agg_trades") else None  # type: ignore[return-value]


@dataclass(frozen=True)
class RecordingSource:
    """Books replayed from recorded Binance streams: every file in ``folder`` whose name holds
    the symbol in lower case, in name order (a later file continues an earlier one)."""

    folder: Path
    market: str = "spot"
    name: str = "binance_replay"

    def files_for(self, symbol: str) -> list[Path]:
        files = sorted(p for p in self.folder.glob(f"*{symbol.lower()}*") if p.is_file())
        if not files:
            raise SourceCapabilityError(
                f"no recording of {symbol} in {self.folder}; expected files named like "
                f"spot_{symbol.lower()}_YYYYMMDD.gz"
            )
        return files

    def fetch_depth_snapshots(
        self, symbol: str, time_range: TimeRange, cadence_s: float, levels: int
    ) -> pl.DataFrame:
        return self.replay_day(symbol, time_range, cadence_s, levels).snapshots

    def replay_day(
        self, symbol: str, time_range: TimeRange, cadence_s: float, levels: int
    ) -> stream_replay.ReplayResult:
        result = stream_replay.replay(
            self.files_for(symbol), symbol, cadence_s, levels, self.market
        )
        inside = pl.col("ts").is_between(time_range.start, time_range.end, closed="left")
        updates_inside = pl.col("event_time").is_between(
            time_range.start, time_range.end, closed="left"
        )
        return dataclasses.replace(
            result,
            snapshots=result.snapshots.filter(inside),
            updates=result.updates.filter(updates_inside),
        )


def recording_source(settings: SourceSettings) -> RecordingSource | None:
    if not settings.depth_recordings:
        return None
    folder = Path(settings.depth_recordings)
    if not folder.is_dir():
        raise InvalidRequestError(f"depth_recordings folder {folder} does not exist")
    return RecordingSource(folder, settings.rest_market)
