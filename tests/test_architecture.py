"""The layers of docs/architecture.md import only downwards.

orchestration (Dagster assets, jobs, the CLI) → ml → domain (ingest, transform) → core. Every
module's imports are read from its source (those inside functions too) and each one that reaches
a layer above its own fails, named with its file and line. Only orchestration imports
``dagster_project.assets``; ``app`` sits beside orchestration over ml, domain and core.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dagster_project", "ml", "app")

ORCHESTRATION_MODULES = {
    "definitions",
    "partitions",
    "resources",
    "jobs",
    "build",
    "main_job",
    "backfill",
    "cli",
    "cli_experiments",
}
# The layers each layer may import (its own included).
ALLOWED = {
    "core": {"core"},
    "domain": {"core", "domain"},
    "ml": {"core", "domain", "ml"},
    "orchestration": {"core", "domain", "ml", "orchestration"},
    "app": {"core", "domain", "ml", "app"},
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported
    path: Path
    line: int


def layer_of(module: str) -> str:
    """The layer of a project module; a module in no layer is an error, so that a new one is
    placed deliberately."""
    parts = module.split(".")
    if parts[0] in ("ml", "app"):
        return parts[0]
    if parts == ["dagster_project"] or parts[1] == "core":
        return "core"
    if parts[1] in ("ingest", "transform"):
        return "domain"
    if parts[1] == "assets" or parts[1] in ORCHESTRATION_MODULES:
        return "orchestration"
    raise AssertionError(
        f"module {module} is in no layer; put it in core/, ingest/, transform/, ml/ or name it "
        "an orchestration module in tests/test_architecture.py"
    )


def project_modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project modules ``module`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(module, is_package, node.module, node.level)
            # `from package import name`: name is a submodule or something the package defines
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found += [
            Import(module, target, path, node.lineno)
            for target in targets
            if target.split(".")[0] in PACKAGES
        ]
    return found


def absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    package = module.split(".")
    if not is_package:
        package = package[:-1]
    package = package[: len(package) - (level - 1)]
    return ".".join([*package, name] if name else package)


def upward_imports(root: Path) -> list[str]:
    modules = project_modules(root)
    bad = []
    for module, path in modules.items():
        layer = layer_of(module)
        for imp in imports_of(module, path, modules):
            target_layer = layer_of(imp.target)
            if target_layer not in ALLOWED[layer]:
                where = f"{imp.path.relative_to(root)}:{imp.line}"
                bad.append(f"{where}: {layer} module {module} imports {target_layer} {imp.target}")
    return bad


def test_every_layer_imports_only_the_layers_below_it():
    assert upward_imports(ROOT) == []


def test_the_layers_are_where_the_architecture_says():
    assert layer_of("dagster_project.core.lake") == "core"
    assert layer_of("dagster_project.transform.labels") == "domain"
    assert layer_of("dagster_project.ingest.orderbook.replay") == "domain"
    assert layer_of("ml.split_specs") == "ml"
    assert layer_of("dagster_project.assets.raw") == "orchestration"
    assert layer_of("dagster_project.cli") == "orchestration"


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        (
            "dagster_project/core/lake.py",
            "def f():\n    from dagster_project.partitions import day_symbol\n",
            "dagster_project/core/lake.py:2: core module dagster_project.core.lake imports "
            "orchestration dagster_project.partitions",
        ),
        (
            "dagster_project/transform/curate.py",
            "from ml import rendering\n",
            "dagster_project/transform/curate.py:1: domain module dagster_project.transform.curate "
            "imports ml ml.rendering",
        ),
        (
            "ml/window_data.py",
            "import dagster_project.assets.raw\n",
            "ml/window_data.py:1: ml module ml.window_data imports orchestration "
            "dagster_project.assets.raw",
        ),
        (
            "dagster_project/ingest/landing.py",
            "from ..assets.raw import RAW_KLINES\n",
            "dagster_project/ingest/landing.py:1: domain module dagster_project.ingest.landing "
            "imports orchestration dagster_project.assets.raw",
        ),
    ],
)
def test_an_upward_import_is_named_with_its_file_and_line(tmp_path, module, source, message):
    for package in ("dagster_project/core", "dagster_project/transform", "ml", "app"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
    (tmp_path / "dagster_project/ingest").mkdir()
    (tmp_path / "dagster_project/assets").mkdir()
    (tmp_path / "dagster_project/assets/raw.py").write_text("")
    (tmp_path / "dagster_project/partitions.py").write_text("")
    (tmp_path / "ml/rendering.py").write_text("")
    (tmp_path / module).write_text(source)
    assert message in upward_imports(tmp_path)
