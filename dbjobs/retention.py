"""Retention policy: which backups to keep and which to delete, and why. Pure: no I/O, no clock.

The rule is the spec's (delete what is older than `keep_days`, but always keep the `min_keep`
newest of each database) plus optional grandfather-father-son rules in the style of restic:
`keep_last` newest, and the newest backup of each of the `keep_daily` most recent days,
`keep_weekly` ISO weeks and `keep_monthly` months that have a backup (UTC calendar). A backup
is kept when any rule keeps it; every decision carries its reasons so `cleanup --dry-run` can
explain itself. Deciding again after applying a decision deletes nothing more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from dbjobs.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """How much to keep; zero turns an optional GFS rule off."""

    keep_days: int = 30
    min_keep: int = 5
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                option = "--" + f.name.replace("_", "-")
                raise ConfigError(f"{option} must be a whole number of 0 or more, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        """The rule as it appears in a cleanup result."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Candidate:
    """What the policy needs to know of a backup."""

    id: str
    database: str
    finished: datetime


@dataclass(frozen=True)
class Decision:
    """Keep or delete one backup, with the reasons (every rule that keeps it, or why none does)."""

    candidate: Candidate
    keep: bool
    reasons: tuple[str, ...]


Bucket = Callable[[datetime], Hashable]
_CALENDAR: tuple[tuple[str, str, Bucket, Callable[[datetime], str]], ...] = (
    ("keep_daily", "day", lambda t: t.date(), lambda t: f"{t:%Y-%m-%d}"),
    ("keep_weekly", "week", lambda t: t.isocalendar()[:2], lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", "month", lambda t: (t.year, t.month), lambda t: f"{t:%Y-%m}"),
)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is UTC:
        return t
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def newest_per_bucket(newest_first: Sequence[Candidate], bucket: Bucket, count: int) -> list[Candidate]:
    """The newest backup of each of the `count` most recent buckets (days, weeks, months) that have one."""
    chosen: list[Candidate] = []
    seen: set[Hashable] = set()
    for c in newest_first:
        if len(chosen) >= count:
            break
        key = bucket(_utc(c.finished))
        if key not in seen:
            seen.add(key)
            chosen.append(c)
    return chosen


def _decide_database(newest_first: list[Candidate], rule: Rule, now: datetime) -> list[Decision]:
    reasons: dict[str, list[str]] = defaultdict(list)
    for c in newest_first[: rule.min_keep]:
        reasons[c.id].append(f"min-keep: one of the {rule.min_keep} newest of {c.database}")
    for c in newest_first[: rule.keep_last]:
        reasons[c.id].append(f"keep-last: one of the last {rule.keep_last}")
    for option, unit, bucket, label in _CALENDAR:
        count = getattr(rule, option)
        for c in newest_per_bucket(newest_first, bucket, count):
            reasons[c.id].append(f"{option.replace('_', '-')}: newest of {unit} {label(_utc(c.finished))}")
    cutoff = now - timedelta(days=rule.keep_days)
    decisions = []
    for c in newest_first:
        finished = _utc(c.finished)
        age = (now - finished).total_seconds() / 86400
        if finished > cutoff:
            reasons[c.id].append(f"keep-days: {max(age, 0):.1f} days old, within {rule.keep_days}")
        if reasons[c.id]:
            decisions.append(Decision(c, True, tuple(reasons[c.id])))
        else:
            why = f"{age:.1f} days old (over keep-days {rule.keep_days}) and no rule keeps it"
            decisions.append(Decision(c, False, (why,)))
    return decisions


def decide(candidates: Iterable[Candidate], rule: Rule, now: datetime) -> list[Decision]:
    """One decision per candidate (and only for those), grouped by database, newest first within each."""
    by_database: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_database[c.database].append(c)
    now = _utc(now)
    decisions: list[Decision] = []
    for database in sorted(by_database):
        newest_first = sorted(by_database[database], key=lambda c: (_utc(c.finished), c.id), reverse=True)
        decisions.extend(_decide_database(newest_first, rule, now))
    return decisions
