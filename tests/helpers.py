"""Small builders of known klines for tests (Binance wire rows → contract frames)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from dagster_project.core.klines import klines_from_binance_rows

UTC = dt.UTC


def minute_rows(
    day: dt.date, minutes: list[int], price: float = 100.0, bar_ms: int = 60_000
) -> list[list]:
    """Binance kline arrays for minute offsets of ``day``: close = open + 1, high/low ±2."""
    base = int(dt.datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    rows = []
    for m in minutes:
        open_ms = base + m * bar_ms
        o = price + m
        rows.append(
            [
                open_ms,
                str(o),
                str(o + 2),
                str(o - 2),
                str(o + 1),
                "10",
                open_ms + bar_ms - 1,
                str(10 * o),
                5,
                "4",
                str(4 * o),
                "0",
            ]
        )
    return rows


def minute_klines(
    day: dt.date, minutes: list[int], source: str = "simulator", **kw
) -> pl.DataFrame:
    return klines_from_binance_rows(minute_rows(day, minutes, **kw), source)


# Every asset the Definitions load, by lake path (what the UI must show too).
ALL_ASSET_KEYS = {
    "raw/klines",
    "raw/agg_trades",
    "raw/depth_snapshots",
    "raw/depth_updates",
    "curated/klines",
    "curated/kline_gaps",
    "features/microstructure",
    "features/indicators",
    "labels/labels",
    "windows/windows",
    "windows/splits",
    "images/regular",
    "images/fullimage",
    "images/irregular_60",
    "images/irregular_80",
    "images/irregular_95",
    "experiments/cells",
    "catalog",
}


def simulated_dataset_lake(root, symbol: str = "BTCUSDT", days: tuple[dt.date, ...] = ()):
    """A lake with simulated klines, curated, labels, windows and splits for ``symbol`` on
    ``days`` (default 2024-03-01 and 02), built with the library functions the assets call."""
    from dagster_project.core.lake import Lake, connect
    from dagster_project.ingest.landing import land_day
    from dagster_project.ingest.sources import SourceSettings, make_source
    from dagster_project.transform.curate import curate_day
    from dagster_project.transform.dataset_days import build_dataset_day
    from ml.split_specs import assign_splits

    days = days or (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
    lake = Lake(root)
    source = make_source(SourceSettings(kind="simulator"), lake.root)
    con = connect()
    try:
        for day in days:
            land_day(lake, source, symbol, "1m", day)
            curate_day(lake, symbol, day, con=con)
        for day in days:  # after every day landed: the labels' horizons reach the next day
            build_dataset_day(lake, con, symbol, day)
        assign_splits(lake, con)
    finally:
        con.close()
    return lake


def with_batch_norm_of(model, images):
    """``model`` in eval mode with its batch-norm statistics those of the uint8 ``images`` (as a
    trained model's are of its data), so its logits spread as a trained model's do rather than
    sitting near zero with fresh statistics."""
    import torch

    from ml.train import as_inputs

    for norm in model.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: one pass sets the batch's statistics
    model.train()
    with torch.no_grad():
        model(as_inputs(torch.from_numpy(images), torch.device("cpu")))
    return model.eval()
