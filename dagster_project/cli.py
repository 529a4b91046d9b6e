"""``candlelake``: the command line. Every command goes through the library code the assets use."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

import click

from dagster_project.cli_experiments import EXPERIMENT_COMMANDS
from dagster_project.core.console import DEFAULT_ROW_LIMIT, DEFAULT_TIMEOUT_S
from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.klines import TimeRange, to_utc
from dagster_project.ingest.sources import SourceSettings

log = logging.getLogger("candlelake")


class CandlelakeGroup(click.Group):
    """Turns candlelake's own errors into one clear line and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CandlelakeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=CandlelakeGroup)
@click.option(
    "--lake",
    "lake_root",
    envvar="CANDLELAKE_LAKE",
    default="lake",
    show_default=True,
    help="Lake root (env CANDLELAKE_LAKE).",
)
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Report partitions the CLI lands to the project's Dagster instance "
    "(DAGSTER_HOME, default ./.dagster_home), so the UI shows them materialized.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every partition written.")
@click.pass_context
def main(ctx: click.Context, lake_root: str, record: bool, verbose: bool) -> None:
    """candlelake: land Binance klines into a Parquet lake, curate them with DuckDB SQL."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from dagster_project.core.lake import Lake

    ctx.obj = Lake(lake_root)
    ctx.meta["record"] = record


def split_symbols(value: str) -> list[str]:
    return [s.strip().upper() for s in value.split(",") if s.strip()]


def symbol_list(_ctx, param: click.Parameter, value: str | None) -> list[str] | None:
    """The ``--symbols`` callback: the symbols named; a value naming none ("", ",,,") is refused
    before the command does anything."""
    if value is None:
        return None
    symbols = split_symbols(value)
    if not symbols:
        raise InvalidRequestError(
            f"no symbols in {param.opts[0]} {value!r}; expected comma-separated symbols, "
            "e.g. BTCUSDT,ETHUSDT"
        )
    return symbols


def day_list(_ctx, param: click.Parameter, value: str | None) -> list[dt.date] | None:
    """The ``--days`` callback: the UTC days named; none, a bad date or a day after today (UTC)
    is refused before the command does anything."""
    if value is None:
        return None
    option = param.opts[0]
    texts = [text.strip() for text in value.split(",") if text.strip()]
    if not texts:
        raise InvalidRequestError(
            f"{option} {value!r} names no day; expected comma-separated UTC days, e.g. 2024-03-01"
        )
    days = [parse_day(text, option) for text in texts]
    today = dt.datetime.now(dt.UTC).date()
    late = [day for day in days if day > today]
    if late:
        raise InvalidRequestError(
            f"day {late[0]} in {option} is after today ({today}, UTC); klines exist only for "
            "past days"
        )
    for day in days:
        check_not_before_first_day(day, option)
    return days


def check_not_before_first_day(day: dt.date, option: str) -> None:
    """Binance's first kline opened on ``FIRST_DAY``, where the lake's day partitions begin."""
    from dagster_project.partitions import FIRST_DAY

    if day < dt.date.fromisoformat(FIRST_DAY):
        raise InvalidRequestError(
            f"{option} {day} is before {FIRST_DAY}, the first day of Binance spot klines and of "
            f"the lake's day partitions; expected {FIRST_DAY} or later"
        )


def parse_day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"bad day {text!r} in {option}; expected YYYY-MM-DD") from None


def checked_range(start: str, end: str) -> TimeRange:
    """``--start``/``--end`` as a range; an end after today (UTC) is refused, not cut to now, so
    a mistyped year (2017 to 2100) lands nothing instead of eight years."""
    now = dt.datetime.now(dt.UTC)
    time_range = TimeRange.checked(start, end, now)  # refuses a start after now
    tomorrow = now.date() + dt.timedelta(days=1)
    if to_utc(end) > to_utc(tomorrow):
        raise InvalidRequestError(
            f"--end {end} is after today (UTC); expected at most {tomorrow} "
            "(exclusive: today's bars so far)"
        )
    check_not_before_first_day(time_range.start.date(), "--start")
    return time_range


@main.command()
@click.option(
    "--symbols",
    default=None,
    callback=symbol_list,
    help="Comma-separated symbols (default BTCUSDT,ETHUSDT,SOLUSDT).",
)
@click.option(
    "--days",
    default=None,
    callback=day_list,
    help="Comma-separated UTC days (default 2024-03-01..03).",
)
@click.pass_obj
def run(lake, symbols: list[str] | None, days: list[dt.date] | None) -> None:
    """The main job: materialize the whole asset graph offline (simulator data)."""
    from dagster_project import main_job

    os.environ["CANDLELAKE_LAKE"] = str(lake.root)  # the lake resource reads its root from here
    home = main_job.dagster_home()
    instance = main_job.persistent_instance(home)
    from dagster_project.definitions import defs

    started = time.monotonic()
    report = main_job.run_main_job(
        defs,
        instance,
        symbols or main_job.DEFAULT_SYMBOLS,
        days or main_job.DEFAULT_DAYS,
        progress=click.echo,
    )
    click.echo(
        f"\n{report.runs} runs in {time.monotonic() - started:.1f} s; "
        f"{len(report.failed_checks)} failed checks, {len(report.warned_checks)} warnings"
    )
    for name in report.failed_checks:
        click.echo(f"  FAILED check {name}")
    print_where_to_look(lake, home)


def print_where_to_look(lake, home: Path) -> None:
    catalog, bin_dir = shown(lake.catalog_path), shown(Path(sys.executable).parent)
    query = (
        "select symbol, interval, count(*) as bars, min(open_time), max(open_time) "
        "from klines group by all order by all"
    )
    books = (
        "select symbol, open_time, mid, spread_bps, imbalance_top_n, trade_flow_imbalance "
        "from microstructure limit 10"
    )
    leaderboard = (
        "select cell, auroc, auroc_low, auroc_high, best_baseline, best_baseline_auroc, "
        "shuffled_auroc, suspicious from leaderboard"
    )
    click.echo(f"""
