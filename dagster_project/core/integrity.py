"""Content hashes of lake files: recorded when a file is written, verified before it is read.

Each data file ``part-<label>.parquet`` has a sidecar in its leaf: an empty file whose name holds
the sha256 of the data file's bytes, ``.part-0.parquet.sha256-<hex>``. The writer
(``lake.write_file_atomically``) creates the sidecar of the new bytes before renaming them into
place and removes the other sidecars after, so a crash at any point leaves the data file beside
a sidecar that matches it. A file is

- intact when its digest is one of its sidecars' (a crash can leave two, old and new),
- damaged when it has sidecars and matches none (a flipped bit, a truncation, a bad copy),
- unverified when it has none: written before candlelake recorded hashes; re-materialize the
  partition to record one.

Readers that build one partition from others pass their file list through ``verify_files``;
``verify_lake`` checks every file of a lake (``candlelake verify``, the catalog's asset check).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dagster_project.core.errors import CorruptPartitionError

if TYPE_CHECKING:
    from dagster_project.core.lake import Lake

log = logging.getLogger(__name__)

ALGORITHM = "sha256"
DATA_GLOB = "part-*.parquet"
_SIDECAR = re.compile(
    rf"^\.(?P<name>part-[A-Za-z0-9_.-]+\.parquet)\.{ALGORITHM}-(?P<digest>[0-9a-f]{{64}})$"
)

PathLike = TypeVar("PathLike", str, Path)


class FileStatus(enum.Enum):
    INTACT = "intact"
    DAMAGED = "damaged"
    UNVERIFIED = "unverified (written before hashes)"


@dataclass(frozen=True)
class IntegrityReport:
    """Every data file of a lake by status (``intact`` is a count: those need no action)."""

    intact: int = 0
    damaged: list[Path] = field(default_factory=list)
    unverified: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


# ---------------------------------------------------------------------------------------------
# Readers


def verify_files(paths: Sequence[PathLike]) -> list[PathLike]:
    """``paths`` unchanged when none is damaged, so a reader can wrap its file list; raises
    ``CorruptPartitionError`` naming every damaged one otherwise."""
    paths = list(paths)
    found = statuses(map(Path, paths))
    damaged = [path for path, status in found.items() if status is FileStatus.DAMAGED]
    if damaged:
        raise CorruptPartitionError(damaged_message(damaged), damaged)
    return paths


def verify_lake(lake: Lake) -> IntegrityReport:
    """Every ``part-*.parquet`` under the lake root, hashed and compared with its sidecars."""
    found = statuses(sorted(lake.root.rglob(DATA_GLOB)))
    by_status = defaultdict(list)
    for path, status in found.items():
        by_status[status].append(path)
    report = IntegrityReport(
        intact=len(by_status[FileStatus.INTACT]),
        damaged=by_status[FileStatus.DAMAGED],
        unverified=by_status[FileStatus.UNVERIFIED],
    )
    log.info("verified %s files: %s damaged", len(found), len(report.damaged))
    return report


def file_status(path: Path) -> FileStatus:
    return statuses([Path(path)])[Path(path)]


def statuses(paths: Iterable[Path]) -> dict[Path, FileStatus]:
    """The status of each file, listing each leaf directory once."""
    recorded: dict[Path, dict[str, set[str]]] = {}
    result = {}
    for path in paths:
        if path.parent not in recorded:
            recorded[path.parent] = recorded_digests(path.parent)
        digests = recorded[path.parent].get(path.name)
        if not digests:
            result[path] = FileStatus.UNVERIFIED
        elif digest_of(path) in digests:
            result[path] = FileStatus.INTACT
        else:
            result[path] = FileStatus.DAMAGED
    return result


def damaged_message(damaged: Sequence[Path]) -> str:
    listed = "\n  ".join(map(str, damaged))
    return (
        f"{len(damaged)} lake file(s) differ from the hash recorded when they were written "
        f"(damaged on disk or in a copy):\n  {listed}\nre-land (raw) or re-materialize those "
        "partitions, then retry; `candlelake verify` lists every damaged file of the lake"
    )


# ---------------------------------------------------------------------------------------------
# The writer's side


def digest_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, ALGORITHM).hexdigest()


def sidecar_path(data_file: Path, digest: str) -> Path:
    return data_file.parent / f".{data_file.name}.{ALGORITHM}-{digest}"


def recorded_digests(leaf: Path) -> dict[str, set[str]]:
    """Data file name → the digests its sidecars record, from one listing of ``leaf``."""
    recorded: dict[str, set[str]] = defaultdict(set)
    for name in leaf_names(leaf):
        match = _SIDECAR.match(name)
        if match:
            recorded[match["name"]].add(match["digest"])
    return recorded


def sidecars(data_file: Path) -> list[Path]:
    digests = recorded_digests(data_file.parent).get(data_file.name, set())
    return [sidecar_path(data_file, digest) for digest in sorted(digests)]


def orphan_sidecars(leaf: Path) -> list[Path]:
    """Sidecars whose data file is gone (a replaced collector part, a crash mid-cleanup)."""
    names = set(leaf_names(leaf))
    return [
        leaf / name
        for name in names
        if (match := _SIDECAR.match(name)) and match["name"] not in names
    ]


def leaf_names(leaf: Path) -> list[str]:
    try:
        return [entry.name for entry in leaf.iterdir()]
    except FileNotFoundError:
        return []
