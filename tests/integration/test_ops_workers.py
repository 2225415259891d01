"""Real Celery workers on two "hosts" (their own backup directories) sharing one Supabase bucket (Redis db 9).

Host A's worker backs up and uploads, then goes away; host B's worker lists and restores that
backup, which it has never seen locally, and `status` is answered by a live worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.celery_support import celery_env, cli_json, flushed_redis, make_sqlite, rows_of, run_cli, start_worker
from tests.support.fake_supabase import FakeSupabase

pytestmark = pytest.mark.redis


def test_a_backup_taken_on_one_host_is_listed_and_restored_on_another(tmp_path: Path) -> None:
    broker = flushed_redis(9)
    make_sqlite(tmp_path / "app.sqlite3", rows=300)
    with FakeSupabase(tmp_path / "supabase") as fake:
        shared = {"SUPABASE_URL": fake.url, "SUPABASE_KEY": fake.key, "SUPABASE_BUCKET": "backups"}
        host_a = celery_env(tmp_path, broker, DBJOBS_BACKUP_DIR=str(tmp_path / "host-a"), **shared)
        host_b = celery_env(tmp_path, broker, DBJOBS_BACKUP_DIR=str(tmp_path / "host-b"), **shared)
        worker = start_worker(host_a, tmp_path, name="host-a")
        try:
            made = cli_json(host_a, tmp_path, "backup", "--upload", "--wait")
        finally:
            worker.stop()
        assert made["upload"] == {"ok": True, "location": "supabase:backups"}
        assert Path(made["path"]).parent == tmp_path / "host-a"

        worker = start_worker(host_b, tmp_path, name="host-b")
        try:
            listed = cli_json(host_b, tmp_path, "list-backups", "--wait")["backups"]
            assert [(b["id"], b["locations"]) for b in listed] == [(made["id"], ["supabase:backups"])]
            restored = cli_json(host_b, tmp_path, "restore", made["id"], "--database", "scratch", "--yes", "--wait")
            assert restored["backup_id"] == made["id"]
            assert (tmp_path / "host-b" / made["file"]).is_file()
            assert rows_of(tmp_path / "scratch.sqlite3") == rows_of(tmp_path / "app.sqlite3")

            done = run_cli(host_b, tmp_path, "status", "--database", "default", "--json")
            report = json.loads(done.stdout)
            assert done.returncode == 0, report["checks"]
            assert report["broker"]["reachable"] and report["broker"]["workers"][0].startswith("host-b@")
            assert report["backups"]["databases"]["default"]["newest"] == made["id"]
        finally:
            worker.stop()
            flushed_redis(9)
