"""Retention policy: examples for the reasons, and properties over random histories and rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbjobs.errors import ConfigError
from dbjobs.retention import Candidate, Rule, decide

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
              finished=st.integers(-5 * 24 * 60, 800 * 24 * 60).map(lambda m: NOW - timedelta(minutes=m))),
    max_size=60, unique_by=lambda c: c.id,
)
rules = st.builds(Rule, keep_days=st.integers(0, 400), min_keep=st.integers(0, 8), keep_last=st.integers(0, 8),
                  keep_daily=st.integers(0, 10), keep_weekly=st.integers(0, 6), keep_monthly=st.integers(0, 14))


def newest(items: list[Candidate], database: str) -> list[Candidate]:
    return sorted((c for c in items if c.database == database), key=lambda c: (c.finished, c.id), reverse=True)


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
    for database in {c.database for c in items}:
        mine = newest(items, database)
        # Never fewer than min-keep newest per database.
        assert {c.id for c in mine[: rule.min_keep]} <= keep
        assert {c.id for c in mine[: rule.keep_last]} <= keep
        assert {c.id for c in mine if c.finished > NOW - timedelta(days=rule.keep_days)} <= keep
        # GFS buckets are exactly the naive ones, and nothing else is kept.
        gfs = (oracle_buckets(mine, lambda t: t.date(), rule.keep_daily)
               | oracle_buckets(mine, lambda t: t.isocalendar()[:2], rule.keep_weekly)
               | oracle_buckets(mine, lambda t: (t.year, t.month), rule.keep_monthly))
        assert gfs <= keep
        expected = ({c.id for c in mine[: max(rule.min_keep, rule.keep_last)]} | gfs
                    | {c.id for c in mine if c.finished > NOW - timedelta(days=rule.keep_days)})
        assert keep & {c.id for c in mine} == expected
    # Idempotent: applying the decision and deciding again deletes nothing more.
    remaining = [c for c in items if c.id in keep]
    assert all(d.keep for d in decide(remaining, rule, NOW))
    assert all(d.reasons for d in decisions)