Lake:      {lake.root}
Query it:  {bin_dir}/duckdb {catalog} -c "{query}"
Gaps:      {bin_dir}/duckdb {catalog} -c "select * from kline_gaps order by gap_start"
Books:     {bin_dir}/duckdb {catalog} -c "{books}"
Models:    {bin_dir}/duckdb {catalog} -c "{leaderboard}"
Controls:  {bin_dir}/duckdb {catalog} -c "select cell, auroc, why from controls"
Export:    {bin_dir}/candlelake --lake {shown(lake.root)} export-results --out results_csv
Predict:   {bin_dir}/candlelake --lake {shown(lake.root)} predict --symbol BTCUSDT --model custom
Dagster:   CANDLELAKE_LAKE={lake.root} DAGSTER_HOME={home} \\
             {bin_dir}/dagster dev -m dagster_project.definitions
           (then open http://127.0.0.1:3000: assets, partitions, checks and these runs)""")


def shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it, for shorter commands."""
    path = path.absolute()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


MARKETS = ["spot", "futures_um"]


def source_options(command):
    """The options naming a market-data source, shared by ``ingest`` and ``build``."""
    options = [
        click.option(
            "--source",
            type=click.Choice(["simulator", "binance", "vision", "freqtrade"]),
            default="simulator",
            show_default=True,
        ),
        click.option(
            "--symbols",
            required=True,
            callback=symbol_list,
            help="Comma-separated symbols, e.g. BTCUSDT.",
        ),
        click.option("--interval", default="1m", show_default=True, help="Interval landed."),
        click.option("--start", required=True, help="UTC start (ISO date/time) from 00:00."),
        click.option("--end", required=True, help="UTC end, exclusive; widened to the next 00:00."),
        click.option("--base-url", default=None, help="REST or Vision base URL (a local server)."),
        click.option("--market", type=click.Choice(MARKETS), default="spot", show_default=True),
        click.option("--freqtrade-dir", default="", help="freqtrade data folder."),
        click.option(
            "--seed",
            type=int,
            default=SourceSettings.simulator_seed,
            show_default=True,
            help="Simulator seed.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def source_settings(source: str, base_url: str | None, market: str, freqtrade_dir: str, seed: int):
    urls = {"rest_base_url": base_url, "vision_base_url": base_url} if base_url else {}
    return SourceSettings(
        kind=source,
        rest_market=market,
        vision_market=market,
        freqtrade_dir=freqtrade_dir,
        simulator_seed=seed,
        **urls,
    )


replace_option = click.option(
    "--replace",
    is_flag=True,
    help="Let a day land with fewer rows than are landed for it (refused otherwise).",
)


@main.command()
@source_options
@replace_option
@click.pass_obj
def ingest(
    lake, source, symbols, interval, start, end, base_url, market, freqtrade_dir, seed, replace
) -> None:
    """Land and curate klines for whole UTC days from a source (the fast path: no features)."""
    from dagster_project.backfill import ingest_range
    from dagster_project.ingest.sources import make_source

    settings = source_settings(source, base_url, market, freqtrade_dir, seed)
    summary = ingest_range(
        lake,
        make_source(settings, lake.root),
        symbols,
        interval,
        checked_range(start, end),
        instance=cli_instance(),
        progress=click.echo,
        track=progress_bar,
        replace=replace,
    )
    finish(lake, summary)


BUILD_JOBS = {
    "curated": "klines_job",
    "windows": "windows_job",
    "images": "images_job",
    "market": "market_job",
}


@main.command()
@source_options
@click.option(
    "--through",
    type=click.Choice(list(BUILD_JOBS)),
    default="windows",
    show_default=True,
    help="How far down the graph: curated klines; + indicators, labels, windows; + cached images; "
    "market: everything, with trades, books and microstructure where the source has them.",
)
@click.pass_obj
def build(
    lake, source, symbols, interval, start, end, base_url, market, freqtrade_dir, seed, through
) -> None:
    """Materialize the asset graph for whole UTC days through Dagster: one run per symbol.

    Runs are recorded in the project's Dagster instance (the UI shows them, their checks and the
    partitions) with the range tags a UI backfill gives its runs.
    """
    from tqdm import tqdm

    from dagster_project import build as builder
    from dagster_project.core.days import whole_days
    from dagster_project.ingest.landing import check_symbol

    settings = source_settings(source, base_url, market, freqtrade_dir, seed)
    runs = builder.range_runs(
        [check_symbol(s) for s in symbols], whole_days(checked_range(start, end))
    )
    os.environ["CANDLELAKE_LAKE"] = str(lake.root)
    instance = cli_instance() or ephemeral_instance()
    from dagster_project.definitions import defs

    job = defs.resolve_job_def(BUILD_JOBS[through])
    run_config = builder.QUIET_RUN_CONFIG | {
        "resources": {"market_source": {"config": market_source_config(settings, interval)}}
    }
    report = builder.BuildReport()
    started = time.monotonic()
    steps = len(job.graph.node_defs)
    with tqdm(total=len(runs) * steps, unit="step", desc=job.name) as bar:
        for n, run in enumerate(runs):
            bar.set_postfix_str(str(run))

            def on_step(done: int, _steps: int, bar=bar, before=n * steps) -> None:
                bar.update(before + done - bar.n)

            report.record(builder.run_range(job, instance, run, run_config, on_step), str(run))
    rebuild_catalog(lake)
    click.echo(
        f"{report.runs} {job.name} runs ({sum(r.days for r in runs)} symbol-days) in "
        f"{time.monotonic() - started:.1f} s; {len(report.failed_checks)} failed checks, "
        f"{len(report.warned_checks)} warnings"
    )
    for name in report.failed_checks:
        click.echo(f"  FAILED check {name}")


def market_source_config(settings: SourceSettings, interval: str) -> dict[str, object]:
    """The market_source resource's config for these source settings."""
    fields = ("kind", "rest_base_url", "rest_market", "vision_base_url", "vision_market")
    config = {name: getattr(settings, name) for name in fields}
    return config | {
        "interval": interval,
        "freqtrade_dir": settings.freqtrade_dir,
        "simulator_seed": settings.simulator_seed,
    }


