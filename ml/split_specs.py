"""Split specs and ``windows/splits``: one named calendar of cut times for every series.

A ``SplitSpec`` names cut times (``train_start``, ``validation_start``, ``test_start``,
``test_end``) and an embargo in bars. ``assign_splits`` labels every landed sample (a window
joined to its label, ``sql/windows/samples.sql``) train / validation / test / purged / embargoed
by those times, the same for every symbol, interval, dataset and window size
(``ml.splits.time_split``), so a model trained on several symbols never trains inside another
symbol's test period, and a row's split never changes as more days land.

Specs are built in (``BUILTIN_SPECS``) or stored in the lake (``windows/split_specs``, one
partition per spec); a spec is stored the first time it is used. A spec never changes: storing
or using a name that exists with other cuts is refused, pick a new name.
``split_leaks`` is the ``no_training_label_reaches_test`` check, across series.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import duckdb
import polars as pl

from dagster_project.core.checks import CheckOutcome
from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.lake import PARTITION_FILE, Lake
from dagster_project.core.sql import run_sql
from ml.splits import DEFAULT_EMBARGO_BARS, SPLIT_LABELS, TEST, TRAIN, VALIDATION, time_split

SPEC = "spec"  # the column and partition key naming a sample's spec
CUTS = ("train_start", "validation_start", "test_start", "test_end")
_SPEC_NAME = re.compile(r"^[a-z0-9_]{1,64}$")
_UTC_TIME = pl.Datetime("us", "UTC")
SPEC_SCHEMA = {
    "train_start": _UTC_TIME,
    "validation_start": _UTC_TIME,
    "test_start": _UTC_TIME,
    "test_end": _UTC_TIME,
    "embargo_bars": pl.Int64,
    "created_at": _UTC_TIME,
}


class SplitSpecError(InvalidRequestError):
    """A split spec that is malformed, unknown, or in conflict with a stored one."""


@dataclass(frozen=True)
class SplitSpec:
    """A named calendar: train ``[train_start, validation_start)``, validation
    ``[validation_start, test_start)``, test ``[test_start, test_end)``; a None end is open."""

    name: str
    validation_start: dt.datetime
    test_start: dt.datetime
    train_start: dt.datetime | None = None  # None: from the first sample
    test_end: dt.datetime | None = None  # None: every later sample is test
    embargo_bars: int = DEFAULT_EMBARGO_BARS  # bars of each series' interval before each cut
    created_at: dt.datetime | None = field(default=None, compare=False)  # when it was stored

    def __post_init__(self) -> None:
        _checked_name(self.name)
        for name in (*CUTS, "created_at"):
            object.__setattr__(self, name, _utc(self.name, name, getattr(self, name)))
        given = [(name, t) for name in CUTS if (t := getattr(self, name)) is not None]
        for (a, ta), (b, tb) in zip(given, given[1:], strict=False):
            if ta >= tb:
                raise SplitSpecError(
                    f"split spec {self.name!r}: {a} {ta.isoformat()} must be before "
                    f"{b} {tb.isoformat()}"
                )
        bars = self.embargo_bars
        if not isinstance(bars, int) or isinstance(bars, bool) or bars < 0:
            raise SplitSpecError(
                f"split spec {self.name!r}: embargo_bars must be an integer ≥ 0, got {bars!r}"
            )

    @property
    def cuts(self) -> dict[str, dt.datetime | None]:
        return {name: getattr(self, name) for name in CUTS}

    def describe(self) -> str:
        """One line: the cut times and the embargo."""
        cuts = ", ".join(f"{k} {v.isoformat()}" for k, v in self.cuts.items() if v is not None)
        return f"{cuts}, embargo {self.embargo_bars} bars"

    def as_metadata(self) -> dict[str, object]:
        times = {k: None if v is None else v.isoformat() for k, v in self.cuts.items()}
        return times | {"embargo_bars": self.embargo_bars}


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not _SPEC_NAME.match(name):
        raise SplitSpecError(f"bad split spec name {name!r}; expected 1-64 of a-z, 0-9 and _")
    return name


def _utc(spec: str, name: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.utcoffset() != dt.timedelta(0):
        raise SplitSpecError(
            f"split spec {spec!r}: {name} must be a UTC datetime (timezone-aware, offset 0), "
            f"got {value!r}"
        )
    return value.astimezone(dt.UTC)


DEFAULT_SPEC = "default"
# The built-in specs. Never edit one once released: add a spec under a new name instead.
BUILTIN_SPECS: dict[str, SplitSpec] = {
    spec.name: spec
    for spec in (
        # fits the main job's days 2024-03-01 .. 03: one day each of train, validation and test
        SplitSpec(
            DEFAULT_SPEC,
            validation_start=dt.datetime(2024, 3, 2, tzinfo=dt.UTC),
            test_start=dt.datetime(2024, 3, 3, tzinfo=dt.UTC),
        ),
    )
}


# --- the specs in the lake -------------------------------------------------------------------


def stored_specs(lake: Lake) -> dict[str, SplitSpec]:
    """Every spec stored in ``windows/split_specs``, by name."""
    names = (keys[SPEC] for keys in lake.partitions("windows", "split_specs"))
    return {name: _read_spec(lake, name) for name in names}


def stored_spec(lake: Lake, name: str) -> SplitSpec | None:
    if not lake.partition_files("windows", "split_specs", {SPEC: _checked_name(name)}):
        return None
    return _read_spec(lake, name)


def _read_spec(lake: Lake, name: str) -> SplitSpec:
    row = lake.read_partition("windows", "split_specs", {SPEC: name}).row(0, named=True)
    return SplitSpec(name, **row)


def resolve_spec(lake: Lake, name: str) -> SplitSpec:
    """The spec named ``name``: stored in the lake, else built in. Refuses a built-in spec whose
    cuts were changed in code after the lake stored it."""
    stored, builtin = stored_spec(lake, name), BUILTIN_SPECS.get(name)
    if stored is not None and builtin is not None and stored != builtin:
        raise SplitSpecError(
            f"split spec {name!r} is stored in the lake with {stored.describe()}, but the "
            f"built-in spec of that name now says {builtin.describe()}; a spec never changes: "
            "restore the built-in one, or give the new cuts a new name"
        )
    spec = stored or builtin
    if spec is None:
        known = sorted(set(BUILTIN_SPECS) | set(stored_specs(lake)))
        raise SplitSpecError(
            f"unknown split spec {name!r}; known: {', '.join(known)}; add one with "
            "`candlelake split-spec add`"
        )
    return spec


def store_spec(lake: Lake, spec: SplitSpec, now: dt.datetime | None = None) -> SplitSpec:
    """Store ``spec`` in ``windows/split_specs`` and return it as stored.

    Storing a spec that exists with the same cuts and embargo changes nothing; one whose name
    exists with other cuts or embargo is refused. A new spec needs an embargo that covers
    today's longest label horizon and window (``DEFAULT_EMBARGO_BARS``).
    """
    existing = stored_spec(lake, spec.name)
    for other, where in (
        (existing, "is stored in the lake"),
        (BUILTIN_SPECS.get(spec.name), "is built in"),
    ):
        if other is not None and other != spec:
            raise SplitSpecError(
                f"split spec {spec.name!r} {where} with {other.describe()}; a spec never "
                f"changes once stored, so pick a new name for {spec.describe()}"
            )
    if existing is not None:
        return existing
    if spec.name not in BUILTIN_SPECS and spec.embargo_bars < DEFAULT_EMBARGO_BARS:
        raise SplitSpecError(
            f"split spec {spec.name!r}: embargo_bars={spec.embargo_bars} is shorter than the "
            f"longest label horizon or window ({DEFAULT_EMBARGO_BARS} bars); expected at least "
            f"{DEFAULT_EMBARGO_BARS}"
        )
    stored = replace(spec, created_at=now or dt.datetime.now(dt.UTC))
    row = {name: getattr(stored, name) for name in SPEC_SCHEMA}
    lake.write_partition(
        "windows", "split_specs", {SPEC: spec.name}, pl.DataFrame([row], schema=SPEC_SCHEMA)
    )
    return stored


# --- windows/splits --------------------------------------------------------------------------


def assign_splits(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    spec_names: Sequence[str] = (DEFAULT_SPEC,),
    series: tuple[str, str] | None = None,
) -> tuple[pl.DataFrame, dict[str, SplitSpec]]:
    """Every landed sample of each spec with its ``split``, written to ``windows/splits``
    (``spec=/symbol=/interval=`` partitions); returns the rows (with a ``spec`` column) and the
    specs used, each stored in the lake from now on. ``series`` (symbol, interval) assigns that
    series alone and leaves the other series' partitions as they are: a row's split depends on
    its own times only."""
    specs = {name: resolve_spec(lake, name) for name in dict.fromkeys(spec_names)}
    samples = run_sql(
        con,
        "windows/samples",
        {
            "window_files": _sample_files(lake, "windows", "windows", series),
            "label_files": _sample_files(lake, "labels", "labels", series),
        },
    ).pl()
    specs = {name: store_spec(lake, spec) for name, spec in specs.items()}
    parts = []
    for spec in specs.values():
        assigned = assign(samples, spec)
        for (symbol, interval), rows in assigned.group_by(["symbol", "interval"]):
            keys = {SPEC: spec.name, "symbol": symbol, "interval": interval}
            lake.write_partition("windows", "splits", keys, rows)
        parts.append(assigned)
    return pl.concat(parts), specs


def _sample_files(lake: Lake, layer: str, table: str, series: tuple[str, str] | None) -> str:
    """The glob of a table's day partitions: of every series, or of one (symbol, interval)."""
    keys = ("symbol", "interval", "date")
    if series is None:
        return lake.glob(layer, table, keys)
    symbol, interval = series
    leaf = lake.partition_dir(layer, table, {"symbol": symbol, "interval": interval})
    return str(leaf / "date=*" / PARTITION_FILE)


