"""Cleanup on real files: timestamps come from manifests, strays are never touched, dry runs change nothing."""

from __future__ import annotations

import fcntl
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbjobs.errors import ConfigError
from dbjobs.jobs import run_job
from dbjobs.settings import load_settings
from tests.support.backups import make_backup

NOW = datetime.now(UTC)


def settings_for(directory, **env):
    return load_settings({"DBJOBS_BACKUP_DIR": str(directory), **env}, dotenv=None)


def aged(directory, database, days):
    """Backups `days` old; files get a fresh mtime so only the manifest's time can count."""
    made = [make_backup(directory, database, NOW - timedelta(days=d, minutes=1)) for d in days]
    for m in made:
        os.utime(directory / m.file)
    return made


def test_deletes_old_backups_keeping_min_keep_and_leaves_strays(tmp_path):
    backups = tmp_path / "backups"
    app = aged(backups, "app", [1, 10, 31, 40, 50, 60, 70])
    other = aged(backups, "other", [100, 200])
    strays = {"notes.txt": b"keep me", "app-20200101T000000Z-abcdef.dump.zst": b"no manifest",
              ".app-20261127T000000Z-abcdef.dump.zst.partial": b"crash leftover",
              "junk-20200101T000000Z-000000.manifest.json": b"{not json"}
    bad = make_backup(backups, "app", NOW - timedelta(days=90))
    (backups / bad.manifest_name).write_text('{"format": "something-else"}')
    for name, data in strays.items():
        (backups / name).write_bytes(data)

    result = run_job("dbjobs.cleanup", settings_for(backups), {"keep_days": 30, "min_keep": 3})
    survivors = {p.name for p in backups.iterdir()}
    assert {m.id for m in app[:3] + other} == {r["id"] for r in result["kept"]}
    assert {m.id for m in app[3:]} == {r["id"] for r in result["deleted"]}
    for m in app[3:]:
        assert m.file not in survivors and m.manifest_name not in survivors
    for m in app[:3] + other:
        assert {m.file, m.manifest_name} <= survivors
    for name, data in strays.items():
        assert (backups / name).read_bytes() == data
    assert {bad.file, bad.manifest_name} <= survivors  # invalid manifest: not ours to judge, left alone
    assert result["freed_bytes"] == sum(m.size for m in app[3:])
    assert "over keep-days 30" in result["deleted"][0]["reasons"][0]


def test_dry_run_changes_nothing_and_explains(tmp_path):
    backups = tmp_path / "backups"
    aged(backups, "app", [1, 40, 50])
    before = sorted(p.name for p in backups.iterdir())
    result = run_job("dbjobs.cleanup", settings_for(backups), {"keep_days": 30, "min_keep": 1, "dry_run": True})
    assert sorted(p.name for p in backups.iterdir()) == before
    assert result["dry_run"] and len(result["deleted"]) == 2
    assert result["kept"][0]["reasons"] == ["min-keep: one of the 1 newest of app",
                                            "keep-days: 1.0 days old, within 30"]
    assert not (backups / ".last-jobs").exists()


def test_defaults_come_from_settings_and_database_filter(tmp_path):
    backups = tmp_path / "backups"
    app = aged(backups, "app", [1, 5, 9])
    other = aged(backups, "other", [1, 5, 9])
    settings = settings_for(backups, BACKUP_KEEP_DAYS="3", BACKUP_MIN_KEEP="1")
    result = run_job("dbjobs.cleanup", settings, {"database": "app"})
    assert result["rule"]["keep_days"] == 3 and result["rule"]["min_keep"] == 1
    assert {r["id"] for r in result["deleted"]} == {m.id for m in app[1:]}
    assert all((backups / m.manifest_name).exists() for m in other)


def test_gfs_rules_and_idempotence(tmp_path):
    backups = tmp_path / "backups"
    aged(backups, "app", list(range(0, 120, 1)))
    rule = {"keep_days": 0, "min_keep": 0, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 3}
    first = run_job("dbjobs.cleanup", settings_for(backups), rule)
    assert 7 <= len(first["kept"]) <= 14
    second = run_job("dbjobs.cleanup", settings_for(backups), rule)
    assert second["deleted"] == [] and len(second["kept"]) == len(first["kept"])


def test_finishes_interrupted_deletions(tmp_path):
    backups = tmp_path / "backups"
    m = aged(backups, "app", [40])[0]
    (backups / m.file).unlink()  # a deletion that stopped after the dump
    listed = run_job("dbjobs.list_backups", settings_for(backups), {})
    assert listed["total"] == 0 and "interrupted deletion" in listed["skipped"][0]
    result = run_job("dbjobs.cleanup", settings_for(backups), {})
    assert result["interrupted_deletions"] == [f"{m.id} ({backups})"]
    assert not (backups / m.manifest_name).exists()


