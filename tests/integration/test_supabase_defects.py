"""Supabase Storage as the real server behaves (issue 11): one test per defect seen against supabase/storage,
run against the test server that now behaves like it. What must not be lost: the local backup (always
taken, whatever the store does), the remote copy (never a manifest without its object), and the bytes a
download already has."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
from datetime import UTC, datetime

import httpx
import pytest

from dbjobs.errors import BackupNotFoundError, StorageError
from dbjobs.jobs import run_job
from dbjobs.pipeline import partial_path
from dbjobs.progress import no_progress
from dbjobs.settings import load_settings
from dbjobs.storage import SupabaseStorage
from dbjobs.storage.tus import check
from tests.support.backups import make_backup
from tests.support.fake_supabase import Bucket, FakeSupabase, make_key

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
MB = 1 << 20


def store(fake: FakeSupabase, **kw) -> SupabaseStorage:
    """The store with 2 MiB chunks, so a 7 MiB dump takes a creating POST and three PATCHes."""
    return SupabaseStorage(fake.url, fake.key, "backups", chunk_size=2 * MB, retry_delay=0.01, **kw)


def host(tmp_path, name, fake, app_db, **env):
    supabase = {"SUPABASE_URL": fake.url, "SUPABASE_KEY": fake.key, "SUPABASE_BUCKET": "backups",
                "SUPABASE_RETRY_SECONDS": "0.5"}
    return load_settings({"DBJOBS_DATABASE_URL": f"sqlite:///{app_db}", "DBJOBS_BACKUP_DIR": str(tmp_path / name),
                          "DBJOBS_DATABASES": f"scratch=sqlite:///{tmp_path / (name + '-scratch.sqlite3')}",
                          **supabase, **env}, dotenv=None)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# 1. Re-uploading an existing name: x-upsert on every TUS request.
def test_uploading_a_name_that_exists_overwrites_it(fake, tmp_path):
    m = make_backup(tmp_path / "src", "app", NOW, os.urandom(7 * MB))
    fake.object_path("backups", m.file).write_bytes(b"an older, shorter upload")
    store(fake).put(tmp_path / "src" / m.file, m, no_progress)
    store(fake).put(tmp_path / "src" / m.file, m, no_progress)  # a redelivered request uploads again
    assert sha(fake.object_path("backups", m.file)) == m.sha256
    assert fake.requests["PATCH upload"] == 6 and fake.requests["POST upload"] == 2  # no 409 retried


# 2. Bytes complete, object never created: checked with object info before the manifest goes up.
def test_an_upload_the_server_never_finalised_is_sent_again_before_the_manifest(fake, tmp_path):
    m = make_backup(tmp_path / "src", "app", NOW, os.urandom(7 * MB))
    fake.fail("PATCH", "/upload/resumable/", "unfinalised")  # every byte taken, then cut off: no object
    store(fake).put(tmp_path / "src" / m.file, m, no_progress)
    assert sha(fake.object_path("backups", m.file)) == m.sha256
    assert fake.object_path("backups", m.manifest_name).read_text() == m.to_json()
    assert fake.requests["POST upload"] == 2  # the unfinalised upload was replaced by a whole new one
    assert run_job("dbjobs.list_backups", load_settings({
        "DBJOBS_BACKUP_DIR": str(tmp_path / "other"), "SUPABASE_URL": fake.url, "SUPABASE_KEY": fake.key,
        "SUPABASE_BUCKET": "backups"}, dotenv=None), {})["skipped"] == []


# 3 and 4. A store that is down, refuses the key, or has no such bucket never stops a local backup.
FAILURES = {
    "storage down": ({}, r"HTTP 502 from the Supabase gateway: the storage server behind it is down or restarting"),
    "wrong key": ({"SUPABASE_KEY": make_key("service_role", "another project's secret, 32 bytes or more")},
                  r"SUPABASE_KEY was refused \(invalid signature\); set SUPABASE_KEY to the project's service_role"),
    "anon key": ({"SUPABASE_KEY": FakeSupabase.ANON_KEY}, r"SUPABASE_KEY is the project's anon \(public\) key"),
    "missing bucket": ({"SUPABASE_BUCKET": "nope"}, r"Supabase bucket 'nope' does not exist"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_backup_is_taken_and_the_failed_upload_reported_when_the_store_fails(failure, fake, tmp_path, app_db):
    env, why = FAILURES[failure]
    settings = host(tmp_path, "host-a", fake, app_db, **env)
    with fake.storage_down() if failure == "storage down" else contextlib.nullcontext():
        made = run_job("dbjobs.backup", settings, {"upload": True})
        listed = run_job("dbjobs.list_backups", settings, {})
        report = run_job("dbjobs.status", settings, {"database": "default"})
    assert sha(tmp_path / "host-a" / made["file"]) == made["sha256"]  # the local backup is whole
    assert made["upload"]["ok"] is False
    assert re.search(why, made["upload"]["error"]), made["upload"]["error"]
    assert [b["id"] for b in listed["backups"]] == [made["id"]]
    assert listed["unreadable"][0]["where"] == f"supabase:{settings.supabase_bucket}"
    assert re.search(why, listed["unreadable"][0]["error"])
    assert report["health"] == "critical"  # the store cannot be read: critical; the failed upload: a warning
    levels = {c["name"]: c["level"] for c in report["checks"]}
    assert levels["job:dbjobs.upload:default"] == "warning" and levels[f"storage:{listed['unreadable'][0]['where']}"]
    assert not any(p.name.endswith(".dump.zst") for p in (tmp_path / "supabase" / "backups").iterdir())


def test_a_successful_upload_clears_the_warning(fake, tmp_path, app_db):
    settings = host(tmp_path, "host-a", fake, app_db)
    with fake.storage_down():
        assert run_job("dbjobs.backup", settings, {"upload": True})["upload"]["ok"] is False
    again = run_job("dbjobs.backup", settings, {"upload": True})
    assert again["upload"] == {"ok": True, "location": "supabase:backups"}
    report = run_job("dbjobs.status", settings, {"database": "default"})
    assert not [c for c in report["checks"] if c["name"].startswith(("job:", "storage:"))], report["checks"]


# 5. The remote being down hides nothing that is on local disk.
@pytest.mark.parametrize("outage", ["gateway 502", "connection refused"])
def test_local_backups_stay_listable_and_restorable_while_the_store_is_down(outage, fake, tmp_path, app_db):
    settings = host(tmp_path, "host-a", fake, app_db)
    made = run_job("dbjobs.backup", settings, {"upload": True})
    with sqlite3.connect(app_db) as conn:
        conn.execute("DELETE FROM items")
    conn.close()
    with fake.storage_down() if outage == "gateway 502" else contextlib.nullcontext():
        if outage == "connection refused":
            fake.stop()
        listed = run_job("dbjobs.list_backups", settings, {})
        restored = run_job("dbjobs.restore", settings, {"backup": made["id"], "confirmed": True})
        with pytest.raises(BackupNotFoundError, match=r"no backup .* in .*host-a .*; supabase:backups could not"):
            run_job("dbjobs.restore", settings, {"backup": "default-20200101T000000Z-abcdef", "confirmed": True})
    assert [b["id"] for b in listed["backups"]] == [made["id"]]
    assert listed["unreadable"][0]["where"] == "supabase:backups"
    assert "Unable to parse" not in listed["unreadable"][0]["error"]
    assert restored["backup_id"] == made["id"]
    with sqlite3.connect(app_db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone() == (250,)
    conn.close()


def test_cleanup_while_the_store_is_down_cleans_local_copies_and_leaves_remote_ones_for_later(fake, tmp_path, app_db):
    """What must not be lost: the newest backup (min-keep 1), locally and in the store. An unlistable store
    keeps its copies until a cleanup can see them; it does not stop the local cleanup."""
    settings = host(tmp_path, "host-a", fake, app_db)
    ids = [run_job("dbjobs.backup", settings, {"upload": True})["id"] for _ in range(3)]
    rule = {"keep_days": 0, "min_keep": 1}
    with fake.storage_down():
        down = run_job("dbjobs.cleanup", settings, rule)
    assert sorted(d["id"] for d in down["deleted"]) == sorted(ids[:2]) and [k["id"] for k in down["kept"]] == ids[2:]
    assert [u["where"] for u in down["unreadable"]] == ["supabase:backups"]
    assert sorted(p.name for p in (tmp_path / "host-a").glob("default-*")) == [
        f"{ids[2]}.dump.zst", f"{ids[2]}.manifest.json"]
    assert {ids[0], ids[1], ids[2]} <= store(fake).scan().complete  # the store's copies wait

    up = run_job("dbjobs.cleanup", settings, rule)

    assert sorted(d["id"] for d in up["deleted"]) == sorted(ids[:2]) and up["unreadable"] == []
    assert store(fake).scan().complete == {ids[2]}


# 6. Downloads ride out a server restart, and a retried restore resumes the download.
def test_a_download_rides_out_a_five_second_restart_and_resumes(fake, tmp_path):
    m = make_backup(tmp_path / "src", "app", NOW, os.urandom(20 * MB))
    store(fake).put(tmp_path / "src" / m.file, m, no_progress)
    fake.fail("GET", f"/object/backups/{m.file}", "drop", after=7 * MB, down_for=5)
    patient = SupabaseStorage(fake.url, fake.key, "backups")  # the default retry pauses, as a user has them
    assert sha(patient.fetch(m, tmp_path / "dl", no_progress)) == m.sha256
    assert fake.sent[m.file] == m.size  # resumed at byte 7 MiB, not started again


def test_a_retried_restore_continues_the_download_where_the_failed_one_stopped(fake, tmp_path, app_db):
    m = make_backup(tmp_path / "src", "default", NOW, os.urandom(20 * MB))
    store(fake).put(tmp_path / "src" / m.file, m, no_progress)
    fake.fail("GET", f"/object/backups/{m.file}", "drop", after=7 * MB)
    fake.fail("GET", f"/object/backups/{m.file}", "500", times=10_000)
    settings = host(tmp_path, "host-b", fake, app_db)
    with pytest.raises(StorageError, match=r"stopped at byte 7340032 .* \(a retry resumes from there\)"):
        run_job("dbjobs.restore", settings, {"backup": m.id, "database": "scratch", "confirmed": True})
    assert partial_path(tmp_path / "host-b" / m.file).stat().st_size == 7 * MB
    fake.faults.clear()
    copy = store(fake).fetch(m, tmp_path / "host-b", no_progress)  # the retry (its restore then fails on
    assert sha(copy) == m.sha256 and fake.sent[m.file] == m.size     # these random bytes: not a real dump)
    assert not partial_path(copy).exists()


# 7. Messages: the gateway's 502, the bucket named in TUS errors, the refused overwrite explained.
def test_tus_refusals_name_the_bucket_and_say_why(tmp_path):
    m = make_backup(tmp_path / "src", "app", NOW, os.urandom(7 * MB))
    buckets = {"backups": Bucket(file_size_limit=5 * MB), "typed": Bucket(allowed_mime_types=["image/png"])}
    with FakeSupabase(tmp_path / "supabase", buckets=buckets) as fake:
        with pytest.raises(StorageError, match=r"resumable upload of .*dump.zst to bucket 'backups' refused: "
                                               r"HTTP 413: The object exceeded the maximum allowed size"):
            store(fake).put(tmp_path / "src" / m.file, m, no_progress)
        typed = SupabaseStorage(fake.url, fake.key, "typed", chunk_size=2 * MB, retry_delay=0.01)
        with pytest.raises(StorageError, match=r"to bucket 'typed' refused: HTTP 415: mime type application/zstd"):
            typed.put(tmp_path / "src" / m.file, m, no_progress)
        assert not fake.names("backups") and not fake.names("typed")


def test_a_refused_overwrite_is_explained_not_retried():
    refused = httpx.Response(409, text="The resource already exists", headers={"Content-Type": "text/plain"})
    with pytest.raises(StorageError, match=r"upload of x refused: the object already exists and the server would "
                                           r"not overwrite it \(HTTP 409: The resource already exists\); .*x-upsert"):
        check(refused, 204, what="upload of x")
