"""The CLI through Redis and a real worker: backup, restore, result, and every way a request can be wrong."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.celery_support import (
    PYTHON,
    ROOT,
    SECRET,
    Proc,
    celery_env,
    cli_json,
    flushed_redis,
    make_sqlite,
    manifests,
    redis_values,
    rows_of,
    run_cli,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path, str]]:
    """One worker for the module, over Redis database 10."""
    base = tmp_path_factory.mktemp("celery_cli")
    broker = flushed_redis(10)
    make_sqlite(base / "app.sqlite3", rows=700)
    make_sqlite(base / "big.sqlite3", rows=1000, blob_kib=100)
    env = celery_env(base, broker)
    env["DBJOBS_DATABASES"] += f";big=sqlite:///{base / 'big.sqlite3'}"
    worker: Proc = start_worker(env, base)
    try:
        yield env, base, broker
    finally:
        worker.stop()
        flushed_redis(10)


def test_backup_wait_through_a_worker_restores_into_a_scratch_alias(stack) -> None:
    env, base, _ = stack
    backup = cli_json(env, base, "backup", "--wait")
    assert backup["database"] == "default" and backup["row_counts"] == {"items": 700}
    assert Path(backup["path"]).is_file()
    restored = cli_json(env, base, "restore", backup["id"], "--database", "scratch", "--yes", "--wait")
    assert restored["backup_id"] == backup["id"] and restored["database"] == "scratch"
    assert rows_of(base / "scratch.sqlite3") == rows_of(base / "app.sqlite3")


def test_submit_prints_the_task_id_and_result_fetches_it(stack) -> None:
    env, base, broker = stack
    done = run_cli(env, base, "backup")
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert len(task_id) == 36 and "result" in done.stderr
    fetched = cli_json(env, base, "result", task_id, "--wait")
    assert fetched["database"] == "default" and fetched["extra"] == {"request_id": task_id}
    text = run_cli(env, base, "result", task_id)
    assert text.returncode == 0 and f"backup {fetched['id']} of default" in text.stdout
    assert SECRET not in redis_values(broker)


def test_unknown_alias_fails_cleanly_and_writes_nothing(stack) -> None:
    env, base, broker = stack
    before = manifests(base / "backups")
    done = run_cli(env, base, "backup", "--database", "nope", "--wait")
    assert done.returncode == 2
    submitted, error = done.stderr.strip().splitlines()
    assert submitted.startswith("submitted dbjobs.backup as task ") and submitted.endswith("not the job)")
    assert [error] == [
        "error: unknown database alias 'nope' (configured: big, default, scratch, secretpg); "
        "set DBJOBS_DATABASE_URL or add it to DBJOBS_DATABASES"]
    assert manifests(base / "backups") == before
    assert SECRET not in redis_values(broker)


def test_bad_task_arguments_from_another_service_fail_with_one_line(stack) -> None:
    env, base, broker = stack
    import redis
    from celery import Celery

    other = Celery("another-service", broker=broker, backend=broker)
    result = other.send_task("dbjobs.backup", kwargs={"database": "default", "compress": "max"})
    with pytest.raises(Exception) as err:
        result.get(timeout=30)
    assert type(err.value).__name__ == "ConfigError" and "bad arguments for dbjobs.backup" in str(err.value)
    meta = json.loads(redis.Redis.from_url(broker).get(f"celery-task-meta-{result.id}"))
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "ConfigError"
    assert "dbjobs/jobs.py" not in meta["traceback"]  # Celery's and the task's frames, not the library's
    done = run_cli(env, base, "result", result.id)
    assert done.returncode == 2 and done.stderr.startswith("error: bad arguments for dbjobs.backup")
    other.close()


def test_unknown_task_id_is_an_error(stack) -> None:
    env, base, _ = stack
    done = run_cli(env, base, "result", "0b0e7a52-0000-4000-8000-000000000000", "--wait", timeout=20)
    assert done.returncode == 1 and "no task 0b0e7a52-0000-4000-8000-000000000000 is known" in done.stderr


def test_unreachable_broker_fails_fast_with_one_line(stack, tmp_path: Path) -> None:
    env, _, _ = stack
    started = time.monotonic()
    done = run_cli({**env, "DBJOBS_BROKER_URL": "redis://:pw@127.0.0.1:6398/0"}, tmp_path, "backup", "--wait",
                   timeout=30)
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the broker redis://***@127.0.0.1:6398/0")
    assert not (tmp_path / "backups").exists()


def test_worker_and_result_commands_need_a_broker(tmp_path: Path) -> None:
    env = celery_env(tmp_path, "")
    for args in (["worker"], ["result", "x"], ["start-scheduler"]):
        done = run_cli(env, tmp_path, *args, timeout=30)
        assert done.returncode == 2 and "DBJOBS_BROKER_URL is not set" in done.stderr


def test_an_unreachable_database_is_retried_without_leaking_its_password(stack) -> None:
    env, base, broker = stack
    import redis

    task_id = cli_json(env, base, "backup", "--database", "secretpg")["task_id"]
    client = redis.Redis.from_url(broker)

    def state() -> str:
        raw = client.get(f"celery-task-meta-{task_id}")
        return json.loads(raw)["status"] if raw else "PENDING"

    wait_until(lambda: state() == "RETRY", 20, lambda: f"task stayed {state()}")
    shown = run_cli(env, base, "result", task_id)
    assert shown.returncode == 0 and f"task {task_id} (dbjobs.backup) is waiting to be retried" in shown.stdout
    assert SECRET not in redis_values(broker) and SECRET not in shown.stdout + shown.stderr
    client.close()


def test_wait_on_a_terminal_draws_the_workers_progress(stack) -> None:
    env, base, broker = stack
    import redis

    # A lock that expires in 2 s holds the job back until the CLI is surely listening.
    redis.Redis.from_url(broker).set("dbjobs:lock:big", "test holder x", px=2000)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([PYTHON, str(ROOT / "cli.py"), "backup", "--database", "big", "--wait"], env=env,
                              cwd=base, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120, check=False)
        os.close(follower)
        drawn = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 65536):
                drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0 and "backup big-" in done.stdout
    bar = drawn.decode(errors="replace")
    assert "check" in bar and "dump" in bar and "100%" in bar, bar


def test_failures_under_json_are_json_with_the_task_id(stack) -> None:
    env, base, _ = stack
    done = run_cli(env, base, "backup", "--database", "nope", "--wait", "--json")
    failed = json.loads(done.stdout)
    assert done.returncode == 2 and failed["error"].startswith("unknown database alias 'nope'")
    assert len(failed["task_id"]) == 36
    again = run_cli(env, base, "result", failed["task_id"], "--json")
    assert again.returncode == 2 and json.loads(again.stdout) == failed


def test_the_restore_question_is_asked_after_a_worker_found_and_verified_the_backup(stack) -> None:
    env, base, _ = stack
    backup = cli_json(env, base, "backup", "--wait")
    before = rows_of(base / "scratch.sqlite3") if (base / "scratch.sqlite3").exists() else None
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([PYTHON, str(ROOT / "cli.py"), "restore", backup["id"], "--database", "scratch"],
                                env=env, cwd=base, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        os.write(leader, b"n\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 1 and "restore not confirmed; nothing was changed" in err
    assert f"Restore backup {backup['id']} (taken " in out and f"checksum verified in {base / 'backups'}" in out
    assert f"into scratch (sqlite at {base / 'scratch.sqlite3'})" in out
    after = rows_of(base / "scratch.sqlite3") if (base / "scratch.sqlite3").exists() else None
    assert after == before
