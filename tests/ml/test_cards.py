"""ml.cards: model cards and checkpoint paths without torch, so the explorer and the catalog's
readers (ml.evaluate, ml.results) start without importing it."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT_MODULES = ("ml.cards", "ml.evaluate", "ml.results")


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_reading_cards_and_results_does_not_import_torch(module):
    probe = f"import sys, {module}; print([m for m in sys.modules if m.split('.')[0] == 'torch'])"
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]", f"{module} imports {found}"
