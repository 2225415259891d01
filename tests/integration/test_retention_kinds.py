"""Retention with the safety copies real restores take: they are listed as such and never push a full backup out,
and deleting every backup of a database needs --allow-empty. What must not be lost: the newest full backup.
"""

from __future__ import annotations

import json

import pytest

import cli
from tests.support.hosts import configure_host


@pytest.fixture
def host(tmp_path, monkeypatch):
    configure_host(tmp_path, monkeypatch)
    return tmp_path / "backups"


def run_json(capsys, *args: str) -> dict:
    code = cli.main([*args, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    return out


def test_safety_copies_never_push_the_full_backup_out(host, capsys):
    full = run_json(capsys, "backup")["id"]
    safety = [run_json(capsys, "restore", full, "--yes")["safety_backup_id"] for _ in range(3)]
    listed = run_json(capsys, "list-backups")["backups"]
    assert [(b["id"], b["kind"]) for b in listed] == [(s, "safety") for s in reversed(safety)] + [(full, "full")]
    assert cli.main(["list-backups"]) == 0
    assert sum(" safety " in line for line in capsys.readouterr().out.splitlines()) == 3

    # the case: one restore used to make the safety copy "the newest" and doom the full backup
    plan = run_json(capsys, "cleanup", "--keep-days", "0", "--min-keep", "1", "--dry-run")
    assert {d["id"] for d in plan["deleted"]} == set(safety[:2])
    kept = {k["id"]: k["reasons"] for k in plan["kept"]}
    assert kept == {full: ["min-keep: one of the 1 newest of default"],
                    safety[2]: ["min-keep: one of the 1 newest of default (safety copies)"]}

    refused = cli.main(["cleanup", "--keep-days", "0", "--min-keep", "0"])
    assert refused == 1 and "would delete every backup of default; nothing was deleted (pass --allow-empty" in \
        capsys.readouterr().err
    assert len(run_json(capsys, "list-backups")["backups"]) == 4
    assert cli.main(["cleanup", "--keep-days", "0", "--min-keep", "0", "--dry-run"]) == 0
    assert "refused      every backup of default would go: cleanup refuses that without --allow-empty" in \
        capsys.readouterr().out

    done = run_json(capsys, "cleanup", "--keep-days", "0", "--min-keep", "1")
    assert {d["id"] for d in done["deleted"]} == set(safety[:2])
    assert [b["id"] for b in run_json(capsys, "list-backups")["backups"]] == [safety[2], full]
    emptied = run_json(capsys, "cleanup", "--keep-days", "0", "--min-keep", "0", "--allow-empty")
    assert {d["id"] for d in emptied["deleted"]} == {safety[2], full}
    assert run_json(capsys, "list-backups")["backups"] == []


def test_backups_taken_before_a_migration_are_pre_migration_copies(host, capsys):
    full = run_json(capsys, "backup")["id"]
    taken = run_json(capsys, "detect-migrations", "--backup")["backup"]
    assert taken["kind"] == "pre-migration" and taken["id"] != full
    listed = {b["id"]: b["kind"] for b in run_json(capsys, "list-backups")["backups"]}
    assert listed == {full: "full", taken["id"]: "pre-migration"}
    plan = run_json(capsys, "cleanup", "--keep-days", "0", "--min-keep", "1", "--dry-run")
    assert plan["deleted"] == [] and {k["id"] for k in plan["kept"]} == {full, taken["id"]}
    assert cli.main(["backup", "--json", "--database", "default"]) == 0 and capsys.readouterr()
    report = run_json(capsys, "status")
    assert report["backups"]["databases"]["default"]["kinds"] == {"full": 2, "pre-migration": 1}