def ephemeral_instance():
    import dagster as dg

    return dg.DagsterInstance.ephemeral()


@main.command("import-freqtrade")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--symbols", default=None, callback=symbol_list, help="Only these symbols (comma-separated)."
)
@replace_option
@click.pass_obj
def import_freqtrade(lake, folder: str, symbols: list[str] | None, replace: bool) -> None:
    """Import a freqtrade data folder (user_data/data/binance) as-is, then curate it."""
    from dagster_project.backfill import import_freqtrade_dir

    summary = import_freqtrade_dir(
        lake,
        folder,
        symbols or [],
        instance=cli_instance(),
        progress=click.echo,
        track=progress_bar,
        replace=replace,
    )
    finish(lake, summary)


@main.command("replay-depth")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--symbol", required=True, help="The symbol whose book to rebuild, e.g. BTCUSDT.")
@click.option(
    "--market", type=click.Choice(["spot", "futures_um"]), default="spot", show_default=True
)
@click.option(
    "--cadence",
    "cadence_s",
    type=float,
    default=1.0,
    show_default=True,
    help="Snapshot cadence in seconds of exchange time.",
)
@click.option("--levels", type=int, default=50, show_default=True, help="Levels per side kept.")
@click.pass_obj
def replay_depth(lake, files, symbol, market, cadence_s, levels) -> None:
    """Rebuild a book from recorded streams (<receive ns> <json> lines) and land it.

    FILES are replayed in the order given (a later file continues an earlier one); snapshots,
    every applied diff event and @aggTrade messages land in raw/depth_snapshots,
    raw/depth_updates and raw/agg_trades, by UTC day. Exits 2 when no depth event was applied.
    """
    from dagster_project.backfill import replay_recordings

    result = replay_recordings(
        lake, list(files), symbol.upper(), market, cadence_s, levels, instance=cli_instance()
    )
    stats, tickers = result.stats, result.book_tickers
    click.echo(
        f"{stats.events_applied} events applied, {stats.events_dropped} dropped, "
        f"{stats.resync_count} resyncs {dict(stats.resyncs) or ''}"
    )
    click.echo(result.counts())
    click.echo(
        f"{result.snapshots.height} snapshot rows, {result.updates.height} update rows, "
        f"{result.agg_trades.height} agg trade rows"
    )
    click.echo(f"book vs bookTicker: {tickers.compared} compared, {tickers.mismatched} mismatched")
    rebuild_catalog(lake)


