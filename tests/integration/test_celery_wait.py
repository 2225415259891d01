"""`--wait` as a person uses it, on a terminal (a pty), through a real worker on a Redis this module owns.

A job queued behind another job's lock says whose; Ctrl-C stops the waiting but not the job and says how
to follow it; a Redis restart while waiting is waited out, and a Redis that stays away is given up on after
DBJOBS_WAIT_RECONNECT seconds with the task id to follow. What must not be lost: the job itself, which
finishes in its worker whatever happens to the waiting CLI. The long job is a PostgreSQL migration that
sleeps, so it lasts as long as the test needs on a busy machine too.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from dbjobs.schema.migration_file import FORWARD, REVERSE
from tests.celery_support import (
    PYTHON,
    ROOT,
    celery_env,
    cli_json,
    make_sqlite,
    run_cli,
    start_worker,
    wait_until,
)
from tests.conftest import PG_ADMIN_URL, scratch_database
from tests.redis_server import OwnedRedis
from workers.locks import lock_owner

pytestmark = pytest.mark.redis
SUBMITTED = re.compile(rb"submitted (\S+) as task ([0-9a-f-]{36})")
RUNNING = rb"\x1b\[2K(lock|apply) "  # the bar of a migration the worker has started


@dataclass
class Stack:
    env: dict[str, str]
    base: Path
    redis: OwnedRedis
    migrations: int = 0

    def slow_migration(self, seconds: float) -> str:
        """A new migration file for the `pg` alias that holds its lock for `seconds`."""
        self.migrations += 1
        path = self.base / f"{self.migrations:04d}_20260101T000000_sleep.sql"
        path.write_text(f"-- dbjobs migration {path.stem}\n-- engine: postgresql\n{FORWARD}\n"
                        f"SELECT pg_sleep({seconds});\n{REVERSE}\n")
        return str(path)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private append-only Redis (restarted by the tests) and a PostgreSQL alias `pg`."""
    base = tmp_path_factory.mktemp("celery_wait")
    server = OwnedRedis(base / "redis", appendonly=True).start()
    make_sqlite(base / "app.sqlite3", rows=200)
    with scratch_database("postgres", PG_ADMIN_URL, "postgresql+psycopg", 'CREATE DATABASE "{name}"',
                          'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)') as pg:
        env = celery_env(base, server.url(0), DBJOBS_WAIT_RECONNECT="30", DBJOBS_LOCK_TTL="30")
        env["DBJOBS_DATABASES"] += f";pg={pg}"
        try:
            yield Stack(env, base, server)
        finally:
            server.stop()


