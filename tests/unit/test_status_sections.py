"""Status sections from injected inputs: disk thresholds, schema probe, broker pings, health and exit codes."""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime, timedelta
from pathlib import Path

from dbjobs.dburl import parse_url
from dbjobs.errors import DbjobsError, MigrationError
from dbjobs.jobstate import DRILL_JOB, JobOutcome
from dbjobs.status import (
    Check,
    SchemaState,
    add_section,
    broker_section,
    build_report,
    disk_section,
    drills_section,
    exit_code,
    jobs_section,
    schema_probe,
    schema_section,
)

Usage = namedtuple("Usage", "total used free")
DB = parse_url("app", "sqlite:///app.sqlite3")
T1, T2 = "2026-12-01T10:00:00+00:00", "2026-12-01T20:00:00+00:00"


def test_disk_levels(tmp_path):
    levels = {free: disk_section(tmp_path / "not-yet", 10, lambda _p, f=free: Usage(100, 100 - f, f))[1]
              for free in (50, 5, 1)}
    assert levels[50] == []
    assert levels[5][0].level == "warning" and "only 5.0% free" in levels[5][0].message
    assert levels[1][0].level == "critical"


def test_failed_backup_is_critical_other_jobs_warn():
    _, checks = jobs_section([JobOutcome("dbjobs.backup", "app", False, T1, "disk full"),
                              JobOutcome("dbjobs.cleanup", "all", False, T1, "storage down"),
                              JobOutcome("dbjobs.backup", "other", True, T1)], ["app", "other"])
    assert [(c.name, c.level) for c in checks] == [("job:dbjobs.backup:app", "critical"),
                                                   ("job:dbjobs.cleanup:app", "warning"),
                                                   ("job:dbjobs.cleanup:other", "warning")]


def test_a_later_success_supersedes_a_failure_per_alias_and_job():
    outcomes = [JobOutcome("dbjobs.cleanup", "all", False, T1, "storage down"),
                JobOutcome("dbjobs.cleanup", "app", True, T2),
                JobOutcome("dbjobs.backup", "app", False, T2, "disk full"),
                JobOutcome("dbjobs.backup", "gone", False, T1, "no such database")]
    data, checks = jobs_section(outcomes, ["app", "other"], {"app", "other"})
    assert [c.name for c in checks] == ["job:dbjobs.backup:app", "job:dbjobs.cleanup:other"]
    assert data["ignored_aliases"] == ["gone"]
    assert {(o["job"], o["database"], o["ok"]) for o in data["latest"]} == {
        ("dbjobs.backup", "app", False), ("dbjobs.cleanup", "app", True), ("dbjobs.cleanup", "other", False)}
    # --database other: app's failure is not reported, nor listed as unknown
    data, checks = jobs_section(outcomes, ["other"], {"app", "other"})
    assert [c.name for c in checks] == ["job:dbjobs.cleanup:other"] and data["ignored_aliases"] == ["gone"]


def test_drills_failed_is_critical_and_missing_or_late_is_a_warning():
    now = datetime.fromisoformat(T2) + timedelta(hours=1)
    outcomes = [JobOutcome(DRILL_JOB, "app", False, T1, "row counts differ"),
                JobOutcome(DRILL_JOB, "late", True, T1), JobOutcome(DRILL_JOB, "fixed", False, T1, "x"),
                JobOutcome(DRILL_JOB, "fixed", True, T2)]
    drilled = {"app": "scratch", "late": "scratch", "fixed": "scratch", "never": "scratch"}
    data, checks = drills_section(outcomes, drilled, list(drilled), now, 2)
    assert [(c.name, c.level) for c in checks] == [("drill:app", "critical"), ("drill:late", "warning"),
                                                   ("drill:never", "warning")]
    assert "no restore drill has run for 'never'" in checks[2].message
    assert data["fixed"]["last"]["ok"] is True and data["never"] == {"into": "scratch", "last": None}
    assert drills_section(outcomes, drilled, list(drilled), now, None)[1] == checks[:1]


def test_schema_section_drift_and_pending():
    clean = schema_section(DB, lambda db: SchemaState("abc", "abc"))
    assert clean[0]["drift"] is False and clean[1] == []
    data, checks = schema_section(DB, lambda db: SchemaState("abc", "old", ["0002_add.sql"]))
    assert data["drift"] is True and [c.name for c in checks] == ["schema:app", "migrations:app"]
    assert "0002_add.sql" in checks[1].message

    def broken(db):
        raise MigrationError("ledger unreadable")

    assert schema_section(DB, broken)[1][0].message == "ledger unreadable"
    unsnapped = schema_section(DB, lambda db: SchemaState("abc", None))[1][0].message
    assert unsnapped.startswith("no schema snapshot of 'app' yet")


def test_schema_probe_is_the_schema_packages_probe_bound_to_the_directory():
    from dbjobs.schema.status import probe

    bound = schema_probe(Path("migrations"))
    assert bound.func is probe and bound.keywords == {"schema_dir": Path("migrations")}


def test_broker_section():
    def down():
        raise DbjobsError("broker at localhost:1/0 is unreachable")

    assert broker_section(False, down, list)[1] == []
    assert broker_section(True, down, list)[1][0].level == "critical"
    assert broker_section(True, lambda: None, list)[1][0].name == "workers"
    assert broker_section(True, lambda: None, lambda: ["celery@a"]) == (
        {"configured": True, "reachable": True, "workers": ["celery@a"]}, [])


def test_health_is_the_worst_check_and_sets_the_exit_code():
    report = build_report({"a": ({}, [])})
    assert report["health"] == "ok" and exit_code(report) == 0
    report = add_section(report, "b", {"x": 1}, [Check("b", "warning", "meh")])
    assert report["health"] == "warning" and exit_code(report) == 1 and report["b"] == {"x": 1}
    report = add_section(report, "c", None, [Check("c", "critical", "bad")])
    assert exit_code(report) == 2 and len(report["checks"]) == 2

