"""The experiment protocols as time-honest folds: Experiment I, Experiment II and seed_replica.

A protocol turns a data range (whole UTC days) into folds. A ``Fold`` is one training calendar
and one test block: the training period ``[train_start, train_end)`` holds train
``[train_start, validation_start)`` then validation (carved from the period's end, for early
stopping), and the test block ``[test_start, test_end)`` comes later. An honest fold's calendar
is a ``SplitSpec`` (``ml.split_specs``), so ``assign`` / ``assign_splits`` purge and embargo its
rows like any other spec's; ``assign_fold`` keeps only the fold's own test block.

* ``experiment_i``: for each training length L, train on ``[start, start + L)`` and test on up
  to ``blocks`` back-to-back blocks of length L after it.
* ``experiment_ii``: train on one length (7 days), test on blocks of each of several longer
  lengths (14, 21, 28 days).
* ``seed_replica``: the Candlestick research's mistakes, on purpose: a leaky label and test blocks
  before the training block. Its folds are flagged dishonest and never enter a leaderboard.

Why no training label reaches an honest test block (``check_fold_is_honest`` checks it on the
cut times of every planned fold): the fold's spec embargoes ``embargo_bars + horizon_bars`` bars
before its ``test_start`` (= ``train_end``), so every train or validation row ``assign`` keeps
decides before ``train_end - (embargo_bars + horizon_bars)`` bars; a label looking ``horizon_bars``
ahead is then known before ``train_end - embargo_bars`` bars, and the test block starts at or
after ``train_end``: after the last training ``known_at`` plus the embargo. Validation counts as
training here, since early stopping learns from its labels. A label looking further ahead than
the fold was planned for is purged by ``assign`` all the same, and refused by the check.
Lengths are whole days or bars of the plan's interval (``Length``), so the protocols scale down
to a few days of data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import polars as pl

from dagster_project.core.errors import InvalidRequestError
from dagster_project.core.klines import interval_length
from dagster_project.transform.labels import LABEL_SPECS
from ml.split_specs import SplitSpec, assign
from ml.splits import DEFAULT_EMBARGO_BARS, LABEL_HORIZONS, TEST, TRAIN, VALIDATION

EXPERIMENT_I, EXPERIMENT_II, SEED_REPLICA = "experiment_i", "experiment_ii", "seed_replica"
# The two mistakes seed_replica makes on purpose, as stored with its results.
LEAKY_LABEL, TEST_BEFORE_TRAIN = "leaky_label", "test_before_train"
LEAKY_LABELS = tuple(name for spec in LABEL_SPECS if spec.is_leaky for name in spec.names)
# The horizon folds are planned for by default: the longest of any label.
LONGEST_HORIZON_BARS = max(LABEL_HORIZONS.values())
DEFAULT_VALIDATION_FRACTION = 0.2  # of the training period, at its end
FOLD_COLUMN = "fold"

DAY = dt.timedelta(days=1)
_LENGTH_TEXT = re.compile(r"^(\d+)\s*(d|days?|b|bars?)$")


class ProtocolError(InvalidRequestError):
    """Protocol parameters that cannot make folds, or a data range that holds none."""


class FoldLeakError(InvalidRequestError):
    """A fold whose test block could see a training label, or one dishonest by design."""


@dataclass(frozen=True)
class Length:
    """A span of whole days or whole bars of the plan's interval; exactly one is given."""

    days: int | None = None
    bars: int | None = None

    def __post_init__(self) -> None:
        given = [
            (unit, n) for unit, n in (("days", self.days), ("bars", self.bars)) if n is not None
        ]
        if len(given) != 1:
            raise ProtocolError(f"a Length takes days or bars, exactly one; got {self!r}")
        unit, n = given[0]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ProtocolError(f"a Length's {unit} must be a positive integer, got {n!r}")

    @classmethod
    def of(cls, value: Length | int | str) -> Length:
        """``value`` as a Length: an int is days; text is ``"7d"``, ``"7 days"``, ``"120b"`` or
        ``"120 bars"``."""
        if isinstance(value, Length):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(days=value)
        match = _LENGTH_TEXT.match(value.strip().lower()) if isinstance(value, str) else None
        if match is None:
            raise ProtocolError(
                f"bad length {value!r}; expected a Length, whole days (7, '7d') or bars ('120b')"
            )
        n, unit = int(match[1]), match[2]
        return cls(days=n) if unit.startswith("d") else cls(bars=n)

    def span(self, interval: str) -> dt.timedelta:
        return self.days * DAY if self.days is not None else self.bars * interval_length(interval)

    @property
    def tag(self) -> str:
        """For fold names: ``7d`` or ``120bar``."""
        return f"{self.days}d" if self.days is not None else f"{self.bars}bar"

    def __str__(self) -> str:
        return f"{self.days} days" if self.days is not None else f"{self.bars} bars"