@pytest.mark.parametrize("option", ["keep_days", "min_keep", "keep_last", "keep_daily", "keep_weekly", "keep_monthly"])
def test_negative_keep_is_refused_before_anything_is_deleted(tmp_path, option):
    backups = tmp_path / "backups"
    aged(backups, "app", [100, 200])
    with pytest.raises(ConfigError, match="must be a whole number of 0 or more"):
        run_job("dbjobs.cleanup", settings_for(backups), {option: -1})
    assert len(list(backups.iterdir())) == 4


def test_negative_keep_in_the_environment_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="BACKUP_MIN_KEEP='-2' must not be negative"):
        settings_for(tmp_path, BACKUP_MIN_KEEP="-2")


stray_names = st.sampled_from([
    "notes.txt", "app-20200101T000000Z-abcdef.dump.zst", ".app-20200101T000000Z-abcdef.dump.zst.partial",
    "app-20200101T000000Z-bcdef0.manifest.json", "other-20190101T000000Z-cdef01.manifest.json.bak",
    "README", "app-20200101T000000Z-def012.dump.zst.old",
])


@settings(max_examples=25, deadline=None)
@given(ages=st.lists(st.tuples(st.sampled_from(["app", "other"]), st.integers(0, 400)), max_size=25),
       strays=st.sets(stray_names), keep_days=st.integers(0, 100), min_keep=st.integers(0, 4))
def test_cleanup_never_touches_anything_but_complete_backups(ages, strays, keep_days, min_keep):
    with tempfile.TemporaryDirectory() as tmp:
        backups = Path(tmp) / "backups"
        backups.mkdir()
        made = [make_backup(backups, db, NOW - timedelta(days=d, minutes=i)) for i, (db, d) in enumerate(ages)]
        for name in strays:
            (backups / name).write_bytes(b"not ours " + name.encode())
        rule = {"keep_days": keep_days, "min_keep": min_keep, "allow_empty": True}
        result = run_job("dbjobs.cleanup", settings_for(backups), rule)
        left = {p.name for p in backups.iterdir()}
        assert strays <= left and all((backups / n).read_bytes() == b"not ours " + n.encode() for n in strays)
        deleted = {d["id"] for d in result["deleted"]}
        for m in made:  # a backup goes whole or stays whole
            assert ({m.file, m.manifest_name} & left) == (set() if m.id in deleted else {m.file, m.manifest_name})
        for db in ("app", "other"):
            mine = [m for m in made if m.database == db]
            assert len([m for m in mine if m.id not in deleted]) >= min(min_keep, len(mine))
        again = run_job("dbjobs.cleanup", settings_for(backups), rule)
        assert again["deleted"] == []


def test_removes_the_partials_of_dead_jobs_and_nothing_else(tmp_path):
    backups = tmp_path / "backups"
    kept = aged(backups, "app", [1])
    old = {".app-20261101T000000Z-abcdef.dump.zst.partial", ".app-20261101T000000Z-abcdef.manifest.json.partial",
           ".app-20261127T000000Z-0a0b0c.dump.zst.partial"}  # killed minutes ago: its writer's lock is gone
    fresh = ".app-20261127T000000Z-fedcba.dump.zst.partial"  # a backup being written right now
    live = ".app-20261126T000000Z-1d2e3f.dump.zst.partial"  # a live writer stuck for hours (a pg_dump waiting)
    foreign = {".notes.txt.partial", ".app-2026-bad-id.dump.zst.partial"}  # not dbjobs' naming: never touched
    ages = {".app-20261127T000000Z-0a0b0c.dump.zst.partial": timedelta(minutes=5)}
    for name in old | foreign | {fresh, live}:
        (backups / name).write_bytes(b"half a dump")
        if name != fresh:
            then = (datetime.now(UTC) - ages.get(name, timedelta(days=2))).timestamp()
            os.utime(backups / name, (then, then))
    writer = os.open(backups / live, os.O_WRONLY)
    fcntl.flock(writer, fcntl.LOCK_EX)  # what atomic_file holds while it writes
    try:
        dry = run_job("dbjobs.cleanup", settings_for(backups), {"dry_run": True})
        assert sorted(Path(p).name for p in dry["stale_partials"]) == sorted(old)
        assert old <= {p.name for p in backups.iterdir()}

        done = run_job("dbjobs.cleanup", settings_for(backups), {})
    finally:
        os.close(writer)
    left = {p.name for p in backups.iterdir()}
    assert sorted(Path(p).name for p in done["stale_partials"]) == sorted(old)
    assert not (old & left) and {fresh, live} | foreign <= left
    assert {kept[0].file, kept[0].manifest_name} <= left
