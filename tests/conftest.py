"""Fixtures shared by the whole suite: real Binance data (optional) and a tiny lake in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BINANCE = REPO_ROOT.parent / "shared" / "data" / "binance"
# Set by CI (.ci/run), where the real data must be present: its absence fails the tests using it.
REQUIRE_SHARED_DATA = "CANDLELAKE_REQUIRE_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_binance() -> Path:
    """``../shared/data/binance``: real Binance data; tests using it skip when it is absent,
    or fail when ``CANDLELAKE_REQUIRE_SHARED_DATA=1`` says it must be there."""
    return shared_data_or_stop(SHARED_BINANCE, os.environ)


def shared_data_or_stop(path: Path, environ: Mapping[str, str]) -> Path:
    """``path`` when it is a folder; else skip the test, or fail it when the data is required."""
    if path.is_dir():
        return path
    if environ.get(REQUIRE_SHARED_DATA, "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"real Binance data not found at {path}, and {REQUIRE_SHARED_DATA} requires it")
    pytest.skip(f"real Binance data not found at {path} (only in the team's workspace)")