@main.command("collect-depth")
@click.option(
    "--symbols",
    required=True,
    callback=symbol_list,
    help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.",
)
@click.option(
    "--market", type=click.Choice(["spot", "futures_um"]), default="spot", show_default=True
)
@click.option(
    "--ws-url", default=None, help="Websocket base URL (default: the market's Binance URL)."
)
@click.option("--rest-url", default=None, help="REST base URL for snapshots (default: Binance's).")
@click.option("--cadence", "cadence_s", type=float, default=1.0, show_default=True)
@click.option("--levels", type=int, default=50, show_default=True)
@click.option("--flush-every", "flush_every_s", type=float, default=60.0, show_default=True)
@click.option(
    "--seconds",
    "stop_after_s",
    type=float,
    default=None,
    help="Stop after this long (default: until Ctrl-C / SIGTERM).",
)
@click.pass_obj
def collect_depth_command(
    lake, symbols, market, ws_url, rest_url, cadence_s, levels, flush_every_s, stop_after_s
):
    """Keep local books from the diff-depth stream; land snapshots and every update until stopped.

    Lands raw/depth_snapshots and raw/depth_updates (source binance_stream) as appended parts every
    --flush-every seconds, at each UTC midnight and on stop; reconnects and resyncs by itself.
    """
    from dagster_project.ingest.binance_rest import BinanceRestConfig
    from dagster_project.ingest.collector.config import CollectorConfig
    from dagster_project.ingest.collector.depth_collector import collect_depth

    rest = BinanceRestConfig.preset(market, **({"base_url": rest_url} if rest_url else {}))
    config = CollectorConfig(
        symbols=tuple(symbols),
        market=market,
        ws_base_url=ws_url,
        rest=rest,
        cadence_s=cadence_s,
        levels=levels,
        flush_every_s=flush_every_s,
        stop_after_s=stop_after_s,
    )
    summary = collect_depth(
        lake,
        config,
        on_flush=lambda r: click.echo(
            f"flushed ({r.reason}): {r.rows}; total {r.totals}", err=True
        ),
    )
    click.echo(f"collector stopped: {summary.as_dict()}")
    rebuild_catalog(lake)
    if not summary.ok:
        sys.exit(1)


