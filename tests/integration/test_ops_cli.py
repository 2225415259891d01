"""The cleanup, status and backup --upload commands as a user runs them: output, exit codes, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import cli
from tests.support.backups import make_backup
from tests.support.fake_supabase import FakeSupabase
from tests.support.hosts import configure_host


@pytest.fixture
def host(tmp_path, monkeypatch):
    """This host's backup directory, with the environment set up for the CLI."""
    configure_host(tmp_path, monkeypatch)
    return tmp_path / "backups"


def test_cleanup_dry_run_explains_and_changes_nothing(host, capsys):
    now = datetime.now(UTC)
    old, new = (make_backup(host, "default", now - timedelta(days=d)) for d in (45, 1))
    assert cli.main(["cleanup", "--dry-run", "--min-keep", "1"]) == 0
    out = capsys.readouterr().out
    assert f"would delete {old.id}  (45.0 days old (over keep-days 30) and no rule keeps it)" in out
    assert f"keep         {new.id}  (min-keep: one of the 1 newest of default; keep-days: 1.0 days old" in out
    assert "1 backup(s) would be deleted" in out and "dry run: nothing was changed" in out
    assert (host / old.file).exists()
    assert cli.main(["cleanup", "--min-keep", "1", "--json"]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)["deleted"]] == [old.id]
    assert not (host / old.file).exists() and (host / new.file).exists()


@pytest.mark.parametrize("args", [["--keep-days", "-1"], ["--min-keep", "-3"], ["--keep-weekly", "x"]])
def test_bad_keep_values_are_refused(host, args, capsys):
    make_backup(host, "default", datetime.now(UTC) - timedelta(days=90))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["cleanup", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 0" in err or "is not a whole number" in err
    assert len(list(host.iterdir())) == 2


def test_upload_without_settings_is_a_one_line_error(host, capsys):
    assert cli.main(["backup", "--upload"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --upload needs Supabase Storage: set SUPABASE_URL, SUPABASE_KEY and SUPABASE_BUCKET"
    assert not host.exists()


def test_upload_failure_is_reported_and_the_backup_kept(host, tmp_path, monkeypatch, capsys):
    with FakeSupabase(tmp_path / "supabase") as fake:
        monkeypatch.setenv("SUPABASE_URL", fake.url)
        monkeypatch.setenv("SUPABASE_KEY", fake.key)
        monkeypatch.setenv("SUPABASE_BUCKET", "backups")
        monkeypatch.setenv("SUPABASE_RETRY_SECONDS", "0.5")
        with fake.storage_down():
            assert cli.main(["backup", "--upload"]) == 0
        out = capsys.readouterr().out
        assert ("upload   FAILED (Supabase Storage bucket lookup in bucket 'backups' failed: HTTP 502 from the "
                "Supabase gateway: the storage server behind it is down or restarting") in out
        assert "the local backup is complete and kept" in out
        assert cli.main(["backup", "--upload"]) == 0
        assert "upload   supabase:backups" in capsys.readouterr().out
        assert cli.main(["list-backups", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["backups"]
        assert [len(b["locations"]) for b in listed] == [2, 1]
