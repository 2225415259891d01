"""`verify` as a user runs it: good, damaged and missing copies (here and in Supabase Storage), and restore drills
on every engine that pass, and that fail when the backup does not restore to what its manifest recorded.

What must not be lost: a damaged or missing copy is never reported ok, a drill never touches the database
the backup came from, and a failed drill is what `status` reports until a later one passes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import cli
from dbjobs.catalog import find_backup
from dbjobs.jobs import run_job
from dbjobs.settings import load_settings
from dbjobs.storage import LocalStorage
from tests.backup_support import build_sample, row_counts, snapshot
from tests.conftest import MYSQL_ADMIN_URL, PG_ADMIN_URL, scratch_database
from tests.support.fake_supabase import FakeSupabase
from tests.support.hosts import configure_host


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A CLI host with one SQLite database `default` and the local backup directory."""
    configure_host(tmp_path, monkeypatch)
    return tmp_path / "backups"


def backup_ids(count: int, capsys) -> list[str]:
    ids = []
    for _ in range(count):
        assert cli.main(["backup", "--json"]) == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    return ids


def flip_byte(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_good_damaged_and_missing_backups_here_and_remote(host, tmp_path, monkeypatch, capsys):
    with FakeSupabase(tmp_path / "supabase") as fake:
        for name, value in (("SUPABASE_URL", fake.url), ("SUPABASE_KEY", fake.key), ("SUPABASE_BUCKET", "backups")):
            monkeypatch.setenv(name, value)
        good, damaged, missing, remote_bad = backup_ids(4, capsys)
        assert cli.main(["backup", "--upload", "--json"]) == 0  # a fifth, here and in the bucket
        both = json.loads(capsys.readouterr().out)["id"]
        flip_byte(host / f"{damaged}.dump.zst")
        (host / f"{missing}.dump.zst").unlink()
        local = LocalStorage(host)
        remote_manifest = find_backup([local], remote_bad).manifest
        fake_dir = fake.root / "backups"
        (fake_dir / remote_manifest.file).write_bytes((host / remote_manifest.file).read_bytes())
        (fake_dir / remote_manifest.manifest_name).write_text(remote_manifest.to_json())
        flip_byte(fake_dir / remote_manifest.file, at=10)
        assert cli.main(["list-backups"]) == 0
        before = capsys.readouterr().out
        assert before.count("never checked") == 4  # `missing` has no dump here: not a backup, not listed

        assert cli.main(["verify"]) == 1
        out = capsys.readouterr().out
        lines = {(line.split()[0], line.split()[1], line.split()[2]) for line in out.splitlines()[:-1]}
        assert ("ok", good, str(host)) in lines and ("ok", both, "supabase:backups") in lines
        assert ("DAMAGED", damaged, str(host)) in lines and ("MISSING", missing, str(host)) in lines
        assert ("ok", remote_bad, str(host)) in lines and ("DAMAGED", remote_bad, "supabase:backups") in lines
        assert "SHA-256 does not match the manifest" in out and "the manifest is there but the dump is gone" in out
        assert out.splitlines()[-1] == "5 backup(s) checked: 2 ok, 2 damaged, 1 missing"
        report = run_job("dbjobs.status", load_settings(), {})
        check = next(c for c in report["checks"] if c["name"] == "job:dbjobs.verify:default")
        assert check["level"] == "critical" and f"{damaged} damaged" in check["message"]
        assert cli.main(["verify", good]) == 0  # one good backup checked does not clear what a full pass found
        assert "job:dbjobs.verify:default" in {c["name"] for c in run_job("dbjobs.status", load_settings(), {})[
            "checks"]}
        capsys.readouterr()

        assert cli.main(["list-backups", "--json"]) == 0
        states = {b["id"]: b["checksum"]["state"] for b in json.loads(capsys.readouterr().out)["backups"]}
        assert states == {good: "ok", both: "ok", damaged: "damaged", remote_bad: "damaged"}
        assert cli.main(["list-backups"]) == 0
        listing = capsys.readouterr().out
        row = next(line for line in listing.splitlines() if line.startswith(damaged))
        assert " full " in row and " DAMAGED 20" in row

        assert cli.main(["verify", good, "--json"]) == 0
        one = json.loads(capsys.readouterr().out)
        assert [b["id"] for b in one["backups"]] == [good] and one["ok_all"] is True
        # what `verify` found never changed a backup: the damaged file is still there for an operator to inspect
        assert (host / f"{damaged}.dump.zst").exists() and (host / f"{missing}.manifest.json").exists()
        LocalStorage(host).delete([damaged])  # gone (as cleanup deletes): the next full pass forgets its check
        assert cli.main(["verify"]) == 1
        checks = host / ".checksums"
        assert not (checks / f"{damaged}.json").exists() and (checks / f"{good}.json").exists()


def test_verify_and_a_drill_while_the_store_is_down_check_what_they_can_and_say_what_they_could_not(
        host, tmp_path, monkeypatch, capsys):
    """A store that cannot be listed is reported (exit 1), never skipped in silence, and never stops the check
    of the local copies, a drill from them, or forgets what an earlier pass found about the store's copies."""
    with FakeSupabase(tmp_path / "supabase") as fake:
        for name, value in (("SUPABASE_URL", fake.url), ("SUPABASE_KEY", fake.key), ("SUPABASE_BUCKET", "backups")):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SUPABASE_RETRY_SECONDS", "0.2")
        monkeypatch.setenv("DBJOBS_DATABASES", f"scratch=sqlite:///{tmp_path / 'scratch.sqlite3'}")
        assert cli.main(["backup", "--upload", "--json"]) == 0
        both = json.loads(capsys.readouterr().out)["id"]
        assert cli.main(["verify"]) == 0
        capsys.readouterr()
        with fake.storage_down():
            assert cli.main(["verify"]) == 1
            out = capsys.readouterr().out
            assert cli.main(["verify", "--deep", "--into", "scratch", "--json"]) == 0
            drill = json.loads(capsys.readouterr().out)
    assert f"ok       {both:<44} {host}" in out
    assert "UNREADABLE supabase:backups: " in out and "(its copies were not checked)" in out
    assert out.splitlines()[-1] == "1 backup(s) checked: 1 ok, 0 damaged, 0 missing"
    assert (drill["backup_id"], drill["ok"]) == (both, True)
    assert json.loads((host / ".checksums" / f"{both}.json").read_text()).keys() == {str(host), "supabase:backups"}


def test_verify_of_an_unknown_backup_is_one_line_and_json_under_json(host, capsys):
    assert cli.main(["verify", "default-20200101T000000Z-abcdef"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no backup 'default-2020")
    assert cli.main(["verify", "--deep"]) == 2
    assert "--deep needs --into ALIAS" in capsys.readouterr().err


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def source_and_scratch(request, tmp_path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one engine: the application's and the scratch one drills restore into."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.sqlite3'}", f"sqlite:///{tmp_path / 'scratch.sqlite3'}"
        return
    admin, driver, create, drop = {
        "postgres": (PG_ADMIN_URL, "postgresql+psycopg", 'CREATE DATABASE "{name}"',
                     'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'),
        "mysql": (MYSQL_ADMIN_URL, "mysql+pymysql", "CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
                  "DROP DATABASE IF EXISTS `{name}`"),
    }[request.param]
    with scratch_database(request.param, admin, driver, create, drop) as source, \
            scratch_database(request.param, admin, driver, create, drop) as scratch:
        yield source, scratch


def test_deep_drill_passes_then_fails_on_altered_row_counts_on_every_engine(source_and_scratch, tmp_path,
                                                                            monkeypatch, capsys):
    source, scratch = source_and_scratch
    build_sample(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DBJOBS_DATABASES", json.dumps({"app": source, "scratch": scratch}))
    monkeypatch.setenv("DBJOBS_BACKUP_DIR", str(tmp_path / "backups"))
    for name in ("DBJOBS_BROKER_URL", "DBJOBS_DATABASE_URL", "SUPABASE_URL", "BACKUP_VERIFY_INTO"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(dotenv=None)
    taken = run_job("dbjobs.backup", settings, {"database": "app"})
    before = snapshot(source)

    assert cli.main(["verify", "--deep", "--database", "app", "--into", "scratch"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"drill of {taken['id']} (app) into scratch: PASSED")
    assert "rows      200 in 2 tables, every count as in the manifest" in out
    assert "schema    fingerprint matches" in out
    assert row_counts(scratch) == taken["row_counts"] and snapshot(source) == before
    assert not list((tmp_path / "backups").glob("scratch-*"))  # no safety copy of a disposable scratch database

    directory = tmp_path / "backups"
    manifest = find_backup([LocalStorage(directory)], taken["id"]).manifest
    table = sorted(manifest.row_counts)[0]
    altered = dataclasses.replace(manifest, row_counts={**manifest.row_counts, table: manifest.row_counts[table] + 1})
    (directory / manifest.manifest_name).write_text(altered.to_json())
    assert cli.main(["verify", taken["id"], "--deep", "--into", "scratch", "--json"]) == 1
    failed = json.loads(capsys.readouterr().out)
    wrong = f"table {table} has {manifest.row_counts[table]} rows, the manifest says {manifest.row_counts[table] + 1}"
    # PostgreSQL's swap restore checks the loaded shadow itself and refuses it (the scratch target unchanged)
    assert failed["ok"] is False and len(failed["problems"]) == 1 and wrong in failed["problems"][0]
    assert snapshot(source) == before  # the drill never touches the database the backup came from

    report = run_job("dbjobs.status", settings, {"database": "app"})
    drill_checks = [c for c in report["checks"] if c["name"] == "drill:app"]
    assert [c["level"] for c in drill_checks] == ["critical"]
    assert "rows, the manifest says" in drill_checks[0]["message"]
    (directory / manifest.manifest_name).write_text(manifest.to_json())
    assert cli.main(["verify", taken["id"], "--deep", "--into", "scratch"]) == 0
    capsys.readouterr()
    report = run_job("dbjobs.status", settings, {"database": "app"})
    assert not [c for c in report["checks"] if c["name"].startswith("drill:")]
    assert report["drills"]["app"]["last"]["ok"] is True


def test_a_drill_never_restores_into_the_database_the_backup_came_from(host, capsys):
    backup_ids(1, capsys)
    assert cli.main(["verify", "--deep", "--into", "default"]) == 2
    assert "is the database the backup was taken from" in capsys.readouterr().err


def test_verify_of_a_file_path_checks_that_file_wherever_it_is(host, tmp_path, capsys):
    backup_id = backup_ids(1, capsys)[0]
    elsewhere = tmp_path / "copied"
    elsewhere.mkdir()
    for suffix in (".dump.zst", ".manifest.json"):
        (elsewhere / f"{backup_id}{suffix}").write_bytes((host / f"{backup_id}{suffix}").read_bytes())
    assert cli.main(["verify", str(elsewhere / f"{backup_id}.dump.zst")]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["ok", backup_id, str(elsewhere)]
    flip_byte(elsewhere / f"{backup_id}.dump.zst")
    assert cli.main(["verify", str(elsewhere / f"{backup_id}.dump.zst")]) == 1
    assert capsys.readouterr().out.startswith(f"DAMAGED  {backup_id}")
