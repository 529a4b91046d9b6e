"""Experiments layer: the experiment grid's cells as dynamic partitions of one asset.

A partition key is a cell key (``ml.experiment.Cell.key``, e.g.
``BTCUSDT.1m.regular.w5.custom.exp1_t7d``). Materializing a partition runs
``ml.experiment.run_cell``: it trains and scores the cell into ``results/predictions``,
``results/metrics`` and ``models/<model>/<cell key>/``, or reports "skipped" when results with the
same fingerprint are stored. ``experiment_grid_job`` registers a grid slice's keys, so the UI can
backfill any of them; the ``experiments`` pool keeps a backfill's runs to one at a time (the
limit is the instance's, written by ``main_job.dagster_home``).
"""

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import polars as pl

from dagster_project.assets.common import EXPERIMENT_CELLS, check_result
from dagster_project.assets.curated import CURATED_KLINES
from dagster_project.assets.datasets import LABELS, WINDOWS
from dagster_project.core.checks import CheckOutcome
from dagster_project.core.errors import InvalidRequestError
from dagster_project.resources import LakeResource
from ml.experiment import Cell, CellOutcome, CellSettings, grid, run_cell
from ml.train import CARD, EpochRecord, Progress, TrainConfig, read_card

CELLS_PARTITIONS = dg.DynamicPartitionsDefinition(name="experiment_cells")
EXPERIMENTS_POOL = "experiments"
KNOWN_AT_CHECK = "known_at_before_test"
SUSPICIOUS_CHECK = "not_suspicious"
# the rows a cell's headline numbers come from: pooled test rows (no block)
MODEL_ROLES = ("model", "shuffled_control")
CI_METRICS = ("auroc", "accuracy")
# A cell reads its symbol's windows, labels and candles over its days, whichever they are.
CELL_DEPS = [
    dg.AssetDep(key, partition_mapping=dg.AllPartitionMapping())
    for key in (WINDOWS, LABELS, CURATED_KLINES)
]


class CellConfig(dg.Config):
    """How a cell is trained and scored (ml.experiment.CellSettings); part of its fingerprint."""

    first_day: str = ""  # YYYY-MM-DD; empty: the first day with windows of the cell's series
    last_day: str = ""  # YYYY-MM-DD, inclusive; empty: the last such day
    blocks: int = 5  # test blocks per training
    image_size: int = 64  # candle images are image_size x image_size pixels
    max_epochs: int = 30
    patience: int = 5  # epochs without a better validation loss before stopping early
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    n_boot: int = 1000  # bootstrap replicates for each confidence interval
    force: bool = False  # retrain even when results with the same fingerprint are stored

    def settings(self) -> CellSettings:
        return cell_settings(
            day_or_none(self.first_day, "first_day"),
            day_or_none(self.last_day, "last_day"),
            blocks=self.blocks,
            image_size=self.image_size,
            max_epochs=self.max_epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            n_boot=self.n_boot,
        )


def cell_settings(
    first_day: dt.date | None,
    last_day: dt.date | None,
    *,
    blocks: int,
    image_size: int,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    seed: int,
    n_boot: int,
) -> CellSettings:
    """The settings the asset's config and the CLI's flags both describe."""
    train = TrainConfig(
        max_epochs=max_epochs, patience=patience, batch_size=batch_size, lr=lr, seed=seed
    )
    return CellSettings(
        first_day=first_day,
        last_day=last_day,
        blocks=blocks,
        image_size=image_size,
        train=train,
        n_boot=n_boot,
    )


def day_or_none(text: str, name: str) -> dt.date | None:
    if not text.strip():
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequestError(f"bad {name} {text!r}; expected YYYY-MM-DD or empty") from None


@dg.asset(
    key=EXPERIMENT_CELLS,
    deps=CELL_DEPS,
    partitions_def=CELLS_PARTITIONS,
    pool=EXPERIMENTS_POOL,
    group_name="experiments",
    kinds={"pytorch", "onnx", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(KNOWN_AT_CHECK, asset=EXPERIMENT_CELLS),
        dg.AssetCheckSpec(SUSPICIOUS_CHECK, asset=EXPERIMENT_CELLS),
    ],
    description="One experiment cell per partition (symbol.interval.dataset.w<window>.model."
    "training[.label][.shuffled]): the zoo model trained on the protocol's training period and "
    "scored on its test blocks beside the baselines, into results/predictions, results/metrics "
    "and models/<model>/<cell>/ (with model.onnx). A cell whose inputs are unchanged is skipped. "
    "Register cells with experiment_grid_job or `candlelake experiment`, then backfill any of "
    "them here (docs/experiments.md).",
)
def cells(
    context: dg.AssetExecutionContext, config: CellConfig, lake: LakeResource
) -> dg.MaterializeResult:
    cell = Cell.from_key(context.partition_key)
    outcome = run_cell(
        lake.get(),
        cell,
        config.settings(),
        force=config.force,
        progress=epoch_logger(context.log, cell.key),
    )
    context.log.info(f"{cell.key}: {describe_outcome(outcome)}")
    return dg.MaterializeResult(
        metadata=cell_metadata(outcome),
        check_results=[
            check_result(EXPERIMENT_CELLS, outcome_check)
            for outcome_check in cell_checks(outcome.metrics)
        ],
    )


