"""Fixtures shared by the whole suite: real Binance data (optional) and a tiny lake in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BINANCE = REPO_ROOT.parent / "shared" / "data" / "binance"


@pytest.fixture(scope="session")
def shared_binance() -> Path:
    """``../shared/data/binance``: real Binance data; tests using it skip when it is absent."""
    if not SHARED_BINANCE.is_dir():
        pytest.skip(
            f"real Binance data not found at {SHARED_BINANCE} (only in the team's workspace)"
        )
    return SHARED_BINANCE
