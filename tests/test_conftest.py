"""The suite's own fixtures: real-data tests skip outside the team's workspace, fail in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, REQUIRE_SHARED_DATA, shared_data_or_stop


def stop_of(path: Path, environ: dict[str, str]) -> tuple[type, str] | None:
    """How ``shared_data_or_stop`` stops the test (failure or skip) and why; None if it goes on.

    Caught here because a skip escaping a ``pytest.raises`` would skip this test, not fail it.
    """
    try:
        shared_data_or_stop(path, environ)
    except (pytest.fail.Exception, pytest.skip.Exception) as stop:
        return type(stop), str(stop)
    return None


def test_present_shared_data_is_used(tmp_path):
    assert stop_of(tmp_path, {REQUIRE_SHARED_DATA: "1"}) is None
    assert shared_data_or_stop(tmp_path, {}) == tmp_path


@pytest.mark.parametrize("required", ["1", "true", "YES"])
def test_missing_shared_data_fails_when_required(tmp_path, required):
    missing = tmp_path / "binance"
    assert stop_of(missing, {REQUIRE_SHARED_DATA: required}) == (
        pytest.fail.Exception,
        f"real Binance data not found at {missing}, and {REQUIRE_SHARED_DATA} requires it",
    )


@pytest.mark.parametrize("environ", [{}, {REQUIRE_SHARED_DATA: ""}, {REQUIRE_SHARED_DATA: "0"}])
def test_missing_shared_data_skips_otherwise(tmp_path, environ):
    missing = tmp_path / "binance"
    assert stop_of(missing, environ) == (
        pytest.skip.Exception,
        f"real Binance data not found at {missing} (only in the team's workspace)",
    )


def test_ci_requires_the_shared_data():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert f"\nexport {REQUIRE_SHARED_DATA}=1\n" in ci
    assert ci.rstrip().endswith("\nmake test")
