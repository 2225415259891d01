"""Two workers with their own backup directories sharing one Supabase bucket: each sees and restores the other's."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from dbjobs.errors import ConfigError
from dbjobs.jobs import run_job
from dbjobs.progress import no_progress
from dbjobs.settings import load_settings
from dbjobs.storage import SupabaseStorage
from tests.support.backups import make_backup


def worker(tmp_path, name, fake, app_db, **env):
    """Settings of one host: its own backup directory, the shared bucket, the app and a scratch database."""
    supabase = {"SUPABASE_URL": fake.url, "SUPABASE_KEY": fake.key, "SUPABASE_BUCKET": "backups"}
    return load_settings({"DBJOBS_DATABASE_URL": f"sqlite:///{app_db}", "DBJOBS_BACKUP_DIR": str(tmp_path / name),
                          "DBJOBS_DATABASES": f"scratch=sqlite:///{tmp_path / (name + '-scratch.sqlite3')}",
                          **supabase, **env}, dotenv=None)


def test_backup_on_one_host_is_listed_and_restored_on_another(tmp_path, fake, app_db):
    a, b = worker(tmp_path, "host-a", fake, app_db), worker(tmp_path, "host-b", fake, app_db)
    made = run_job("dbjobs.backup", a, {"upload": True})
    assert made["upload"] == {"ok": True, "location": "supabase:backups"}
    assert fake.object_path("backups", made["file"]).read_bytes() == (tmp_path / "host-a" / made["file"]).read_bytes()

    on_a = run_job("dbjobs.list_backups", a, {})["backups"]
    assert on_a[0]["locations"] == [str(tmp_path / "host-a" / made["file"]), "supabase:backups"]
    on_b = run_job("dbjobs.list_backups", b, {})["backups"]
    assert [(x["id"], x["locations"]) for x in on_b] == [(made["id"], ["supabase:backups"])]

    restored = run_job("dbjobs.restore", b, {"backup": made["id"], "database": "scratch", "confirmed": True})
    assert restored["backup_id"] == made["id"]
    copy = tmp_path / "host-b" / made["file"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == made["sha256"]
    with sqlite3.connect(tmp_path / "host-b-scratch.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*), MAX(name) FROM items").fetchone() == (250, "item 99")
    conn.close()
    assert run_job("dbjobs.list_backups", b, {})["backups"][0]["locations"] == [str(copy), "supabase:backups"]

    status_b = run_job("dbjobs.status", b, {"database": "default"})
    assert status_b["backups"]["databases"]["default"]["newest"] == made["id"]


def test_cleanup_on_one_host_applies_retention_to_the_shared_store(tmp_path, fake, app_db):
    a, b = worker(tmp_path, "host-a", fake, app_db), worker(tmp_path, "host-b", fake, app_db)
    remote = SupabaseStorage(fake.url, fake.key, "backups")
    now = datetime.now(UTC)
    shared = [make_backup(tmp_path / "host-a", "default", now - timedelta(days=d)) for d in (1, 35, 40, 45)]
    for m in shared:
        remote.put(tmp_path / "host-a" / m.file, m, no_progress)
    result = run_job("dbjobs.cleanup", b, {"keep_days": 30, "min_keep": 2})
    assert {r["id"] for r in result["deleted"]} == {shared[2].id, shared[3].id}
    assert result["deleted"][0]["locations"] == ["supabase:backups"]
    assert set(fake.names()) == {m.file for m in shared[:2]} | {m.manifest_name for m in shared[:2]}
    # Host A's local copies of the deleted backups go when host A cleans up; the decision is the same.
    result_a = run_job("dbjobs.cleanup", a, {"keep_days": 30, "min_keep": 2})
    assert {r["id"] for r in result_a["deleted"]} == {shared[2].id, shared[3].id}
    assert not (tmp_path / "host-a" / shared[3].file).exists()


def test_transient_failures_of_small_uploads_are_retried(tmp_path, fake, app_db):
    fake.fail("POST", "/object/backups/", "500", times=2)
    fake.fail("POST", "/object/list/", "500")
    made = run_job("dbjobs.backup", worker(tmp_path, "host-a", fake, app_db, SUPABASE_RETRY_SECONDS="5"),
                   {"upload": True})
    assert made["upload"]["ok"] and set(fake.names()) == {made["file"], made["id"] + ".manifest.json"}
    assert len(run_job("dbjobs.list_backups", worker(tmp_path, "host-b", fake, app_db), {})["backups"]) == 1


def test_upload_needs_settings_before_any_work(tmp_path, app_db):
    bare = load_settings({"DBJOBS_DATABASE_URL": f"sqlite:///{app_db}",
                          "DBJOBS_BACKUP_DIR": str(tmp_path / "bare")}, dotenv=None)
    with pytest.raises(ConfigError, match="--upload needs Supabase Storage"):
        run_job("dbjobs.backup", bare, {"upload": True})
    assert not (tmp_path / "bare").exists()


def test_remote_manifests_are_downloaded_once_and_forgotten_when_deleted(tmp_path, fake, app_db):
    a, b = worker(tmp_path, "host-a", fake, app_db), worker(tmp_path, "host-b", fake, app_db)
    remote = SupabaseStorage(fake.url, fake.key, "backups")
    now = datetime.now(UTC)
    shared = [make_backup(tmp_path / "seed", "default", now - timedelta(days=d)) for d in range(40)]
    for m in shared:
        remote.put(tmp_path / "seed" / m.file, m, no_progress)
    gets = fake.requests["GET object"]
    assert run_job("dbjobs.list_backups", b, {})["total"] == 40
    assert fake.requests["GET object"] == gets + 40
    assert run_job("dbjobs.list_backups", b, {})["total"] == 40
    assert fake.requests["GET object"] == gets + 40  # every manifest came from host B's cache
    cache = tmp_path / "host-b" / ".remote-manifests" / "backups"
    assert len(list(cache.iterdir())) == 40

    run_job("dbjobs.cleanup", a, {"keep_days": 10, "min_keep": 1})
    assert run_job("dbjobs.list_backups", b, {})["total"] == 10
    assert len(list(cache.iterdir())) == 10
    assert run_job("dbjobs.list_backups", b, {})["backups"][0]["locations"] == ["supabase:backups"]
