"""Training throughput per zoo model at 64 px against 224 px, and the data loader against it.

    python bench/bench_train.py [--steps 5] [--warm-up 2] [--large-steps 2] [--large-warm-up 1]
                                [--batch 64] [--threads 2] [--no-224 NAME ...]

1. Models: for every ``ml.zoo.list_models()`` entry, training images/s of one optimiser step
   (forward, cross-entropy, backward, AdamW) on a batch of random uint8 images scaled /255, at
   224 px high against the reference, the same model at 64 px high, in the same run. Candle-style
   models take square images (224², against their default 64²); ``jkx`` takes its ``ohlc_bar``
   image, 3 px a candle of its default window (224 × 45, against its default 64 × 45). Each rate
   is the batch over the median of ``--steps`` timed steps after ``--warm-up`` untimed ones (at
   224 px: ``--large-steps`` after ``--large-warm-up``, fewer, to keep the run within 5 minutes
   on 2 cores), on ``--threads`` torch threads. ``--no-224`` skips the 224 px measurement of the
   named models.
2. The data loader: ``ml.image_dataset.LakeImageDataset`` over a small simulated lake (2 days of
   BTCUSDT 1m, 15-candle windows, 64 × 64 candle images rendered on the fly, no cache), read
   through the training path (``ml.train.ShuffleBuffer`` and ``ml.train.data_loader`` at batch
   ``--batch``), images/s over one whole pass, against the fastest model's 64 px training
   images/s from part 1. Goal: the loader is never the bottleneck, ≥ 3× that model's rate.
Prints markdown table rows; ratio = candlelake's rate / the reference's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ml.image_dataset import LakeImageDataset  # noqa: E402
from ml.rendering import CandleStyle, OhlcBarStyle  # noqa: E402
from ml.train import ShuffleBuffer, TrainConfig, as_inputs, data_loader  # noqa: E402
from ml.zoo import create_model, list_models, model_defaults  # noqa: E402
from tests.helpers import simulated_dataset_lake  # noqa: E402

SMALL, LARGE = 64, 224
LOADER_GOAL = 3.0  # the loader's images/s over the fastest model's training images/s
SYMBOL, INTERVAL, DATASET, WINDOW = "BTCUSDT", "1m", "regular", 15
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warm-up", type=int, default=2)
    parser.add_argument("--large-steps", type=int, default=2)
    parser.add_argument("--large-warm-up", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-224", nargs="*", default=[], metavar="NAME")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    small_rates = {}
    for name in list_models():
        small_shape = input_shape(name, SMALL)
        small_rates[name] = training_rate(name, small_shape, args.batch, args.steps, args.warm_up)
        large_shape, large_rate = input_shape(name, LARGE), None
        if name not in args.no_224:
            large_rate = training_rate(
                name, large_shape, args.batch, args.large_steps, args.large_warm_up
            )
        print_model_row(name, small_shape, small_rates[name], large_shape, large_rate, args)
    fastest = max(small_rates, key=small_rates.get)
    print_loader_row(loader_rate(args.batch), fastest, small_rates[fastest], args)


def input_shape(name: str, height: int) -> tuple[int, int, int]:
    """(channels, height, width) of ``name``'s images ``height`` px high in its input style."""
    defaults = model_defaults(name)
    if defaults.input_style == "candle":
        style = CandleStyle(height, height)
    else:
        style = OhlcBarStyle(height=height)
    return (defaults.in_chans, *style.size_for(defaults.window))


def training_rate(
    name: str, shape: tuple[int, int, int], batch: int, steps: int, warm_up: int
) -> float:
    """Images/s of ``name``'s training steps on random images of ``shape``: ``batch`` over the
    median of ``steps`` timed steps after ``warm_up`` untimed ones."""
    torch.manual_seed(0)
    model = create_model(name, image_size=shape[1:]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8)
    targets = torch.randint(0, model_defaults(name).num_classes, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(as_inputs(images, torch.device("cpu")))
        nn.functional.cross_entropy(logits, targets).backward()
        optimizer.step()

    for _ in range(warm_up):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def loader_rate(batch: int) -> tuple[float, int]:
    """(images/s, images) of one pass of the training loader over a simulated lake's windows."""
    with tempfile.TemporaryDirectory() as folder:
        lake = simulated_dataset_lake(Path(folder) / "lake", SYMBOL, DAYS)
        data = LakeImageDataset(
            lake, SYMBOL, INTERVAL, DAYS[0], DAYS[-1], DATASET, WINDOW, CandleStyle(SMALL, SMALL)
        )
        config = TrainConfig(batch_size=batch)
        started = time.perf_counter()
        shuffled = ShuffleBuffer(data, config.shuffle_buffer, seed=(config.seed, 0))
        images = sum(len(sample.label) for sample in data_loader(shuffled, config))
        return images / (time.perf_counter() - started), images


def describe(shape: tuple[int, int, int]) -> str:
    channels, height, width = shape
    return f"{height}×{width}×{channels}"


def print_model_row(name, small_shape, small_rate, large_shape, large_rate, args) -> None:
    where = f"batch {args.batch}, {args.threads} threads"
    small = f"{describe(small_shape)}: {small_rate:,.1f} images/s (median of {args.steps} steps)"
    if large_rate is None:
        candidate, ratio = f"{describe(large_shape)} skipped (--no-224)", "—"
    else:
        candidate = (
            f"{describe(large_shape)}: {large_rate:,.1f} images/s "
            f"(median of {args.large_steps} steps, fewer to fit the run)"
        )
        ratio = f"{large_rate / small_rate:.3f}×"
    print(
        f"| `{name}` training images/s (AdamW step + cross-entropy), {where} — "
        f"`bench_train.py` | {candidate} | {small} | "
        f"{ratio} | — | — |"
    )


def print_loader_row(loader: tuple[float, int], fastest: str, model_rate: float, args) -> None:
    rate, images = loader
    ratio = rate / model_rate
    print(
        f"| Data loader: `LakeImageDataset` through `ShuffleBuffer` + `data_loader` (batch "
        f"{args.batch}, {images:,} windows of {WINDOW} × {INTERVAL}, {SMALL}×{SMALL} candle images "
        f"rendered on the fly, one pass) | {rate:,.0f} images/s | fastest model's training at "
        f"{SMALL} px (`{fastest}`): {model_rate:,.1f} images/s | {ratio:.1f}× | "
        f"≥ {LOADER_GOAL:g}× the fastest model | {'yes' if ratio >= LOADER_GOAL else '**no**'} |"
    )


if __name__ == "__main__":
    main()
