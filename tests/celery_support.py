"""Real Celery processes for tests: workers, beat, Flower and the CLI, each in its own process group.

Every test file has its own database on the suite's own redis-server (6 pg swap kills, 7 schema, 8 contract,
9 ops, 10 CLI, 11 locks, 12 faults, 13 Flower, 14 bench; conftest's `redis_url` uses 15; tests that restart
Redis start a private server), so test files never see each other's queues, and every process is killed by
its own id in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.redis_server import session_redis_url

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SECRET = "s3cret-pw-never-shown"


def flushed_redis(db: int) -> str:
    """The URL of an emptied database of the suite's own Redis, reserved for one test file."""
    url = session_redis_url(db)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def celery_env(base: Path, broker: str, **extra: str) -> dict[str, str]:
    """An environment for dbjobs processes: a SQLite `default`, a `scratch` alias, and a PostgreSQL
    alias whose URL holds a password that must never show up in results or Flower."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBJOBS_", "BACKUP_", "SUPABASE_"))}
    env.update(
        PYTHONPATH=str(ROOT), DBJOBS_BROKER_URL=broker, DBJOBS_ENV="test",
        DBJOBS_DATABASE_URL=f"sqlite:///{base / 'app.sqlite3'}",
        DBJOBS_DATABASES=f"scratch=sqlite:///{base / 'scratch.sqlite3'};"
                         f"secretpg=postgresql://dbjobs:{SECRET}@127.0.0.1:5432/nonexistent",
        DBJOBS_BACKUP_DIR=str(base / "backups"), DBJOBS_LOCK_TTL="3",
    )
    env.update(extra)
    return env


def make_sqlite(path: Path, rows: int = 500, blob_kib: int = 0) -> None:
    """A SQLite database with `rows` rows; `blob_kib` pads each row (half random) to make a slow backup."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, pad BLOB)")
        half = blob_kib * 512
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO items SELECT i, 'item ' || i, randomblob(?) || zeroblob(?) FROM n", (rows, half, half))
    conn.close()


def rows_of(path: Path) -> list[tuple]:
    """Every row of the test table, for comparing a restore with its source."""
    with sqlite3.connect(path) as conn:
        result = conn.execute("SELECT id, name, length(pad) FROM items ORDER BY id").fetchall()
    conn.close()
    return result


class Proc:
    """A background process in its own session, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115  (closed in stop)
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def text(self) -> str:
        """Everything it logged so far."""
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        """Wait until the log shows `needle` (fail with the log's tail if it never does)."""
        wait_until(lambda: needle in self.text(), timeout, lambda: f"{needle!r} not in log:\n{self.text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too) and reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)

    def stop(self) -> None:
        """Warm shutdown, then make sure nothing of it is left."""
        self.kill(signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.out.close()


def start_worker(env: dict[str, str], cwd: Path, name: str = "w1", concurrency: int = 1, *,
                 via_cli: bool = False) -> Proc:
    """A real prefork worker (`celery -A workers.app worker`, or `python cli.py worker`), once it is ready."""
    command = [str(ROOT / "cli.py")] if via_cli else ["-m", "celery", "-A", "workers.app"]
    proc = Proc([PYTHON, *command, "worker", "--pool=prefork", "-c", str(concurrency),
                 "--loglevel=INFO", "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
                env, cwd / f"{name}.log", cwd)
    proc.wait_for_log("ready.")
    return proc


def run_cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python cli.py ARGS` as a user runs it."""
    return subprocess.run([PYTHON, str(ROOT / "cli.py"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def cli_json(env: dict[str, str], cwd: Path, *args: str) -> dict:
    """Run a CLI command with --json and return its parsed output (failing with its stderr otherwise)."""
    done = run_cli(env, cwd, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(check: Callable[[], object], timeout: float, why: Callable[[], str] | str = "timed out") -> None:
    """Poll `check` until it is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(why() if callable(why) else why)
        time.sleep(0.05)


def manifests(directory: Path) -> list[dict]:
    """Every complete backup's manifest in a directory (what list-backups would show)."""
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.manifest.json"))]


def redis_values(url: str) -> str:
    """Every string value in a Redis database, to check no secret was stored in results or queues."""
    client = redis.Redis.from_url(url)
    parts = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            parts.extend(client.hvals(key))
    client.close()
    return b"\n".join(parts).decode(errors="replace")
