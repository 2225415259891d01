"""`dbjobs metrics` scraped over HTTP as Prometheus would, and written as a node-exporter textfile, then parsed.

The figures must be the truth of the backup directory: the newest full backup's time, size and duration from
its manifest, counts per storage and kind, the last verify/drill/cleanup outcome, and failures per job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dbjobs.errors import DatabaseUnavailableError
from dbjobs.jobs import run_job
from dbjobs.settings import load_settings
from tests.celery_support import ROOT, Proc, wait_until
from tests.redis_server import free_port
from tests.support.hosts import configure_host


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def history(tmp_path, monkeypatch):
    """A host with two full backups and a safety copy of `default`, a verify, a cleanup, and a failed backup."""
    env = configure_host(tmp_path, monkeypatch)
    gone = tmp_path / "gone.sqlite3"
    env = {**env, "DBJOBS_DATABASES": f"broken=sqlite:///{gone}"}
    monkeypatch.setenv("DBJOBS_DATABASES", env["DBJOBS_DATABASES"])
    settings = load_settings(env, dotenv=None)
    run_job("dbjobs.backup", settings, {})
    newest = run_job("dbjobs.backup", settings, {})
    restored = run_job("dbjobs.restore", settings, {"backup": newest["id"], "confirmed": True})
    run_job("dbjobs.verify", settings, {"database": "default"})
    run_job("dbjobs.cleanup", settings, {"database": "default"})
    for _ in range(2):
        with pytest.raises(DatabaseUnavailableError):
            run_job("dbjobs.backup", settings, {"database": "broken"})
    return env, newest, restored["safety_backup_id"]


def check(text: str, env: dict[str, str], newest: dict, safety: str) -> None:
    got = samples(text)
    where = env["DBJOBS_BACKUP_DIR"]
    finished = datetime.fromisoformat(newest["finished_at"]).timestamp()
    assert got[("dbjobs_backup_last_success_timestamp_seconds", (("database", "default"),))] == pytest.approx(finished)
    assert got[("dbjobs_backup_last_size_bytes", (("database", "default"),))] == newest["size"]
    assert got[("dbjobs_backup_last_duration_seconds", (("database", "default"),))] == pytest.approx(
        newest["seconds"], abs=0.01)
    assert got[("dbjobs_backups", (("database", "default"), ("kind", "full"), ("storage", where)))] == 2
    assert got[("dbjobs_backups", (("database", "default"), ("kind", "safety"), ("storage", where)))] == 1
    assert got[("dbjobs_storage_up", (("storage", where),))] == 1
    assert got[("dbjobs_verify_last_success", (("database", "default"),))] == 1
    assert got[("dbjobs_cleanup_last_success", (("database", "default"),))] == 1
    assert got[("dbjobs_job_failures_total", (("database", "broken"), ("job", "dbjobs.backup")))] == 2
    assert got[("dbjobs_job_failures_total", (("database", "default"), ("job", "dbjobs.backup")))] == 0
    assert ("dbjobs_backup_last_success_timestamp_seconds", (("database", "broken"),)) not in got
    assert safety.startswith("default-")


def test_metrics_scraped_over_http_and_parsed(history, tmp_path):
    env, newest, safety = history
    port = free_port()
    proc = Proc([sys.executable, str(ROOT / "cli.py"), "metrics", "--port", str(port)],
                {**os.environ, "PYTHONPATH": str(ROOT)}, tmp_path / "metrics.log", tmp_path)
    try:
        proc.wait_for_log(f"serving metrics on http://127.0.0.1:{port}/metrics")
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        check(response.text, env, newest, safety)
        shutil.rmtree(tmp_path / "backups" / ".last-jobs")  # read afresh at every scrape: no state in the exporter
        wait_until(lambda: "dbjobs_job_failures_total{" not in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                   10, "the exporter kept figures the backup directory no longer has")
    finally:
        proc.stop()


def test_metrics_textfile_for_node_exporter(history, tmp_path):
    env, newest, safety = history
    out = tmp_path / "textfile" / "dbjobs.prom"
    out.parent.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "metrics", "--textfile", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    check(out.read_text(), env, newest, safety)
    assert not [p for p in out.parent.iterdir() if p.name != "dbjobs.prom"]  # written atomically, no leftovers
