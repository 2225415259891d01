"""The command line as a user runs it: quick start on the sample, and bad input.

Bad input must end in one `error: ...` line on stderr (besides the in-process `note:`), a
non-zero exit, no traceback, and no change to any database or backup directory.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.backup_support import backup_files, build_sample, error_line, run_cli, snapshot


def test_quick_start_backup_list_restore(tmp_path: Path) -> None:
    env = {"DBJOBS_DATABASES": "copy=sqlite:///copy.sqlite3"}

    backup = run_cli(tmp_path, "backup", "--json", **env)
    assert backup.returncode == 0, backup.stderr
    result = json.loads(backup.stdout)
    assert result["database"] == "default" and result["row_counts"] == {"customers": 100, "orders": 500}

    listed = run_cli(tmp_path, "list-backups", **env)
    assert listed.returncode == 0 and result["id"] in listed.stdout and "1 of 1 backups shown" in listed.stdout

    restored = run_cli(tmp_path, "restore", result["id"], "--yes", "--database", "copy", **env)
    assert restored.returncode == 0, restored.stderr
    assert f"restored {result['id']} into copy" in restored.stdout
    sample = f"sqlite:///{tmp_path / 'dbjobs-sample.sqlite3'}"
    assert snapshot(f"sqlite:///{tmp_path / 'copy.sqlite3'}") == snapshot(sample)


@pytest.fixture
def sample_backup(tmp_path: Path) -> str:
    """A backup of the quick-start sample in `tmp_path/backups`; returns its id."""
    done = run_cli(tmp_path, "backup", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["id"]


BAD_INPUT = {
    "unknown alias": (["backup", "--database", "nope"], {}, "unknown database alias 'nope'"),
    "unreachable server": (["backup", "--database", "far"],
                           {"DBJOBS_DATABASES": "far=postgresql://postgres:pw-hidden@127.0.0.1:1/x"}, "is unreachable"),
    "unwritable output directory": (["backup", "--output-dir", "dbjobs-sample.sqlite3/sub"], {},
                                    "cannot create backup directory"),
    "../ in the backup name": (["restore", "../../etc/passwd", "--yes"], {}, "is neither a backup id"),
    "../ before a backup file name": (["restore", "../default-20260101T000000Z-abcdef.dump.zst", "--yes"], {},
                                      "no such file"),
    "restore without --yes from a pipe": (["restore", "{id}"], {}, "restore not confirmed: stdin is not a terminal, "
                                          "so it cannot ask; nothing was changed (pass --yes"),
    "zero --limit": (["list-backups", "--limit", "0"], {}, "--limit: 0 must be at least 1"),
    "non-numeric --limit": (["list-backups", "--limit", "ten"], {}, "--limit: 'ten' is not a whole number"),
    "metrics port out of range": (["metrics", "--port", "99999"], {}, "--port: 99999 must be at most 65535"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_clear_line_and_changes_nothing(case: str, tmp_path: Path, sample_backup: str) -> None:
    args, env, message = BAD_INPUT[case]
    sample = tmp_path / "dbjobs-sample.sqlite3"
    with sqlite3.connect(sample) as conn:
        conn.execute("DELETE FROM orders WHERE id > 10")
    conn.close()
    before, files = snapshot(f"sqlite:///{sample}"), backup_files(tmp_path / "backups")

    proc = run_cli(tmp_path, *(a.format(id=sample_backup) for a in args), **env)

    assert message in error_line(proc)
    assert "pw-hidden" not in proc.stderr + proc.stdout
    assert snapshot(f"sqlite:///{sample}") == before
    assert backup_files(tmp_path / "backups") == files


def test_missing_client_tool_is_named(pg_url: str, tmp_path: Path) -> None:
    build_sample(pg_url)
    proc = run_cli(tmp_path, "backup", DBJOBS_DATABASE_URL=pg_url, PATH=str(tmp_path))

    assert "pg_dump not found on PATH; install the PostgreSQL client" in error_line(proc)
    assert not (tmp_path / "backups").exists() or backup_files(tmp_path / "backups") == []


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.sqlite3").write_text("hello, not a database\n" * 200)

    proc = run_cli(tmp_path, "backup", DBJOBS_DATABASE_URL="sqlite:///notes.sqlite3")

    assert "notes.sqlite3 cannot be opened as SQLite (file is not a database)" in error_line(proc)
    assert not (tmp_path / "backups").exists() or backup_files(tmp_path / "backups") == []
    assert (tmp_path / "notes.sqlite3").read_text() == "hello, not a database\n" * 200
