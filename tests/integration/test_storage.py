"""Storage backends against real files and a local Supabase Storage server, including resumable uploads."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from dbjobs.errors import ConfigError, StorageError
from dbjobs.progress import no_progress
from dbjobs.settings import load_settings
from dbjobs.storage import SupabaseStorage, remote_storage, require_remote
from tests.support.backups import fake_manifest, make_backup
from tests.support.fake_supabase import FakeSupabase, make_key

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
MB = 1 << 20


def remote(fake: FakeSupabase, bucket: str = "backups", **kw) -> SupabaseStorage:
    return SupabaseStorage(fake.url, fake.key, bucket, retry_delay=0.01, **kw)


def test_100mb_backup_resumes_after_drop_and_500s(fake, tmp_path):
    payload = os.urandom(100 * MB)
    m = make_backup(tmp_path / "src", "big", NOW, payload)
    fake.fail("POST", "/upload/resumable", "500")  # creation fails once: created again
    fake.fail("PATCH", "/upload/resumable/", "drop", after=3 * MB)  # cut mid-chunk: 3 MiB of the chunk kept
    fake.fail("PATCH", "/upload/resumable/", "500", times=2)
    fake.fail("HEAD", "/upload/resumable/", "500")
    seen = []
    remote(fake, chunk_size=32 * MB).put(tmp_path / "src" / m.file, m, seen.append)
    stored = fake.object_path("backups", m.file).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == m.sha256 and len(stored) == len(payload)
    assert fake.tus_bytes == len(payload)  # every byte sent once: resumed, never restarted
    assert fake.requests["POST upload"] == 2 and fake.requests["HEAD upload"] >= 2
    assert seen[-1].done == seen[-1].total == len(payload)
    assert fake.object_path("backups", m.manifest_name).read_text() == m.to_json()


def test_download_resumes_where_it_stopped(fake, tmp_path):
    store = remote(fake)
    payload = os.urandom(20 * MB)
    m = make_backup(tmp_path / "src", "big", NOW, payload)
    store.put(tmp_path / "src" / m.file, m, no_progress)
    fake.fail("GET", f"/object/backups/{m.file}", "drop", after=7 * MB)
    fake.fail("GET", f"/object/backups/{m.file}", "500")
    fake.requests.clear()
    path = store.fetch(m, tmp_path / "dl", no_progress)
    assert path.read_bytes() == payload
    assert fake.requests["GET object"] == 3 and fake.sent[m.file] == len(payload)


def test_download_gives_up_with_a_clear_error(fake, tmp_path):
    store = remote(fake)
    m = make_backup(tmp_path / "src", "app", NOW, b"x" * 1000)
    store.put(tmp_path / "src" / m.file, m, no_progress)
    fake.fail("GET", f"/object/backups/{m.file}", "500", times=10_000)
    with pytest.raises(StorageError, match=r"download of .* from bucket 'backups' stopped at byte 0 after \d+ "
                                           r"failed attempts in 0 s: HTTP 500: injected failure"):
        remote(fake, transfer_window=0.2).fetch(m, tmp_path / "dl", no_progress)
    assert not any(p.name == m.file for p in (tmp_path / "dl").iterdir())


def test_upload_gives_up_with_a_clear_error(fake, tmp_path):
    m = make_backup(tmp_path / "src", "big", NOW, os.urandom(7 * MB))
    fake.fail("PATCH", "/upload/resumable/", "500", times=10_000)
    with pytest.raises(StorageError, match=r"resumable upload of .* to bucket 'backups' stopped at byte 6291456 of "
                                           r"7340032 after \d+ failed attempts in 0 s: HTTP 500"):
        remote(fake, chunk_size=6 * MB, transfer_window=0.2).put(tmp_path / "src" / m.file, m, no_progress)
    assert m.manifest_name not in fake.names()


def test_upload_survives_a_lost_upload_by_starting_over(fake, tmp_path):
    m = make_backup(tmp_path / "src", "big", NOW, os.urandom(13 * MB))
    fake.fail("PATCH", "/upload/resumable/", "500")
    original = fake.take_fault

    def forget(method, path):  # the server loses its upload state after the first failure
        fault = original(method, path)
        if fault:
            fake.forget_uploads()
        return fault

    fake.take_fault = forget
    remote(fake, chunk_size=6 * MB).put(tmp_path / "src" / m.file, m, no_progress)
    assert fake.requests["POST upload"] == 2
    assert hashlib.sha256(fake.object_path("backups", m.file).read_bytes()).hexdigest() == m.sha256


def test_small_dump_uses_the_standard_upload(fake, tmp_path):
    m = make_backup(tmp_path / "src", "app", NOW, b"z" * 1000)
    remote(fake).put(tmp_path / "src" / m.file, m, no_progress)
    assert "POST upload" not in fake.requests and fake.requests["POST object"] == 2


def test_missing_bucket_and_bad_key_are_clear_errors(fake):
    with pytest.raises(ConfigError, match="bucket 'nope' does not exist"):
        remote(fake, "nope").check_bucket()
    with pytest.raises(ConfigError, match="listing in bucket 'backups' failed: SUPABASE_KEY was refused "
                                          r"\(invalid signature\); set SUPABASE_KEY to the project's service_role"):
        other_project = make_key("service_role", "another project's secret, 32 bytes or more")
        SupabaseStorage(fake.url, other_project, "backups").scan()


def test_remote_is_configured_by_all_three_variables():
    assert remote_storage(load_settings({}, dotenv=None)) is None
    with pytest.raises(ConfigError, match="--upload needs Supabase Storage: set SUPABASE_URL"):
        require_remote(load_settings({}, dotenv=None))
    with pytest.raises(ConfigError, match="half configured: set SUPABASE_BUCKET"):
        remote_storage(load_settings({"SUPABASE_URL": "http://x", "SUPABASE_KEY": "k"}, dotenv=None))
    full = {"SUPABASE_URL": "http://x", "SUPABASE_KEY": "k", "SUPABASE_BUCKET": "b"}
    assert remote_storage(load_settings(full, dotenv=None)).where == "supabase:b"


def test_scan_pages_through_large_buckets(fake, tmp_path):
    store = remote(fake)
    for i in range(1100):
        m = fake_manifest("app", NOW - timedelta(minutes=i), b"d", f"{i:06x}")
        fake.object_path("backups", m.file).write_bytes(b"d")
        fake.object_path("backups", m.manifest_name).write_text(m.to_json())
    assert len(store.scan().complete) == 1100
    assert fake.requests["POST object"] == 3  # 2200 names, pages of 1000


def test_an_upload_resumes_across_a_restart_of_the_server(fake, tmp_path):
    m = make_backup(tmp_path / "src", "big", NOW, os.urandom(30 * MB))
    fake.fail("PATCH", "/upload/resumable/", "drop", after=MB, down_for=1.5)  # killed mid-chunk, back in 1.5 s
    remote(fake, chunk_size=8 * MB).put(tmp_path / "src" / m.file, m, no_progress)
    assert hashlib.sha256(fake.object_path("backups", m.file).read_bytes()).hexdigest() == m.sha256
    assert fake.tus_bytes == m.size and fake.requests["POST upload"] == 1  # the same upload, resumed


def test_a_proxy_refusing_large_bodies_gets_small_chunks(tmp_path):
    m = make_backup(tmp_path / "src", "big", NOW, os.urandom(40 * MB))
    with FakeSupabase(tmp_path / "supabase", body_limit=10 * MB) as fake:
        remote(fake, chunk_size=32 * MB).put(tmp_path / "src" / m.file, m, no_progress)
        assert hashlib.sha256(fake.object_path("backups", m.file).read_bytes()).hexdigest() == m.sha256
        assert fake.tus_bytes == m.size and fake.requests["PATCH upload"] == 6  # 6 MiB chunks after the 413