@dataclass(frozen=True)
class Fold:
    """One training calendar and one test block of a protocol.

    Training period ``[train_start, train_end)``: train ``[train_start, validation_start)``,
    validation ``[validation_start, train_end)``; test block ``[test_start, test_end)``. An honest
    fold's ``spec`` holds the same cuts (its test range starts at ``train_end`` and ends with this
    block, so it may cover earlier blocks of the plan too); a dishonest one has no spec and names
    its mistakes in ``reasons``.
    """

    protocol: str
    name: str  # e.g. exp1_t7d_b3: protocol, training (and test) length, block index
    train_length: Length
    test_length: Length
    block: int  # index of the test block, 0 first
    interval: str
    train_start: dt.datetime
    validation_start: dt.datetime
    train_end: dt.datetime  # end of the training period; honest: also the spec's test_start
    test_start: dt.datetime
    test_end: dt.datetime
    embargo_bars: int  # bars between the last training known_at and the test block, at least
    horizon_bars: int  # the longest label horizon the calendar was planned for
    spec: SplitSpec | None  # None for a dishonest fold: its cuts do not increase
    label: str | None = None  # the label it must train on; None: any within horizon_bars
    reasons: tuple[str, ...] = field(default=())  # the mistakes of a dishonest fold

    def __post_init__(self) -> None:
        if (self.spec is None) != bool(self.reasons):
            raise ProtocolError(
                f"fold {self.name!r}: a fold has a split spec exactly when it is honest "
                f"(no reasons); got spec {self.spec!r} and reasons {self.reasons!r}"
            )

    @property
    def is_honest(self) -> bool:
        return not self.reasons

    @property
    def leaderboard_eligible(self) -> bool:
        return self.is_honest

    @property
    def training_name(self) -> str:
        """The name without the block: folds of one plan sharing it share one trained model."""
        return self.name.rsplit("_b", 1)[0]

    def as_metadata(self) -> dict[str, object]:
        """The fold's boundaries for results and model cards."""
        times = ("train_start", "validation_start", "train_end", "test_start", "test_end")
        return {
            "protocol": self.protocol,
            "fold": self.name,
            "spec": None if self.spec is None else self.spec.name,
            "interval": self.interval,
            **{name: getattr(self, name).isoformat() for name in times},
            "purge_embargo_bars": None if self.spec is None else self.spec.embargo_bars,
            "embargo_bars": self.embargo_bars,
            "horizon_bars": self.horizon_bars,
            "label": self.label,
            "is_honest": self.is_honest,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class LeftOut:
    """A fold the data range cannot hold, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """The folds of a protocol over a data range (in order), and the folds left out."""

    protocol: str
    folds: tuple[Fold, ...]
    left_out: tuple[LeftOut, ...]

    def __iter__(self) -> Iterator[Fold]:
        return iter(self.folds)

    def __len__(self) -> int:
        return len(self.folds)

    def describe(self) -> list[str]:
        """One line per fold and per fold left out."""
        lines = [
            f"{f.name}: train {f.train_start:%Y-%m-%d %H:%M}, validation "
            f"{f.validation_start:%Y-%m-%d %H:%M}, test {f.test_start:%Y-%m-%d %H:%M} .. "
            f"{f.test_end:%Y-%m-%d %H:%M}" + ("" if f.is_honest else f" [{', '.join(f.reasons)}]")
            for f in self.folds
        ]
        return lines + [f"{gone.name}: left out, {gone.reason}" for gone in self.left_out]


# --- the protocols ---------------------------------------------------------------------------


def experiment_i(
    first_day: dt.date | str,
    last_day: dt.date | str,
    interval: str = "1m",
    *,
    train_lengths: Sequence[Length | int | str] = (7, 14, 21, 28),
    blocks: int = 5,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    embargo_bars: int = DEFAULT_EMBARGO_BARS,
    horizon_bars: int = LONGEST_HORIZON_BARS,
) -> Plan:
    """Experiment I: train on each length L from the first day, test on up to ``blocks``
    back-to-back blocks of length L right after the training period."""
    calendar = _Calendar.of(
        EXPERIMENT_I, first_day, last_day, interval, validation_fraction, embargo_bars, horizon_bars
    )
    lengths = [Length.of(n) for n in train_lengths]
    return calendar.plan([(f"exp1_t{n.tag}", n, n) for n in lengths], blocks)


def experiment_ii(
    first_day: dt.date | str,
    last_day: dt.date | str,
    interval: str = "1m",
    *,
    train_length: Length | int | str = 7,
    test_lengths: Sequence[Length | int | str] = (14, 21, 28),
    blocks: int = 5,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    embargo_bars: int = DEFAULT_EMBARGO_BARS,
    horizon_bars: int = LONGEST_HORIZON_BARS,
) -> Plan:
    """Experiment II: train once on ``train_length`` from the first day, test on up to ``blocks``
    back-to-back blocks of each test length right after the training period."""
    calendar = _Calendar.of(
        EXPERIMENT_II,
        first_day,
        last_day,
        interval,
        validation_fraction,
        embargo_bars,
        horizon_bars,
    )
    train = Length.of(train_length)
    tests = [Length.of(n) for n in test_lengths]
    return calendar.plan([(f"exp2_t{train.tag}_test{n.tag}", train, n) for n in tests], blocks)


def seed_replica(
    first_day: dt.date | str,
    last_day: dt.date | str,
    interval: str = "1m",
    *,
    train_length: Length | int | str = 7,
    blocks: int = 1,
    label: str = "leaky_last_candle_up",
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Plan:
    """The Candlestick research's calendar and label, mistakes included: ``blocks`` test blocks
    of ``train_length`` from the first day, then the training period after them, trained on a
    leaky label (``leaky_last_candle_up``, or ``leaky_window_up_{w}`` for whole-window images).
    No purge, no embargo. Every fold is dishonest and never enters a leaderboard."""
    if label not in LEAKY_LABELS:
        raise ProtocolError(
            f"seed_replica trains on a leaky label to reproduce the research's mistake; got "
            f"{label!r}, expected one of {', '.join(LEAKY_LABELS)}"
        )
    calendar = _Calendar.of(SEED_REPLICA, first_day, last_day, interval, validation_fraction, 0, 0)
    length = Length.of(train_length)
    _check_blocks(blocks)
    span = calendar.span(length)
    train_start = calendar.start + blocks * span
    if train_start + span > calendar.end:
        raise calendar.nothing_fits(
            f"{blocks} test block(s) and a training period of {length}", (blocks + 1) * span
        )
    reasons = (LEAKY_LABEL, TEST_BEFORE_TRAIN)
    folds = tuple(
        Fold(
            protocol=SEED_REPLICA,
            name=f"seed_t{length.tag}_b{k}",
            train_length=length,
            test_length=length,
            block=k,
            interval=calendar.interval,
            train_start=train_start,
            validation_start=calendar.validation_start(train_start, span),
            train_end=train_start + span,
            test_start=calendar.start + k * span,
            test_end=calendar.start + (k + 1) * span,
            embargo_bars=0,
            horizon_bars=0,
            spec=None,
            label=label,
            reasons=reasons,
        )
        for k in range(blocks)
    )
    return Plan(SEED_REPLICA, folds, ())


PROTOCOLS: dict[str, Callable[..., Plan]] = {
    EXPERIMENT_I: experiment_i,
    EXPERIMENT_II: experiment_ii,
    SEED_REPLICA: seed_replica,
}


def plan(
    protocol: str,
    first_day: dt.date | str,
    last_day: dt.date | str,
    interval: str = "1m",
    **lengths: object,
) -> Plan:
    """The folds of ``protocol`` (a name in ``PROTOCOLS``) over the days ``first_day`` ..
    ``last_day`` (inclusive, UTC); ``lengths`` are the protocol's keyword parameters."""
    try:
        build = PROTOCOLS[protocol]
    except KeyError:
        raise ProtocolError(
            f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
        ) from None
    try:
        inspect.signature(build).bind(first_day, last_day, interval, **lengths)
    except TypeError as exc:
        raise ProtocolError(f"protocol {protocol!r}: {exc}") from None
    return build(first_day, last_day, interval, **lengths)


# --- honesty and rows ------------------------------------------------------------------------


def check_fold_is_honest(fold: Fold, label_horizon_bars: int, interval: str) -> None:
    """Refuse a fold whose test block could start before the last training ``known_at`` plus
    the fold's embargo, for a label looking ``label_horizon_bars`` bars of ``interval`` ahead.

    From the cut times alone: every train or validation row ``assign`` keeps decides before
    ``spec.test_start - spec.embargo_bars`` bars (the embargo) and is known before
    ``spec.test_start`` (the purge), so its ``known_at`` is before
    ``min(spec.test_start, spec.test_start + (label_horizon_bars - spec.embargo_bars) bars)``.
    The test block must start at or after that plus ``fold.embargo_bars`` bars, and lie inside
    the spec's test range.
    """
    if not fold.is_honest:
        raise FoldLeakError(
            f"fold {fold.name!r} of {fold.protocol} is dishonest by design "
            f"({', '.join(fold.reasons)}); it has no honest calendar to check"
        )
    if not isinstance(label_horizon_bars, int) or label_horizon_bars < 0:
        raise FoldLeakError(
            f"label_horizon_bars must be an integer ≥ 0, got {label_horizon_bars!r}"
        )
    bar, spec = interval_length(interval), fold.spec
    known_before = min(
        spec.test_start, spec.test_start + (label_horizon_bars - spec.embargo_bars) * bar
    )
    earliest = known_before + fold.embargo_bars * bar
    if fold.test_start < earliest:
        raise FoldLeakError(
            f"fold {fold.name!r}: test block starts {fold.test_start.isoformat()}, but training "
            f"labels looking {label_horizon_bars} bars of {interval} ahead are known until just "
            f"before {known_before.isoformat()}, so with an embargo of {fold.embargo_bars} bars "
            f"the test must start at or after {earliest.isoformat()}"
        )
    if fold.test_start < spec.test_start or (spec.test_end and fold.test_end > spec.test_end):
        raise FoldLeakError(
            f"fold {fold.name!r}: test block {fold.test_start.isoformat()} .. "
            f"{fold.test_end.isoformat()} is outside its spec's test range {spec.describe()}"
        )


def assign_fold(samples: pl.DataFrame, fold: Fold) -> pl.DataFrame:
    """The samples of ``fold`` with their ``split`` and a ``fold`` column.

    Honest: ``ml.split_specs.assign`` on the fold's spec (purged and embargoed), keeping only
    the test rows of the fold's own block. Dishonest: train, validation and test by the fold's
    ranges alone, with no purge and no embargo, as the research did.
    """
    if fold.spec is not None:
        assigned = assign(samples, fold.spec)
        outside = (pl.col("split") == TEST) & ~_within(fold.test_start, fold.test_end)
        assigned = assigned.filter(~outside)
    else:
        split = (
            pl.when(_within(fold.train_start, fold.validation_start))
            .then(pl.lit(TRAIN))
            .when(_within(fold.validation_start, fold.train_end))
            .then(pl.lit(VALIDATION))
            .when(_within(fold.test_start, fold.test_end))
            .then(pl.lit(TEST))
        )
        assigned = samples.with_columns(split.alias("split")).filter(pl.col("split").is_not_null())
    return assigned.with_columns(pl.lit(fold.name).alias(FOLD_COLUMN))


# --- helpers ---------------------------------------------------------------------------------


def _within(start: dt.datetime, end: dt.datetime) -> pl.Expr:
    return (pl.col("decision_time") >= start) & (pl.col("decision_time") < end)


def _check_blocks(blocks: int) -> None:
    if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1:
        raise ProtocolError(f"blocks must be a positive integer, got {blocks!r}")


@dataclass(frozen=True)
class _Calendar:
    """A protocol's data range ``[start, end)`` and the settings every fold of it shares."""

    protocol: str
    start: dt.datetime
    end: dt.datetime
    interval: str
    validation_fraction: float
    embargo_bars: int
    horizon_bars: int

    @classmethod
    def of(
        cls,
        protocol: str,
        first_day: dt.date | str,
        last_day: dt.date | str,
        interval: str,
        validation_fraction: float,
        embargo_bars: int,
        horizon_bars: int,
    ) -> _Calendar:
        first, last = _day("first_day", first_day), _day("last_day", last_day)
        if last < first:
            raise ProtocolError(f"last_day {last} is before first_day {first}")
        interval_length(interval)  # raises for an unknown interval
        if not 0 < validation_fraction < 1:
            raise ProtocolError(
                f"validation_fraction must be between 0 and 1 (exclusive), got "
                f"{validation_fraction!r}"
            )
        for name, bars in (("embargo_bars", embargo_bars), ("horizon_bars", horizon_bars)):
            if not isinstance(bars, int) or isinstance(bars, bool) or bars < 0:
                raise ProtocolError(f"{name} must be an integer ≥ 0, got {bars!r}")
        return cls(
            protocol,
            dt.datetime.combine(first, dt.time(), dt.UTC),
            dt.datetime.combine(last, dt.time(), dt.UTC) + DAY,
            interval,
            validation_fraction,
            embargo_bars,
            horizon_bars,
        )

    def span(self, length: Length) -> dt.timedelta:
        return length.span(self.interval)

    def validation_start(self, train_start: dt.datetime, span: dt.timedelta) -> dt.datetime:
        """The last ``validation_fraction`` of the training period, in whole bars."""
        bar = interval_length(self.interval)
        return train_start + int(span / bar * (1 - self.validation_fraction)) * bar

    def plan(self, trainings: list[tuple[str, Length, Length]], blocks: int) -> Plan:
        """Folds for each ``(name prefix, training length, test length)``: the training period
        from the first day, then ``blocks`` back-to-back test blocks; blocks past the data's end
        are left out, and every kept fold is checked honest."""
        _check_blocks(blocks)
        folds, left_out = [], []
        for prefix, train, test in trainings:
            for k in range(blocks):
                fold = self.fold(f"{prefix}_b{k}", train, test, k)
                if fold.test_end > self.end:
                    left_out.append(LeftOut(fold.name, self.past_end(fold)))
                    continue
                check_fold_is_honest(fold, self.horizon_bars, self.interval)
                folds.append(fold)
        if not folds:
            train, test = min(trainings, key=lambda t: self.span(t[1]) + self.span(t[2]))[1:]
            raise self.nothing_fits(
                f"a training period of {train} and a test block of {test}",
                self.span(train) + self.span(test),
            )
        return Plan(self.protocol, tuple(folds), tuple(left_out))

    def fold(self, name: str, train: Length, test: Length, block: int) -> Fold:
        span = self.span(train)
        self.check_room(name, train, span)
        train_end = self.start + span
        test_start = train_end + block * self.span(test)
        test_end = test_start + self.span(test)
        validation_start = self.validation_start(self.start, span)
        spec = SplitSpec(
            self.spec_name(name, validation_start, train_end, test_end),
            train_start=self.start,
            validation_start=validation_start,
            test_start=train_end,
            test_end=test_end,
            embargo_bars=self.embargo_bars + self.horizon_bars,
        )
        return Fold(
            protocol=self.protocol,
            name=name,
            train_length=train,
            test_length=test,
            block=block,
            interval=self.interval,
            train_start=self.start,
            validation_start=validation_start,
            train_end=train_end,
            test_start=test_start,
            test_end=test_end,
            embargo_bars=self.embargo_bars,
            horizon_bars=self.horizon_bars,
            spec=spec,
        )

    def check_room(self, name: str, train: Length, span: dt.timedelta) -> None:
        """Refuse a training period too short to keep train and validation rows after the
        embargo before each cut."""
        bar = interval_length(self.interval)
        gap = (self.embargo_bars + self.horizon_bars) * bar
        validation = span - (self.validation_start(self.start, span) - self.start)
        if validation <= gap or span - validation <= gap:
            raise ProtocolError(
                f"{self.protocol} fold {name!r}: a training period of {train} of "
                f"{self.interval} leaves {_text(span - validation)} of train and "
                f"{_text(validation)} of validation, but each loses {_text(gap)} "
                f"({self.embargo_bars} embargo + "
                f"{self.horizon_bars} horizon bars) to the embargo before its cut; give a "
                "longer training length or another validation_fraction"
            )

    def spec_name(
        self, name: str, validation_start: dt.datetime, train_end: dt.datetime, end: dt.datetime
    ) -> str:
        """``<fold name>_<first day>_<digest of the cuts>``: a stored spec never changes, so
        another calendar (days, validation fraction, embargo) gets another name."""
        cuts = (self.start, validation_start, train_end, end)
        text = "|".join(t.isoformat() for t in cuts) + f"|{self.embargo_bars + self.horizon_bars}"
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        return f"{name}_{self.start:%Y%m%d}_{digest}"

    def past_end(self, fold: Fold) -> str:
        if fold.train_end > self.end:
            return (
                f"its training period {fold.train_start:%Y-%m-%d %H:%M} .. "
                f"{fold.train_end:%Y-%m-%d %H:%M} ends after the data ({self.describe_range()})"
            )
        return (
            f"its test block {fold.test_start:%Y-%m-%d %H:%M} .. {fold.test_end:%Y-%m-%d %H:%M} "
            f"ends after the data ({self.describe_range()})"
        )

    def nothing_fits(self, what: str, needed: dt.timedelta) -> ProtocolError:
        return ProtocolError(
            f"{self.protocol}: the data {self.describe_range()} holds no fold; the shortest "
            f"needs {what}: {_text(needed)} from {self.start:%Y-%m-%d}, but the data spans "
            f"{_text(self.end - self.start)}"
        )

    def describe_range(self) -> str:
        return f"{self.start:%Y-%m-%d} .. {self.end - DAY:%Y-%m-%d} UTC"


def _day(name: str, value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ProtocolError(f"{name} must be a date (a whole UTC day), got the datetime {value!r}")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"{name} must be a date like 2024-03-01, got {value!r}") from None


def _text(span: dt.timedelta) -> str:
    """``14 days`` for whole days, else as ``timedelta`` prints it."""
    return f"{span // DAY} days" if span % DAY == dt.timedelta(0) else str(span)