@pytest.fixture
def stack(servers: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A worker of two processes for each test: a Redis restart may take a worker's consumer down with it
    (kombu's redis transport), and the next test must not inherit that."""
    worker = start_worker(servers.env, servers.base, request.node.name[5:30], concurrency=2)
    try:
        yield servers
    finally:
        worker.stop()


class Terminal:
    """`cli.py ARGS` on a pseudo-terminal, as a person at a shell runs it."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.leader, follower = pty.openpty()
        # A shell gives the command it runs in the foreground the default Ctrl-C; a suite started in the
        # background (`.ci/run &`) runs with SIGINT ignored, which Python would otherwise pass on to the CLI.
        self.proc = subprocess.Popen([PYTHON, str(ROOT / "cli.py"), *args], env=env, cwd=cwd, stdin=follower,
                                     stdout=follower, stderr=follower, start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(follower)
        self.screen = b""

    def read_until(self, pattern: bytes, timeout: float = 60) -> re.Match[bytes]:
        """Read the screen until `pattern` shows (fail with what was shown if it never does)."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.screen)):
            assert time.monotonic() < deadline, f"{pattern!r} never shown:\n{self.text()}"
            if select.select([self.leader], [], [], 0.1)[0]:
                try:
                    self.screen += os.read(self.leader, 65536)
                except OSError:  # the CLI exited and closed its side
                    assert re.search(pattern, self.screen), f"{pattern!r} never shown:\n{self.text()}"
        return match

    def interrupt(self) -> None:
        """Ctrl-C: the terminal sends SIGINT to the foreground process."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = 60) -> int:
        """Wait for the CLI to exit, keeping what it printed; its exit code."""
        code = self.proc.wait(timeout=timeout)
        while select.select([self.leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.screen += chunk
        os.close(self.leader)
        return code

    def text(self) -> str:
        return self.screen.decode(errors="replace")

    def task_id(self) -> str:
        return self.read_until(SUBMITTED.pattern).group(2).decode()


def slow_job(stack: Stack, seconds: float, **env: str) -> Terminal:
    """`apply-migration --wait` of a migration that sleeps, on a terminal."""
    return Terminal({**stack.env, **env}, stack.base, "apply-migration", "--database", "pg", "--file",
                    stack.slow_migration(seconds), "--yes", "--wait")


def test_a_job_behind_another_jobs_lock_says_whose_it_waits_for(stack: Stack) -> None:
    first = cli_json(stack.env, stack.base, "apply-migration", "--database", "pg", "--file",
                     stack.slow_migration(4), "--yes")["task_id"]
    client = redis.Redis.from_url(stack.redis.url(0))
    wait_until(lambda: first in (lock_owner(client, "pg") or ""), 30, "the first job never took the lock")
    client.close()
    term = Terminal(stack.env, stack.base, "backup", "--database", "pg", "--wait")
    term.read_until(rf"note: waiting for dbjobs\.apply_migration {first} on 'pg'".encode())
    assert term.finish() == 0, term.text()
    assert re.search(r"backup pg-\S+ of pg", term.text())
    assert "dump" in term.text() and "100%" in term.text()  # its own bar once the lock was free


def test_ctrl_c_stops_waiting_not_the_job(stack: Stack) -> None:
    term = slow_job(stack, 3)
    task_id = term.task_id()
    term.read_until(RUNNING)  # the worker is running it
    term.interrupt()
    assert term.finish() == 130
    lines = [line for line in term.text().replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1] == f"stopped waiting; task {task_id} keeps running: `dbjobs result {task_id} --wait` follows it"
    assert "Traceback" not in term.text()
    done = cli_json(stack.env, stack.base, "result", task_id, "--wait")
    assert [m["status"] for m in done["migrations"]] == ["applied"]


def test_a_redis_restart_while_waiting_is_waited_out(stack: Stack) -> None:
    term = slow_job(stack, 8)
    task_id = term.task_id()
    term.read_until(RUNNING)
    stack.redis.stop()
    term.read_until(rf"lost the connection to the broker while waiting for task {task_id}".encode())
    time.sleep(2)
    stack.redis.start()
    term.read_until(rf"reconnected to the broker; still waiting for task {task_id}".encode())
    assert term.finish() == 0, term.text()
    assert "applied 0" in term.text() and "Traceback" not in term.text()


def test_a_redis_that_stays_away_is_given_up_on_naming_the_task(stack: Stack) -> None:
    term = slow_job(stack, 12, DBJOBS_WAIT_RECONNECT="3")  # outlasts the outage
    task_id = term.task_id()
    term.read_until(RUNNING)
    stack.redis.stop()
    try:
        started = time.monotonic()
        assert term.finish() == 1
        assert time.monotonic() - started < 20
        last = term.text().strip().splitlines()[-1]
        assert last.startswith(f"error: gave up waiting for task {task_id} after 3 s without the broker"), last
        assert f"`dbjobs result {task_id} --wait`" in last and "Traceback" not in term.text()
    finally:
        stack.redis.start()
    done = run_cli(stack.env, stack.base, "result", task_id, "--wait", "--json")
    assert done.returncode == 0, done.stderr  # the job finished in its worker all the same
