"""Zoo inference through onnxruntime against torch eager, per model, at 64 px high.

    python bench/bench_onnx.py [--calls 200] [--batch 256] [--batch-calls 5] [--threads N]

Renders sliding windows of simulated BTCUSDT 1m klines in each zoo model's input style at its
default window (``candle``: 64 × 64 RGB; ``ohlc_bar``: 64 rows, 3 px a candle), builds the model
(random weights, eval mode), exports it with ``ml.export.export_onnx`` and times, in the same run
and on the same images: ``OnnxModel.logits`` (onnxruntime, CPU) against the torch model under
``torch.inference_mode``, both on ``--threads`` threads (default: torch's, one per core). Batch 1:
the median (p50) of ``--calls`` calls, each on the next image, after 10 warm-up calls. Batch
``--batch``: the median of ``--batch-calls`` calls. Prints markdown table rows; ratio = torch's
time / onnxruntime's (above 1: onnxruntime is faster).
Goal: batch-1 p50 ≤ 5 ms through onnxruntime for every model, and faster than torch eager.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from dagster_project.core.klines import TimeRange  # noqa: E402
from dagster_project.ingest.simulator import simulate_klines  # noqa: E402
from ml.export import OnnxModel, export_onnx  # noqa: E402
from ml.image_preview import windows_from_klines  # noqa: E402
from ml.rendering import CandleStyle, OhlcBarStyle, render  # noqa: E402
from ml.train import as_inputs  # noqa: E402
from ml.zoo import create_model, list_models, model_defaults  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SIZE = 64
GOAL_MS = 5.0
WARM_UP = 10
STYLES = {"candle": CandleStyle(SIZE, SIZE), "ohlc_bar": OhlcBarStyle(height=SIZE)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch-calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    windows = max(args.calls + WARM_UP, args.batch)
    klines = simulate_klines(
        "BTCUSDT", "1m", TimeRange(START, START + dt.timedelta(minutes=windows + 200))
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in list_models():
            defaults = model_defaults(name)
            batch = windows_from_klines(klines, defaults.window, windows, stride=1)
            images = render(batch, STYLES[defaults.input_style])
            inputs = as_inputs(torch.from_numpy(images), torch.device("cpu"))
            model = create_model(name, image_size=tuple(images.shape[2:])).eval()
            path = export_onnx(model, (1, *images.shape[1:]), Path(folder) / f"{name}.onnx")
            served = OnnxModel(path, threads=args.threads)
            print_rows(name, images.shape[1:], args, *measure(model, served, inputs, args))


def measure(model, served: OnnxModel, inputs: torch.Tensor, args) -> tuple[float, ...]:
    """(onnxruntime, torch) p50 seconds at batch 1, then the same at batch ``args.batch``."""
    arrays = inputs.numpy()
    big_tensor, big_array = inputs[: args.batch], arrays[: args.batch]

    def eager(x: torch.Tensor) -> None:
        with torch.inference_mode():
            model(x)

    one_onnx = p50([lambda i=i: served.logits(arrays[i : i + 1]) for i in range(args.calls)])
    one_torch = p50([lambda i=i: eager(inputs[i : i + 1]) for i in range(args.calls)])
    many_onnx = p50([lambda: served.logits(big_array)] * args.batch_calls, warm_up=1)
    many_torch = p50([lambda: eager(big_tensor)] * args.batch_calls, warm_up=1)
    return one_onnx, one_torch, many_onnx, many_torch


def p50(calls: list[Callable[[], object]], warm_up: int = WARM_UP) -> float:
    """Median seconds of the calls, after running the first ``warm_up`` of them untimed."""
    for call in calls[:warm_up]:
        call()
    times = []
    for call in calls:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_rows(name, shape, args, one_onnx, one_torch, many_onnx, many_torch) -> None:
    image = f"{shape[1]}×{shape[2]}, {shape[0]} channel{'s' if shape[0] > 1 else ''}"
    where = f"`bench_onnx.py`, {args.threads} threads"
    one_met = one_onnx * 1e3 <= GOAL_MS and one_onnx < one_torch
    print(
        f"| `{name}` inference, batch 1 ({image}), p50 of {args.calls} calls — {where} | "
        f"onnxruntime {one_onnx * 1e3:.2f} ms | torch eager {one_torch * 1e3:.2f} ms | "
        f"{one_torch / one_onnx:.2f}× | p50 ≤ {GOAL_MS:g} ms and faster than torch | "
        f"{'yes' if one_met else '**no**'} |"
    )
    rate_onnx, rate_torch = args.batch / many_onnx, args.batch / many_torch
    print(
        f"| `{name}` inference, batch {args.batch} ({image}), p50 of {args.batch_calls} calls | "
        f"onnxruntime {many_onnx * 1e3:.1f} ms ({rate_onnx:,.0f} images/s) | torch eager "
        f"{many_torch * 1e3:.1f} ms ({rate_torch:,.0f} images/s) | "
        f"{many_torch / many_onnx:.2f}× | faster than torch | "
        f"{'yes' if many_onnx < many_torch else '**no**'} |"
    )


if __name__ == "__main__":
    main()
