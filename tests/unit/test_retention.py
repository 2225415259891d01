"""Retention policy: examples for the reasons, and properties over random histories and rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbjobs.errors import ConfigError
from dbjobs.retention import KINDS, Candidate, Rule, decide, emptied, rule_for

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def daily(database: str, days: int, start: datetime = NOW) -> list[Candidate]:
    return [Candidate(f"{database}-{i}", database, start - timedelta(days=i)) for i in range(days)]


def kept(decisions) -> set[str]:
    return {d.candidate.id for d in decisions if d.keep}


def test_spec_rule_keeps_recent_and_min_keep_newest():
    decisions = decide(daily("a", 40), Rule(keep_days=30, min_keep=5), NOW)
    assert kept(decisions) == {f"a-{i}" for i in range(30)}
    gone = [d for d in decisions if not d.keep]
    assert len(gone) == 10 and all("over keep-days 30" in d.reasons[0] for d in gone)


def test_min_keep_wins_over_age_and_is_per_database():
    old = daily("a", 8, NOW - timedelta(days=100)) + daily("b", 2, NOW - timedelta(days=100))
    decisions = decide(old, Rule(keep_days=30, min_keep=3), NOW)
    assert kept(decisions) == {"a-0", "a-1", "a-2", "b-0", "b-1"}
    reasons = {d.candidate.id: d.reasons for d in decisions}
    assert reasons["a-0"] == ("min-keep: one of the 3 newest of a",)


def test_gfs_keeps_newest_of_each_bucket_with_reasons():
    history = [Candidate(f"a-{i}", "a", NOW - timedelta(hours=6 * i)) for i in range(4 * 400)]
    rule = Rule(keep_days=0, min_keep=0, keep_daily=7, keep_weekly=4, keep_monthly=12)
    decisions = decide(history, rule, NOW)
    by_id = {d.candidate.id: d for d in decisions}
    assert by_id["a-0"].reasons == ("keep-daily: newest of day 2026-11-27", "keep-weekly: newest of week 2026-W48",
                                    "keep-monthly: newest of month 2026-11")
    days = {by_id[i].candidate.finished.date() for i in kept(decisions) if "keep-daily" in by_id[i].reasons[0]}
    assert len(days) == 7
    assert len(kept(decisions)) <= 7 + 4 + 12


def test_dry_reasons_explain_every_kept_backup():
    decisions = decide(daily("a", 3), Rule(keep_days=1, min_keep=1, keep_last=2), NOW)
    reasons = {d.candidate.id: d.reasons for d in decisions}
    assert reasons["a-0"] == ("min-keep: one of the 1 newest of a", "keep-last: one of the last 2",
                              "keep-days: 0.0 days old, within 1")
    assert reasons["a-1"] == ("keep-last: one of the last 2",)
    assert not next(d for d in decisions if d.candidate.id == "a-2").keep


@pytest.mark.parametrize("field", ["keep_days", "min_keep", "keep_last", "keep_daily", "keep_weekly", "keep_monthly"])
def test_negative_or_non_integer_keep_is_a_config_error(field):
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')} must be a whole number"):
        Rule(**{field: -1})
    with pytest.raises(ConfigError):
        Rule(**{field: 1.5})


candidates = st.lists(
    st.builds(Candidate, id=st.uuids().map(str), database=st.sampled_from(["a", "b", "c"]),
              finished=st.integers(-5 * 24 * 60, 800 * 24 * 60).map(lambda m: NOW - timedelta(minutes=m)),
              kind=st.sampled_from([*KINDS, "from-the-future"])),
    max_size=60, unique_by=lambda c: c.id,
)
rules = st.builds(Rule, keep_days=st.integers(0, 400), min_keep=st.integers(0, 8), keep_last=st.integers(0, 8),
                  keep_daily=st.integers(0, 10), keep_weekly=st.integers(0, 6), keep_monthly=st.integers(0, 14))


def kind_of(c: Candidate) -> str:
    return c.kind if c.kind in KINDS else "full"  # an unknown kind is kept like a full backup


def newest(items: list[Candidate], database: str, kind: str) -> list[Candidate]:
    return sorted((c for c in items if c.database == database and kind_of(c) == kind),
                  key=lambda c: (c.finished, c.id), reverse=True)


def oracle_buckets(items: list[Candidate], key, count: int) -> set[str]:
    """Naive GFS: group by bucket, take the `count` latest buckets, keep the newest item of each."""
    groups: dict = {}
    for c in items:
        groups.setdefault(key(c.finished), []).append(c)
    latest = sorted(groups, key=lambda k: max((c.finished, c.id) for c in groups[k]), reverse=True)[:count]
    return {max(groups[k], key=lambda c: (c.finished, c.id)).id for k in latest}


@settings(max_examples=300, deadline=None)
@given(candidates, rules)
def test_properties(items, rule):
    decisions = decide(items, rule, NOW)
    # Decides on exactly the listed backups, once each.
    assert sorted(d.candidate.id for d in decisions) == sorted(c.id for c in items)
    keep = kept(decisions)
    # Each kind of each database follows its own rule: safety copies never count against full backups.
    for database, kind in {(c.database, kind_of(c)) for c in items}:
        mine = newest(items, database, kind)
        own = rule_for(kind, rule)
        # Never fewer than min-keep newest per database.
        assert {c.id for c in mine[: own.min_keep]} <= keep
        assert {c.id for c in mine[: own.keep_last]} <= keep
        assert {c.id for c in mine if c.finished > NOW - timedelta(days=own.keep_days)} <= keep
        # GFS buckets are exactly the naive ones, and nothing else is kept.
        gfs = (oracle_buckets(mine, lambda t: t.date(), own.keep_daily)
               | oracle_buckets(mine, lambda t: t.isocalendar()[:2], own.keep_weekly)
               | oracle_buckets(mine, lambda t: (t.year, t.month), own.keep_monthly))
        assert gfs <= keep
        expected = ({c.id for c in mine[: max(own.min_keep, own.keep_last)]} | gfs
                    | {c.id for c in mine if c.finished > NOW - timedelta(days=own.keep_days)})
        assert keep & {c.id for c in mine} == expected
    # Idempotent: applying the decision and deciding again deletes nothing more.
    remaining = [c for c in items if c.id in keep]
    assert all(d.keep for d in decide(remaining, rule, NOW))
    assert all(d.reasons for d in decisions)
    # A database loses its last backup exactly when nothing of it is kept.
    assert emptied(decisions) == sorted({c.database for c in items} - {c.database for c in items if c.id in keep})


def test_safety_copies_never_push_a_full_backup_out():
    full = [Candidate("full-0", "a", NOW - timedelta(days=40))]
    safety = [Candidate(f"safety-{i}", "a", NOW - timedelta(hours=i), "safety") for i in range(5)]
    decisions = {d.candidate.id: d for d in decide(full + safety, Rule(keep_days=0, min_keep=1), NOW)}
    assert decisions["full-0"].keep and decisions["full-0"].reasons == ("min-keep: one of the 1 newest of a",)
    assert decisions["safety-0"].reasons == ("min-keep: one of the 1 newest of a (safety copies)",)
    assert [i for i, d in decisions.items() if not d.keep] == [f"safety-{i}" for i in range(1, 5)]
    old = [Candidate(f"s-{i}", "b", NOW - timedelta(days=8 + i), "safety") for i in range(4)]
    within = [Candidate("s-new", "b", NOW - timedelta(days=6), "safety")]
    decisions = decide(old + within, Rule(keep_days=30, min_keep=5), NOW)
    assert kept(decisions) == {"s-new", "s-0"}  # 7 days, at least the 2 newest: the short rule of copies
    assert emptied(decide(full + safety, Rule(keep_days=0, min_keep=0), NOW)) == ["a"]