@main.command("poll-depth")
@click.option(
    "--symbols",
    required=True,
    callback=symbol_list,
    help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.",
)
@click.option(
    "--market", type=click.Choice(["spot", "futures_um"]), default="spot", show_default=True
)
@click.option("--base-url", default=None, help="REST base URL (default: the market's Binance URL).")
@click.option("--cadence", "cadence_s", type=float, default=1.0, show_default=True)
@click.option("--levels", type=int, default=50, show_default=True)
@click.option("--flush-every", "flush_every_s", type=float, default=60.0, show_default=True)
@click.option("--rounds", type=int, default=None, help="Stop after this many polls per symbol.")
@click.pass_obj
def poll_depth_command(lake, symbols, market, base_url, cadence_s, levels, flush_every_s, rounds):
    """Poll REST /depth snapshots into raw/depth_snapshots until Ctrl-C (the no-stream fallback)."""
    from dagster_project.ingest.binance_rest import BinanceRestConfig
    from dagster_project.ingest.collector.polling import PollConfig, poll_depth

    rest = BinanceRestConfig.preset(market, **({"base_url": base_url} if base_url else {}))
    config = PollConfig(
        tuple(symbols),
        rest,
        cadence_s,
        levels=levels,
        flush_every_s=flush_every_s,
        max_rounds=rounds,
    )
    summary = poll_depth(lake, config, stop_on_signals())
    click.echo(
        f"{summary.rounds} rounds, {summary.snapshots} snapshots, {summary.errors} errors; "
        f"landed {summary.rows_landed}"
    )
    rebuild_catalog(lake)


def stop_on_signals():
    """An event set by SIGINT or SIGTERM, so long-running commands stop cleanly and flush."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


@main.command("render-sample")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default="docs/images/side_by_side.png",
    show_default=True,
    help="PNG to write (folders are created).",
)
@click.option(
    "--window-size",
    "window_sizes",
    type=click.IntRange(min=1),
    multiple=True,
    default=(30,),
    show_default=True,
    help="Candles per window; repeat for several sizes (one block of rows each).",
)
@click.option(
    "--windows",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Consecutive windows per size, one row each.",
)
@click.option(
    "--size",
    type=click.IntRange(min=3),
    default=64,
    show_default=True,
    help="Side of the candle images in pixels.",
)
@click.option(
    "--seed",
    type=int,
    default=SourceSettings.simulator_seed,
    show_default=True,
    help="Simulator seed.",
)
def render_sample(out_path: str, window_sizes, windows: int, size: int, seed: int) -> None:
    """Draw simulated windows three ways into one PNG: our candle chart, mplfinance's, ohlc_bar.

    No lake needed: BTCUSDT 1m klines are simulated from 2024-03-01 00:00 UTC.
    """
    from ml.image_preview import sample_picture

    too_many = [n for n in window_sizes if n > size]
    if too_many:
        raise InvalidRequestError(
            f"window size {too_many[0]} does not fit {size} px (one column a candle at least); "
            f"expected at most {size} candles or a larger --size"
        )
    path = sample_picture(out_path, window_sizes, windows, seed, size)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")


@main.command()
@click.pass_obj
def catalog(lake) -> None:
    """Rebuild lake/candlelake.duckdb (one view per lake table)."""
    rebuild_catalog(lake)


@main.command()
@click.argument("query")
@click.option(
    "--limit",
    "row_limit",
    type=click.IntRange(min=1),
    default=DEFAULT_ROW_LIMIT,
    show_default=True,
    help="Rows printed at most; a longer result is cut, and says so.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds a query may run before it is stopped.",
)
@click.pass_obj
def sql(lake, query: str, row_limit: int, timeout_s: float) -> None:
    """Run one read-only query against the catalog views and print the result.

    The console reads the lake through the catalog only: no other files, no writes, no
    extensions, no settings.
    """
    from dagster_project.core.console import open_console

    with open_console(lake, row_limit=row_limit, timeout_s=timeout_s) as console:
        for warning in console.warnings:
            click.echo(f"warning: {warning}", err=True)
        result = console.run(query)
    click.echo(result.table())
    if result.truncated:
        click.echo(
            f"first {row_limit} rows shown; the result has more (add a limit, or raise --limit)",
            err=True,
        )


def progress_bar(items: list, description: str):
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="day", leave=False)


def cli_instance():
    """The project's Dagster instance, so CLI landings show as materialized in the UI."""
    from dagster_project import main_job

    if not click.get_current_context().meta.get("record", True):
        return None
    return main_job.persistent_instance(main_job.dagster_home())


