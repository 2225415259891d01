"""Retention policy: which backups to keep and which to delete, and why. Pure: no I/O, no clock.

The rule is the spec's (delete what is older than `keep_days`, but always keep the `min_keep`
newest of each database) plus optional grandfather-father-son rules in the style of restic:
`keep_last` newest, and the newest backup of each of the `keep_daily` most recent days,
`keep_weekly` ISO weeks and `keep_monthly` months that have a backup (UTC calendar). A backup
is kept when any rule keeps it; every decision carries its reasons so `cleanup --dry-run` can
explain itself. Deciding again after applying a decision deletes nothing more.

Rules apply per database *and per kind*: full backups follow the rule given; the copies dbjobs
takes by itself before a restore (`safety`) or a migration (`pre-migration`) each follow the
short `SAFETY_RULE` (never more than the rule given keeps), so a burst of safety copies can
never push a full backup out of `min_keep`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

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


KINDS = ("full", "safety", "pre-migration")
SAFETY_KEEP_DAYS = 7
SAFETY_MIN_KEEP = 2


class Candidate(NamedTuple):
    """What the policy needs to know of a backup (a tuple: building 10,000 of them is cheap)."""

    id: str
    database: str
    finished: datetime
    kind: str = "full"


def rule_for(kind: str, rule: Rule) -> Rule:
    """The rule a kind follows: full backups (and unknown kinds, to be safe) the given one, copies the short one.

    The short rule is capped by the given one, so an explicit `--keep-days 0 --min-keep 0` reaches them too.
    """
    if kind not in ("safety", "pre-migration"):
        return rule
    return Rule(keep_days=min(rule.keep_days, SAFETY_KEEP_DAYS), min_keep=min(rule.min_keep, SAFETY_MIN_KEEP))


class Decision(NamedTuple):
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


def newest_per_bucket(finished_newest_first: Sequence[datetime], bucket: Bucket, count: int) -> list[int]:
    """Positions of the newest backup of each of the `count` most recent buckets (days, weeks, months) with one."""
    chosen: list[int] = []
    seen: set[Hashable] = set()
    for i, finished in enumerate(finished_newest_first):
        if len(chosen) >= count:
            break
        key = bucket(finished)
        if key not in seen:
            seen.add(key)
            chosen.append(i)
    return chosen


def _decide_group(newest_first: list[Candidate], rule: Rule, now: datetime) -> list[Decision]:
    finished = [_utc(c.finished) for c in newest_first]
    reasons: list[list[str]] = [[] for _ in newest_first]
    first = newest_first[0]
    of = f"{first.database} ({first.kind} copies)" if first.kind in KINDS[1:] else first.database
    for count, why in ((rule.min_keep, f"min-keep: one of the {rule.min_keep} newest of {of}"),
                       (rule.keep_last, f"keep-last: one of the last {rule.keep_last}")):
        for kept in reasons[:count]:
            kept.append(why)
    for option, unit, bucket, label in _CALENDAR:
        for i in newest_per_bucket(finished, bucket, getattr(rule, option)):
            reasons[i].append(f"{option.replace('_', '-')}: newest of {unit} {label(finished[i])}")
    cutoff = now - timedelta(days=rule.keep_days)
    decisions = []
    for c, when, why in zip(newest_first, finished, reasons, strict=True):
        age = (now - when).total_seconds() / 86400
        if when > cutoff:
            why.append(f"keep-days: {max(age, 0):.1f} days old, within {rule.keep_days}")
        if why:
            decisions.append(Decision(c, True, tuple(why)))
        else:
            decisions.append(Decision(c, False, (f"{age:.1f} days old (over keep-days {rule.keep_days}) "
                                                 "and no rule keeps it",)))
    return decisions


def decide(candidates: Iterable[Candidate], rule: Rule, now: datetime) -> list[Decision]:
    """One decision per candidate (and only for those), grouped by database and kind, newest first within each."""
    groups: dict[tuple[str, int], list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[(c.database, KINDS.index(c.kind) if c.kind in KINDS else 0)].append(c)
    now = _utc(now)
    decisions: list[Decision] = []
    for database, kind in sorted(groups):
        newest_first = sorted(groups[(database, kind)], key=lambda c: (_utc(c.finished), c.id), reverse=True)
        decisions.extend(_decide_group(newest_first, rule_for(KINDS[kind], rule), now))
    return decisions


def emptied(decisions: Iterable[Decision]) -> list[str]:
    """Databases every one of whose backups the decisions delete: cleanup does that only with `--allow-empty`."""
    kept: dict[str, bool] = {}
    for d in decisions:
        kept[d.candidate.database] = kept.get(d.candidate.database, False) or d.keep
    return sorted(database for database, any_kept in kept.items() if not any_kept)
