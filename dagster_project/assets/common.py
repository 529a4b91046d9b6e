"""Small glue between plain check outcomes and Dagster's asset-check objects."""

from __future__ import annotations

import dagster as dg

from dagster_project.core.checks import CheckOutcome

# Here, not in assets/experiments.py: the catalog depends on it, and importing that module
# would import torch into every CLI command that rebuilds the catalog.
EXPERIMENT_CELLS = dg.AssetKey(["experiments", "cells"])


def check_specs(asset: dg.AssetKey, names: tuple[str, ...]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset) for name in names]


def check_result(asset: dg.AssetKey, outcome: CheckOutcome) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata={k: _metadata_value(v) for k, v in outcome.metadata.items()},
    )


def _metadata_value(value: object) -> object:
    return dg.MetadataValue.json(value) if isinstance(value, list) else value