def assign(samples: pl.DataFrame, spec: SplitSpec) -> pl.DataFrame:
    """The samples within the spec's calendar with their ``split`` and a ``spec`` column."""
    assigned = time_split(
        samples,
        spec.validation_start,
        spec.test_start,
        train_start=spec.train_start,
        test_end=spec.test_end,
        embargo_bars=spec.embargo_bars,
    )
    return assigned.with_columns(pl.lit(spec.name).alias(SPEC))


def split_counts(assigned: pl.DataFrame, spec: str) -> dict[str, int]:
    rows = assigned.filter(pl.col(SPEC) == spec).group_by("split").len()
    counts = dict(rows.iter_rows())
    return {split: counts.get(split, 0) for split in SPLIT_LABELS}


# --- the check -------------------------------------------------------------------------------

LEAK_RULES = (
    # training rows of any series known at/after the spec's earliest test decision (any series)
    "train_known_after_first_test",
    # validation rows known at/after the earliest test decision
    "validation_known_after_first_test",
    # training rows known at/after the earliest validation decision (any series)
    "train_known_after_first_validation",
    # training rows known at/after the spec's validation_start, validation rows at/after test_start
    "known_after_cut",
    # train / validation / test rows whose decision_time lies outside that block of the spec
    "outside_block",
)


