"""Model cards and where checkpoints live, without torch: what the explorer, inference and the
catalog read about a trained model (``models/<model>/<run>/card.json``). Writing and loading the
weights is ``ml.train``'s."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.lake import Lake

MODELS_LAYER = "models"
CARD = "card.json"
CARD_FORMAT = 1
_CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")


class CheckpointError(CandlelakeError):
    """A checkpoint that is missing, damaged or not one candlelake wrote."""


def read_card(card_path: Path) -> dict[str, object]:
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {card_path.parent}: {card_path.name} is missing"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint card {card_path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise CheckpointError(
            f"checkpoint card {card_path} has format {found!r}; expected {CARD_FORMAT}"
        )
    missing = [key for key in ("model", "weights") if key not in card]
    if missing or not {"file", "sha256"} <= set(card["weights"]):
        lacking = missing or "weights.file and weights.sha256"
        raise CheckpointError(f"checkpoint card {card_path} lacks {lacking}")
    return card


def checkpoint_dir(lake: Lake, model_name: str, run: str) -> Path:
    for what, name in (("model name", model_name), ("run", run)):
        if not isinstance(name, str) or not _CHECKPOINT_NAME.match(name):
            raise InvalidRequestError(
                f"bad checkpoint {what} {name!r}; expected 1-128 of letters, digits, _ . = -, "
                "not starting with . or -"
            )
    return lake.root / MODELS_LAYER / model_name / run