def rebuild_catalog(lake) -> None:
    from dagster_project.assets.catalog import CATALOG_VIEWS
    from dagster_project.core.lake import build_catalog

    views = build_catalog(lake, CATALOG_VIEWS)
    click.echo(f"catalog {lake.catalog_path}: views {', '.join(views)}")


def finish(lake, summary) -> None:
    rebuild_catalog(lake)
    click.echo(f"{summary.partitions} raw partitions, {summary.rows} rows landed")
    for key, missing in sorted(summary.missing_bars.items()):
        if missing:
            click.echo(f"  {key}: {missing} missing bars (see the kline_gaps view)")


@main.group("split-spec")
def split_spec() -> None:
    """Named split calendars (windows/split_specs): cut times shared by every series.

    A spec never changes once stored: new cuts need a new name.
    """


@split_spec.command("add")
@click.argument("name")
@click.option("--validation-start", required=True, help="UTC start of validation (ISO).")
@click.option("--test-start", required=True, help="UTC start of test (ISO).")
@click.option("--train-start", default=None, help="UTC start of train (default: open).")
@click.option("--test-end", default=None, help="UTC end of test, exclusive (default: open).")
@click.option(
    "--embargo-bars",
    type=int,
    default=None,
    help="Bars of each series' interval left out before each cut "
    "(default: the longest label horizon and window size).",
)
@click.pass_obj
def split_spec_add(
    lake, name, validation_start, test_start, train_start, test_end, embargo_bars
) -> None:
    """Store split spec NAME; refused if NAME exists with other cuts. Times without a zone are
    UTC; a date means its 00:00."""
    from dagster_project.core.klines import to_utc
    from ml.split_specs import SplitSpec, store_spec

    times = {
        "validation_start": validation_start,
        "test_start": test_start,
        "train_start": train_start,
        "test_end": test_end,
    }
    given = {key: to_utc(value) for key, value in times.items() if value is not None}
    if embargo_bars is not None:
        given["embargo_bars"] = embargo_bars
    spec = store_spec(lake, SplitSpec(name, **given))
    stored_at = f"{spec.created_at:%Y-%m-%d %H:%M} UTC"
    click.echo(f"split spec {spec.name}: {spec.describe()} (stored {stored_at})")


@split_spec.command("list")
@click.pass_obj
def split_spec_list(lake) -> None:
    """Every split spec: built in, and stored in the lake (when first used or added)."""
    from ml.split_specs import BUILTIN_SPECS, stored_specs

    stored = stored_specs(lake)
    for name in sorted(set(BUILTIN_SPECS) | set(stored)):
        spec = stored.get(name, BUILTIN_SPECS.get(name))
        origin = ["built in"] if name in BUILTIN_SPECS else []
        if name in stored:
            origin.append(f"stored {spec.created_at:%Y-%m-%d %H:%M} UTC")
        if name in stored and name in BUILTIN_SPECS and stored[name] != BUILTIN_SPECS[name]:
            origin.append(f"CONFLICT: built in as {BUILTIN_SPECS[name].describe()}")
        click.echo(f"{name}: {spec.describe()} [{'; '.join(origin)}]")


@main.command()
@click.pass_obj
def verify(lake) -> None:
    """Check every lake file against the content hash recorded when it was written; list each
    damaged file and exit 2 when there is one."""
    from dagster_project.core.errors import CorruptPartitionError
    from dagster_project.core.integrity import verify_lake
    from dagster_project.core.lake import catalog_root_mismatch

    report = verify_lake(lake)
    for path in report.damaged:
        click.echo(f"DAMAGED {path}")
    click.echo(
        f"{report.intact} files intact, {len(report.damaged)} damaged, "
        f"{len(report.unverified)} unverified (written before hashes; re-materialize to record)"
    )
    mismatch = catalog_root_mismatch(lake)
    if mismatch:
        click.echo(f"warning: {mismatch}")
    if report.damaged:
        raise CorruptPartitionError(
            f"{len(report.damaged)} damaged lake file(s) listed above; re-land (raw) or "
            "re-materialize those partitions",
            report.damaged,
        )


for experiment_command in EXPERIMENT_COMMANDS:  # train, experiment, export-results, predict
    main.add_command(experiment_command)

if __name__ == "__main__":
    main()