def epoch_logger(log: logging.Logger | dg.DagsterLogManager, key: str) -> Progress:
    def log_epoch(record: EpochRecord) -> None:
        log.info(
            f"{key} epoch {record.epoch}: train loss {record.train_loss:.4f}, validation loss "
            f"{record.validation_loss:.4f}, accuracy {record.validation_accuracy:.3f}, "
            f"{record.samples_per_s:.0f} samples/s"
        )

    return log_epoch


def describe_outcome(outcome: CellOutcome) -> str:
    verb = "trained" if outcome.trained else "skipped (results with this fingerprint stored)"
    return f"{verb} in {outcome.seconds:.1f} s"


# --- metadata ---------------------------------------------------------------------------------


def pooled_test_rows(metrics: pl.DataFrame) -> pl.DataFrame:
    """The pooled test rows (one per scorer), the model first, then the baselines by name."""
    return metrics.filter((pl.col("split") == "test") & pl.col("block").is_null()).sort(
        pl.col("role").is_in(MODEL_ROLES).not_(), "scorer"
    )


def with_ci(row: dict[str, object], metric: str) -> str:
    """``0.512 [0.487, 0.538]``: a metric and its 95 % block-bootstrap interval."""
    value, low, high = (row.get(name) for name in (metric, f"{metric}_low", f"{metric}_high"))
    if value is None:
        return "n/a"
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}{interval}"


def cell_metadata(outcome: CellOutcome) -> dict[str, object]:
    """What the UI shows for a materialized cell."""
    pooled = pooled_test_rows(outcome.metrics).to_dicts()
    model = next((row for row in pooled if row["role"] in MODEL_ROLES), {})
    card = checkpoint_card(outcome.checkpoint)
    history = card.get("training", {}).get("history", [])
    metadata: dict[str, object] = {
        "outcome": "trained" if outcome.trained else "skipped",
        "fingerprint": outcome.fingerprint,
        "seconds": round(outcome.seconds, 3),
        "test_auroc": float_or_nan(model.get("auroc")),
        "test_auroc_ci": with_ci(model, "auroc"),
        "scores": dg.MetadataValue.md(scores_table(pooled)),
        "epochs": len(history),
        "loss_curve": dg.MetadataValue.md(loss_table(history)),
        "samples_per_s": float_or_nan(model.get("train_samples_per_s")),
    }
    for row in pooled:
        if row["role"] == "baseline":
            metadata[f"{row['scorer']}_test_auroc_ci"] = with_ci(row, "auroc")
    if outcome.checkpoint is not None:
        metadata["checkpoint"] = dg.MetadataValue.path(str(outcome.checkpoint))
    return metadata


def float_or_nan(value: object) -> float:
    return float("nan") if value is None else float(value)


def checkpoint_card(checkpoint: Path | None) -> dict:
    return {} if checkpoint is None else read_card(checkpoint / CARD)


def scores_table(pooled: Sequence[dict[str, object]]) -> str:
    """The pooled test scores of the model and each baseline, as a Markdown table."""
    lines = [
        "| scorer | role | rows | AUROC [95 % CI] | accuracy [95 % CI] |",
        "|---|---|---:|---|---|",
    ]
    for row in pooled:
        scores = " | ".join(with_ci(row, metric) for metric in CI_METRICS)
        lines.append(f"| {row['scorer']} | {row['role']} | {row['n_rows']} | {scores} |")
    return "\n".join(lines)


