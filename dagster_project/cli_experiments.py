"""The experiment commands of ``candlelake``: ``train``, ``experiment``, ``export-results`` and
``predict``, registered on the main group by ``dagster_project.cli``.

They call the functions the ``experiments/cells`` asset calls (``ml.experiment.run_cell``), show
a tqdm bar per cell over its epochs, and report every cell they run to the project's Dagster
instance as a materialization of its partition, so the UI shows it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import click
import polars as pl

from dagster_project.core.errors import InvalidRequestError

# The leaderboard columns `candlelake experiment` prints for its slice.
LEADERBOARD_COLUMNS = (
    "cell",
    "rank",
    "auroc",
    "auroc_low",
    "auroc_high",
    "train_auroc",
    "best_baseline",
    "best_baseline_auroc",
    "beats_baselines",
    "shuffled_auroc",
    "suspicious",
)


def comma_list(convert: Callable[[str], object] = str):
    """A click callback: the option's comma-separated values converted, at least one."""

    def parse(_ctx, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        texts = [text.strip() for text in value.split(",") if text.strip()]
        if not texts:
            raise InvalidRequestError(f"{param.opts[0]} {value!r} names nothing; expected a, b")
        try:
            return [convert(text) for text in texts]
        except ValueError:
            raise InvalidRequestError(
                f"bad {param.opts[0]} {value!r}; expected comma-separated {convert.__name__}s"
            ) from None

    return parse


def optional_day(_ctx, param: click.Parameter, value: str | None) -> dt.date | None:
    from dagster_project.cli import parse_day

    return None if value is None else parse_day(value, param.opts[0])


def settings_options(command):
    """The options of ``CellSettings`` (the asset's ``CellConfig``), shared by train and
    experiment."""
    options = [
        click.option(
            "--first-day",
            callback=optional_day,
            help="First UTC day of the protocol's calendar (default: the series' first day "
            "with windows).",
        ),
        click.option(
            "--last-day",
            callback=optional_day,
            help="Last UTC day, inclusive (default: the series' last day with windows).",
        ),
        click.option(
            "--blocks",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Test blocks per training.",
        ),
        click.option(
            "--image-size",
            type=click.IntRange(min=8),
            default=64,
            show_default=True,
            help="Candle images are this many pixels square.",
        ),
        click.option(
            "--epochs",
            "max_epochs",
            type=click.IntRange(min=1),
            default=30,
            show_default=True,
            help="Most epochs (early stopping may end sooner).",
        ),
        click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option(
            "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--n-boot",
            type=click.IntRange(min=10),
            default=1000,
            show_default=True,
            help="Bootstrap replicates for each confidence interval.",
        ),
        click.option(
            "--force",
            is_flag=True,
            help="Retrain cells whose results with the same fingerprint are stored.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def settings_from(options: dict):
    from dagster_project.assets.experiments import cell_settings

    names = ("blocks", "image_size", "max_epochs", "patience", "batch_size", "lr", "seed", "n_boot")
    return cell_settings(
        options["first_day"], options["last_day"], **{name: options[name] for name in names}
    )


@click.command()
@click.option("--symbol", required=True, help="e.g. BTCUSDT.")
@click.option("--interval", default="1m", show_default=True)
@click.option(
    "--dataset",
    default="regular",
    show_default=True,
    help="regular, fullimage, irregular_60, irregular_80 or irregular_95.",
)
@click.option(
    "--window",
    "window_size",
    type=int,
    default=5,
    show_default=True,
    help="Candles per image: 5, 15 or 30.",
)
@click.option("--model", required=True, help="A zoo model, e.g. custom, mobilenetv3.")
@click.option(
    "--protocol",
    default="experiment_i",
    show_default=True,
    help="experiment_i, experiment_ii or seed_replica.",
)
@click.option("--train-length", required=True, help="Days ('7d') or bars ('120bar').")
@click.option("--test-length", default=None, help="experiment_ii: the test blocks' length.")
@click.option(
    "--label",
    default=None,
    help="Train on this label instead of the dataset's own (e.g. a leaky control).",
)
@click.option("--shuffled", is_flag=True, help="The model's shuffled-label control.")
@settings_options
@click.pass_obj
def train(
    lake,
    symbol,
    interval,
    dataset,
    window_size,
    model,
    protocol,
    train_length,
    test_length,
    label,
    shuffled,
    force,
    **options,
) -> None:
    """Train and score one experiment cell; print its pooled test scores beside the baselines."""
    from ml.experiment import Cell, training_name

    training = training_name(protocol, train_length, test_length)
    cell = Cell(symbol.upper(), interval, dataset, window_size, model, training, label, shuffled)
    outcome = run_cells(lake, [cell], settings_from(options), force)[0]
    click.echo(scores_text(outcome.metrics))
    rebuild_catalog(lake)


@click.command()
@click.option(
    "--symbols", required=True, callback=comma_list(str.upper), help="e.g. BTCUSDT,ETHUSDT."
)
@click.option("--intervals", default="1m", show_default=True, callback=comma_list())
@click.option("--datasets", default="regular", show_default=True, callback=comma_list())
@click.option(
    "--windows",
    default="5",
    show_default=True,
    callback=comma_list(int),
    help="Window sizes, e.g. 5,15,30.",
)
@click.option(
    "--models",
    default="custom",
    show_default=True,
    callback=comma_list(),
    help="Zoo models, e.g. custom,mobilenetv3.",
)
@click.option(
    "--protocols",
    default="experiment_i",
    show_default=True,
    callback=comma_list(),
    help="experiment_i, experiment_ii and/or seed_replica.",
)
@click.option(
    "--train-lengths",
    required=True,
    callback=comma_list(),
    help="Days ('7d,14d') or bars ('120bar').",
)
@click.option(
    "--test-lengths",
    default=None,
    callback=comma_list(),
    help="experiment_ii's test block lengths, e.g. 14d,21d,28d.",
)
@click.option(
    "--controls",
    is_flag=True,
    help="Add each cell's shuffled-label control and one leaky-label control.",
)
@settings_options
@click.pass_obj
def experiment(
    lake,
    symbols,
    intervals,
    datasets,
    windows,
    models,
    protocols,
    train_lengths,
    test_lengths,
    controls,
    force,
    **options,
) -> None:
    """Train and score a slice of the grid: every combination of the options. Cells whose
    inputs are unchanged since their stored results are skipped."""
    from ml.experiment import grid

    trainings = training_names(protocols, train_lengths, test_lengths)
    slice_cells = grid(symbols, intervals, datasets, windows, models, trainings)
    if controls:
        slice_cells += control_cells(slice_cells)
    outcomes = run_cells(lake, slice_cells, settings_from(options), force)
    trained = sum(outcome.trained for outcome in outcomes)
    click.echo(f"{len(outcomes)} cells: {trained} trained, {len(outcomes) - trained} skipped")
    rebuild_catalog(lake)
    click.echo(leaderboard_text(lake, [cell.key for cell in slice_cells]))


def training_names(
    protocols: Sequence[str], train_lengths: Sequence[str], test_lengths: Sequence[str] | None
) -> list[str]:
    """The trainings of the slice; test lengths belong to experiment_ii alone."""
    from ml.experiment import training_name
    from ml.protocols import EXPERIMENT_II

    if test_lengths and EXPERIMENT_II not in protocols:
        raise InvalidRequestError(
            f"--test-lengths {','.join(test_lengths)} given, but only {EXPERIMENT_II} has test "
            f"blocks of another length; --protocols is {','.join(protocols)}"
        )
    return [
        training_name(protocol, length, test_length)
        for protocol in protocols
        for length in train_lengths
        for test_length in (test_lengths or [None] if protocol == EXPERIMENT_II else [None])
    ]


def control_cells(cells: Sequence) -> list:
    """Each honest cell's shuffled-label control, and one leaky-label control (the first
    cell's model trained on a label drawn in its image)."""
    import dataclasses

    from ml.experiment import seed_label

    honest = [cell for cell in cells if not cell.is_control]
    if not honest:
        return []
    shuffled = [dataclasses.replace(cell, shuffled=True) for cell in honest]
    first = honest[0]
    leaky = dataclasses.replace(first, label=seed_label(first.dataset, first.window_size))
    return list(dict.fromkeys([*shuffled, leaky]))


def run_cells(lake, cells: Sequence, settings, force: bool) -> list:
    """Run each cell with a tqdm bar over its epochs and record it in the Dagster instance;
    every cell's fingerprint is computed first, so a bad cell stops the command before any
    cell trains."""
    from ml.experiment import cell_fingerprint, run_cell

    for cell in cells:
        cell_fingerprint(lake, cell, settings)
    outcomes = []
    for n, cell in enumerate(cells, start=1):
        with epoch_bar(f"[{n}/{len(cells)}] {cell.key}", settings.train.max_epochs) as progress:
            outcome = run_cell(lake, cell, settings, force=force, progress=progress)
        record(outcome)
        click.echo(
            f"{cell.key}: {'trained' if outcome.trained else 'skipped'} ({outcome.seconds:.1f} s)"
        )
        outcomes.append(outcome)
    return outcomes


@contextmanager
def epoch_bar(description: str, epochs: int) -> Iterator[Callable]:
    from tqdm import tqdm

    with tqdm(total=epochs, desc=description, unit="epoch", leave=False) as bar:

        def progress(record) -> None:
            bar.update(1)
            bar.set_postfix(
                train_loss=f"{record.train_loss:.4f}", val_loss=f"{record.validation_loss:.4f}"
            )

        yield progress


def record(outcome) -> None:
    """Report a cell run to the project's Dagster instance (unless --no-record)."""
    from dagster_project.assets.experiments import report_cell
    from dagster_project.cli import cli_instance

    instance = cli_instance()
    if instance is not None:
        report_cell(instance, outcome, written_by="candlelake CLI")


def scores_text(metrics: pl.DataFrame) -> str:
    """The pooled test scores of the cell's model and its baselines, one line each."""
    from dagster_project.assets.experiments import pooled_test_rows, with_ci

    lines = [f"{'scorer':<20} {'role':<17} {'rows':>7}  {'AUROC [95% CI]':<24} accuracy [95% CI]"]
    for row in pooled_test_rows(metrics).iter_rows(named=True):
        lines.append(
            f"{row['scorer']:<20} {row['role']:<17} {row['n_rows']:>7}  "
            f"{with_ci(row, 'auroc'):<24} {with_ci(row, 'accuracy')}"
        )
    return "\n".join(lines)


def leaderboard_text(lake, keys: Sequence[str]) -> str:
    """The slice's rows of the catalog's leaderboard view (honest cells only)."""
    import duckdb

    from dagster_project.core.lake import open_catalog

    con = open_catalog(lake)
    try:
        board = con.table("leaderboard").pl()
    except duckdb.CatalogException:  # built only once metrics exist
        return "leaderboard: no results yet"
    finally:
        con.close()
    rows = board.filter(pl.col("cell").is_in(list(keys))).select(LEADERBOARD_COLUMNS)
    if rows.is_empty():
        return "leaderboard: none of these cells (controls are in the `controls` view)"
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=60,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        float_precision=3,
    ):
        return f"leaderboard (this slice; `select * from leaderboard` for all):\n{rows}"


@click.command("export-results")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the {COIN}_exp{N}_results.csv files (created).",
)
@click.pass_obj
def export_results(lake, out_dir: str) -> None:
    """Write results/metrics in the seed's CSV format, one file per coin and experiment."""
    from ml.results import export_seed_csv

    for path in export_seed_csv(lake, out_dir):
        click.echo(f"wrote {path}")


@click.command()
@click.option("--symbol", required=True, help="e.g. BTCUSDT.")
@click.option("--model", required=True, help="A zoo model trained by train or experiment.")
@click.option(
    "--cell",
    "cell_key",
    default=None,
    help="This cell's checkpoint (default: the newest honest, non-control cell).",
)
@click.pass_obj
def predict(lake, symbol: str, model: str, cell_key: str | None) -> None:
    """Score the latest complete window of SYMBOL through the cell's ONNX export."""
    from dagster_project.assets.experiments import with_ci
    from ml.inference import find_checkpoint, predict_latest

    prediction = predict_latest(lake, find_checkpoint(lake, symbol.upper(), model, cell_key))
    click.echo(f"cell:          {prediction.cell}")
    click.echo(f"decision time: {prediction.decision_time:%Y-%m-%d %H:%M} UTC")
    click.echo(f"P(up):         {prediction.probability:.4f}")
    metrics = prediction.test_metrics
    if metrics is None:
        click.echo("test metrics:  none stored for this checkpoint")
    else:
        click.echo(f"test AUROC:    {with_ci(metrics, 'auroc')} over {metrics['n_rows']} rows")
        click.echo(f"test accuracy: {with_ci(metrics, 'accuracy')}")


def rebuild_catalog(lake) -> None:
    from dagster_project.cli import rebuild_catalog as rebuild

    rebuild(lake)


EXPERIMENT_COMMANDS = (train, experiment, export_results, predict)