def no_training_label_reaches_test(
    splits: pl.DataFrame, specs: Mapping[str, SplitSpec]
) -> CheckOutcome:
    """The ``windows/splits`` check: ``split_leaks`` finds no row, in any series of any spec."""
    leaks = split_leaks(splits, specs)
    return CheckOutcome(
        "no_training_label_reaches_test",
        leaks["leaking_rows"] == 0,
        "no training label of any series is known at or after the spec's earliest test (or "
        "validation) decision time of any series or its cut time, and every row lies in its "
        "block of the spec's calendar",
        leaks,
    )


def split_leaks(splits: pl.DataFrame, specs: Mapping[str, SplitSpec]) -> dict[str, int]:
    """Rows breaking each of ``LEAK_RULES``, over all series of each spec, and
    ``leaking_rows``: the rows breaking any. All must be 0."""
    flagged = [
        _leak_flags(rows, _spec_of(specs, name))
        for (name,), rows in splits.group_by(SPEC, maintain_order=True)
    ]
    flags = pl.concat(flagged) if flagged else pl.DataFrame(schema=dict.fromkeys(LEAK_RULES, bool))
    counts = {rule: int(flags[rule].sum()) for rule in LEAK_RULES}
    return counts | {"leaking_rows": int(flags.select(pl.any_horizontal(LEAK_RULES)).sum().item())}


def _spec_of(specs: Mapping[str, SplitSpec], name: str) -> SplitSpec:
    if name not in specs:
        raise SplitSpecError(f"splits of spec {name!r} but no such spec given; have {list(specs)}")
    return specs[name]


def _leak_flags(rows: pl.DataFrame, spec: SplitSpec) -> pl.DataFrame:
    split, known, decision = pl.col("split"), pl.col("known_at"), pl.col("decision_time")
    train, validation = split == TRAIN, split == VALIDATION

    def known_after(which: pl.Expr, block: str) -> pl.Expr:
        first = rows.filter(split == block)["decision_time"].min()
        return which & (known >= first) if first is not None else pl.lit(False)

    def inside(block: str, start: dt.datetime | None, end: dt.datetime | None) -> pl.Expr:
        after_start = decision >= start if start is not None else pl.lit(True)
        before_end = decision < end if end is not None else pl.lit(True)
        return (split == block) & after_start & before_end

    in_a_block = split.is_in([TRAIN, VALIDATION, TEST])
    return rows.select(
        known_after(train, TEST).alias("train_known_after_first_test"),
        known_after(validation, TEST).alias("validation_known_after_first_test"),
        known_after(train, VALIDATION).alias("train_known_after_first_validation"),
        (
            (train & (known >= spec.validation_start)) | (validation & (known >= spec.test_start))
        ).alias("known_after_cut"),
        (
            in_a_block
            & ~(
                inside(TRAIN, spec.train_start, spec.validation_start)
                | inside(VALIDATION, spec.validation_start, spec.test_start)
                | inside(TEST, spec.test_start, spec.test_end)
            )
        ).alias("outside_block"),
    )