def loss_table(history: Sequence[dict[str, object]]) -> str:
    """The training history (from the model card) as a Markdown table, one row per epoch."""
    lines = [
        "| epoch | train loss | validation loss | validation accuracy | samples/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for epoch in history:
        lines.append(
            f"| {epoch['epoch']} | {epoch['train_loss']:.4f} | {epoch['validation_loss']:.4f} "
            f"| {epoch['validation_accuracy']:.3f} | {epoch['samples_per_s']:.0f} |"
        )
    return "\n".join(lines)


# --- checks -----------------------------------------------------------------------------------


def cell_checks(metrics: pl.DataFrame) -> list[CheckOutcome]:
    return [known_at_before_test(metrics), not_suspicious(metrics)]


def known_at_before_test(metrics: pl.DataFrame) -> CheckOutcome:
    """Every honest test row's block starts after its training's last ``known_at`` plus the
    embargo (``known_at_ok``, computed from the stored calendar). seed_replica rows are
    dishonest by design and not checked."""
    honest = metrics.filter(pl.col("is_honest") & (pl.col("split") == "test"))
    late = honest.filter(~pl.col("known_at_ok"))
    failing = [
        f"{row['scorer']} {row['fold']}: test starts {row['test_start']}, not after the "
        f"embargo's end {row['embargo_end']}"
        for row in late.unique(["fold", "scorer"]).sort("fold", "scorer").iter_rows(named=True)
    ]
    if honest.is_empty():
        description = "no honest rows (seed_replica: its test blocks come before training)"
    elif failing:
        description = f"{late.height} honest test rows start before training's last known_at"
    else:
        description = f"{honest.height} honest test rows start after training's known_at"
    return CheckOutcome(
        KNOWN_AT_CHECK,
        passed=not failing,
        description=description,
        metadata={"honest_test_rows": honest.height, "failing": failing[:20]},
    )


def not_suspicious(metrics: pl.DataFrame) -> CheckOutcome:
    """No test score beats every baseline, or its own training score, by more than its CI."""
    flagged = metrics.filter(pl.col("suspicious").fill_null(False))
    reasons = [
        f"{row['scorer']} {row['fold']}: {row['suspicious_reason']}"
        for row in flagged.sort("fold", "scorer").iter_rows(named=True)
    ]
    return CheckOutcome(
        SUSPICIOUS_CHECK,
        passed=not reasons,
        description="; ".join(reasons[:3]) if reasons else "no suspicious score",
        metadata={"suspicious_rows": flagged.height, "reasons": reasons[:20]},
        warn_only=True,
    )


# --- registering cells ------------------------------------------------------------------------


def register_cells(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Add the cell keys not yet registered as partitions of experiments/cells; returns them."""
    known = set(instance.get_dynamic_partitions(CELLS_PARTITIONS.name))
    new = list(dict.fromkeys(key for key in keys if key not in known))
    if new:
        instance.add_dynamic_partitions(CELLS_PARTITIONS.name, new)
    return new


def report_cell(instance: dg.DagsterInstance, outcome: CellOutcome, written_by: str) -> None:
    """Record a cell run outside Dagster (the CLI) as a materialization of its partition, with
    the same metadata and check evaluations a run would record."""
    key = outcome.cell.key
    register_cells(instance, [key])
    metadata = cell_metadata(outcome) | {"written_by": written_by}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=EXPERIMENT_CELLS, partition=key, metadata=metadata)
    )
    for outcome_check in cell_checks(outcome.metrics):
        result = check_result(EXPERIMENT_CELLS, outcome_check)
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=EXPERIMENT_CELLS,
                check_name=result.check_name,
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description,
                partition=key,
            )
        )


class GridConfig(dg.Config):
    """A slice of the grid: every combination of these (ml.experiment.grid)."""

    symbols: list[str] = ["BTCUSDT"]
    intervals: list[str] = ["1m"]
    datasets: list[str] = ["regular"]
    window_sizes: list[int] = [5]
    models: list[str] = ["custom"]
    trainings: list[str] = ["exp1_t7d"]  # exp1_t<L>, exp2_t<L>_test<T>, seed_t<L>; L: 7d, 120bar
    labels: list[str] = [""]  # "": each dataset's paired label; else a label, e.g. a leaky control
    shuffled: list[bool] = [False]  # [False, True] adds each cell's shuffled-label control

    def cells(self) -> list[Cell]:
        return grid(
            self.symbols,
            self.intervals,
            self.datasets,
            self.window_sizes,
            self.models,
            self.trainings,
            labels=tuple(label or None for label in self.labels),
            shuffled=tuple(self.shuffled),
        )


@dg.op(description="Add a grid slice's cell keys to the partitions of experiments/cells.")
def register_experiment_cells(context: dg.OpExecutionContext, config: GridConfig) -> None:
    keys = [cell.key for cell in config.cells()]
    new = register_cells(context.instance, keys)
    context.log.info(f"{len(keys)} cells in the slice, {len(new)} newly registered: {new}")
