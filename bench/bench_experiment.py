"""Time per experiment cell per zoo model at 64², and the Candlestick research's grid from it.

    python bench/bench_experiment.py [--models custom edgenext ...] [--epochs 1] [--threads 2]

Each model runs one cell through ``ml.experiment.run_cell`` (the path of ``candlelake train`` and
the experiment assets): train on 7 days of simulated BTCUSDT 1m (``regular`` dataset, 15-candle
windows, 64² candle images; ``jkx`` its ``ohlc_bar`` image) with the ``TrainConfig`` defaults
(batch 64, class weights, early stopping) except ``--epochs`` (max_epochs; patience stays 5, so
a cap below 6 cuts every run short), then score the model and the baselines on its train rows
and on 5 test blocks, with 1,000-replicate bootstrap CIs, the ONNX export and the result tables.
The test blocks are 1 day each (``exp2_t7d_test1d``) rather than Experiment I's 7, to keep the
simulated lake at 13 days; scoring time is measured per scored day and scaled.

Extrapolation, per model: a training epoch costs ``train_seconds / epochs_run`` for 7 days of
data and scales linearly with the training length L (rows per epoch); everything else in the
cell (scoring, bootstrap, splits, export, writes) is measured per scored day (the training's
train rows, 80 % of L, plus its test blocks) and scales with those days. The research's grid is
6 coins × 5 models × 3 windows × 5 datasets × 5 trainings = 2,250 cells: Experiment I at
L = 7, 14, 21, 28 days (5 test blocks of L each) and Experiment II (train 7 days, 5 test blocks of
28 days, its longest). Windows and datasets change the rendered image, not the model's cost per
image, so each coin-window-dataset combination costs the same. The grid's hours are given at 6
epochs a training (the fewest the defaults allow: best epoch 1, patience 5; usual for an honest
label at chance, whose validation loss bottoms out early) and at 30 (max_epochs), on
``--threads`` torch threads, one cell after another.
Reference: the 24-hour goal (the original needed weeks on a GPU at 224²); ratio = grid hours / 24.
Prints markdown table rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ml.experiment import Cell, CellSettings, run_cell  # noqa: E402
from ml.protocols import DEFAULT_VALIDATION_FRACTION  # noqa: E402
from ml.train import TrainConfig  # noqa: E402
from tests.helpers import simulated_dataset_lake  # noqa: E402

SYMBOL, INTERVAL, DATASET, WINDOW, SIZE = "BTCUSDT", "1m", "regular", 15, 64
TRAINING = "exp2_t7d_test1d"  # train 7 days, 5 test blocks of 1 day
TRAIN_DAYS, TEST_DAYS, BLOCKS = 7, 1, 5
LAKE_DAYS = 13  # the training, the embargo and 5 test days
RESEARCH_MODELS = ("custom", "edgenext", "ghostnet", "levit", "mobilenetv3")
COINS, WINDOWS, DATASETS = 6, 3, 5
GRID_TRAININGS = ((7, 7), (14, 14), (21, 21), (28, 28), (7, 28))  # (train, test block) days
FEWEST_EPOCHS, MOST_EPOCHS = TrainConfig().patience + 1, TrainConfig().max_epochs
GOAL_HOURS = 24.0


@dataclass(frozen=True)
class CellTiming:
    model: str
    seconds: float  # the whole cell
    train_seconds: float
    epochs: int

    @property
    def epoch_seconds(self) -> float:
        """One epoch on TRAIN_DAYS of data."""
        return self.train_seconds / self.epochs

    @property
    def scoring_seconds_per_day(self) -> float:
        return (self.seconds - self.train_seconds) / scored_days(TRAIN_DAYS, TEST_DAYS)

    def cell_seconds(self, train_days: int, test_days: int, epochs: int) -> float:
        """A cell training ``epochs`` epochs on ``train_days``, tested on 5 blocks of
        ``test_days``."""
        training = epochs * self.epoch_seconds * train_days / TRAIN_DAYS
        return training + self.scoring_seconds_per_day * scored_days(train_days, test_days)


def scored_days(train_days: int, test_days: int) -> float:
    """Days of rows a cell scores: the training's train rows and its test blocks."""
    return train_days * (1 - DEFAULT_VALIDATION_FRACTION) + BLOCKS * test_days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(RESEARCH_MODELS))
    parser.add_argument("--epochs", type=int, default=None, help="cap max_epochs (default: 30)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = TrainConfig(device="cpu")
    if args.epochs is not None:
        train = dataclasses.replace(train, max_epochs=args.epochs, t_0=args.epochs)
    settings = CellSettings(image_size=SIZE, train=train)
    days = tuple(dt.date(2024, 3, 1) + dt.timedelta(days=n) for n in range(LAKE_DAYS))
    with tempfile.TemporaryDirectory() as folder:
        lake = simulated_dataset_lake(Path(folder) / "lake", SYMBOL, days)
        timings = [time_cell(lake, model, settings) for model in args.models]
    for timing in timings:
        print_cell_row(timing, args)
    research = [t for t in timings if t.model in RESEARCH_MODELS]
    if len(research) == len(RESEARCH_MODELS):
        print_grid_row(research, args)


def time_cell(lake, model: str, settings: CellSettings) -> CellTiming:
    cell = Cell(SYMBOL, INTERVAL, DATASET, WINDOW, model, TRAINING)
    outcome = run_cell(lake, cell, settings, force=True)
    row = outcome.metrics.filter(outcome.metrics["scorer"] == model).row(0, named=True)
    blocks = outcome.metrics["block"].drop_nulls().n_unique()
    if blocks != BLOCKS:
        raise SystemExit(f"{cell.key} scored {blocks} test blocks, expected {BLOCKS}")
    return CellTiming(model, outcome.seconds, row["train_seconds"], row["epochs_run"])


def grid_hours(timings: list[CellTiming], epochs: int) -> float:
    per_combination = sum(
        t.cell_seconds(train, test, epochs) for t in timings for train, test in GRID_TRAININGS
    )
    return COINS * WINDOWS * DATASETS * per_combination / 3600


def print_cell_row(timing: CellTiming, args) -> None:
    cap = "" if args.epochs is None else f", max_epochs capped at {args.epochs}"
    exp1_7d = [timing.cell_seconds(7, 7, e) / 60 for e in (FEWEST_EPOCHS, MOST_EPOCHS)]
    print(
        f"| `{timing.model}`: one cell `{TRAINING}` (train 7 days of 1m, {WINDOW}-candle "
        f"{SIZE}² images, 5 test blocks of 1 day, baselines, 1,000-replicate CIs, ONNX) on "
        f"{args.threads} threads{cap} — `bench_experiment.py` | {timing.seconds:,.0f} s: "
        f"{timing.epochs} epoch(s) {timing.train_seconds:,.0f} s ({timing.epoch_seconds:,.0f} s "
        f"an epoch), the rest {timing.seconds - timing.train_seconds:,.0f} s "
        f"({timing.scoring_seconds_per_day:,.1f} s a scored day) | an `exp1_t7d` cell (5 test "
        f"blocks of 7 days) extrapolated: {exp1_7d[0]:,.0f} min at {FEWEST_EPOCHS} epochs, "
        f"{exp1_7d[1]:,.0f} min at {MOST_EPOCHS} | — | — | — |"
    )


def print_grid_row(timings: list[CellTiming], args) -> None:
    fewest, most = grid_hours(timings, FEWEST_EPOCHS), grid_hours(timings, MOST_EPOCHS)
    measured = "capped epochs, extrapolated per epoch" if args.epochs is not None else "measured"
    met = "yes" if most < GOAL_HOURS else "at 6 epochs only" if fewest < GOAL_HOURS else "**no**"
    print(
        f"| The Candlestick research's grid ({COINS} coins × {len(timings)} models × {WINDOWS} "
        f"windows × {DATASETS} datasets × 5 trainings = "
        f"{COINS * len(timings) * WINDOWS * DATASETS * len(GRID_TRAININGS):,} cells: exp1 at "
        f"7/14/21/28 days, exp2 "
        f"7 → 28-day blocks), extrapolated from the cells above ({measured}), one cell at a "
        f"time on {args.threads} threads | {fewest:,.0f} h at {FEWEST_EPOCHS} epochs a "
        f"training; {most:,.0f} h at {MOST_EPOCHS} | {GOAL_HOURS:g} h | "
        f"{fewest / GOAL_HOURS:.1f}× – {most / GOAL_HOURS:.1f}× | < {GOAL_HOURS:g} h on 2 cores | "
        f"{met} |"
    )


if __name__ == "__main__":
    main()
