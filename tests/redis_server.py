"""A redis-server the tests start themselves, on a free port, so no test ever touches a Redis it did not create.

On a developer's laptop the Redis on 6379 holds their own data: the suite never connects to it. One server
is started lazily per pytest process (every test file takes its own database number on it, and may flush
that database because the server is ours); tests that restart Redis start a private one of their own.
`DBJOBS_TEST_REDIS_URL` points the suite at another Redis instead, which must be one reserved for tests:
the suite flushes the databases it uses there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def require_redis_server() -> str:
    """The redis-server binary; skip (laptop) or fail (CI=true) when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed; install it with: apt-get install redis-server"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


class OwnedRedis:
    """A redis-server of the test's own: started on a free port, stopped (or killed) and started again on it."""

    def __init__(self, directory: Path, *, appendonly: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The URL of database `db` on this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> OwnedRedis:
        """Start the server (again, on the same port and directory) and wait until it answers."""
        binary = require_redis_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115  (the child keeps it)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on port {self.port}: "
                                     f"{(self.directory / 'redis.log').read_text()[-1000:]}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGKILL for a crash) and wait until its port is closed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None


_session: OwnedRedis | None = None


def session_redis_url(db: int) -> str:
    """Database `db` of the suite's own Redis (or of `DBJOBS_TEST_REDIS_URL`'s server), started on first use."""
    given = os.environ.get("DBJOBS_TEST_REDIS_URL")
    if given:
        server = given.rstrip("/")
        if server.count("/") > 2:  # drop the database number the URL names
            server = server.rsplit("/", 1)[0]
        return f"{server}/{db}"
    global _session
    if _session is None:
        _session = OwnedRedis(Path(tempfile.mkdtemp(prefix="dbjobs-test-redis-"))).start()
        atexit.register(_stop_session)
    return _session.url(db)


def _stop_session() -> None:
    if _session is not None:
        _session.stop()
        shutil.rmtree(_session.directory, ignore_errors=True)
