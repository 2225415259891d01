"""The per-database lock against real Redis: exclusive, renewed while held, released on every exit,
and never held forever by a process that died."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
import redis

from dbjobs.errors import JobLockedError, LockLostError
from tests.celery_support import flushed_redis, wait_until
from tests.redis_server import OwnedRedis
from workers.locks import KEY, database_lock, lock_owner

pytestmark = pytest.mark.redis


@pytest.fixture
def client():
    client = redis.Redis.from_url(flushed_redis(11))
    yield client
    client.flushdb()
    client.close()


def test_second_job_waits_then_runs_after_the_first(client) -> None:
    order: list[str] = []

    def first() -> None:
        with database_lock(client, "db", "dbjobs.backup t1", ttl=2, wait=5):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.1)
    with database_lock(client, "db", "dbjobs.restore t2", ttl=2, wait=5):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
    assert client.get(KEY.format("db")) is None


def test_a_busy_database_is_refused_naming_the_running_task(client) -> None:
    with database_lock(client, "db", "dbjobs.backup 1234-task", ttl=2, wait=0):
        assert lock_owner(client, "db") == "dbjobs.backup 1234-task"
        with pytest.raises(JobLockedError) as err, database_lock(client, "db", "dbjobs.restore t2", ttl=2, wait=0.2):
            pass
        with database_lock(client, "other", "dbjobs.backup t3", ttl=2, wait=0):
            pass  # another alias is independent
    assert "dbjobs.backup 1234-task" in str(err.value) and "'db' is busy" in str(err.value)


def test_the_heartbeat_keeps_a_long_job_locked_past_its_ttl(client) -> None:
    with database_lock(client, "db", "dbjobs.backup t1", ttl=0.6, wait=0):
        time.sleep(1.5)
        assert lock_owner(client, "db") == "dbjobs.backup t1"
        assert 0 < client.pttl(KEY.format("db")) <= 600


def test_released_when_the_job_fails(client) -> None:
    with pytest.raises(ValueError), database_lock(client, "db", "dbjobs.backup t1", ttl=5, wait=0):
        raise ValueError("job failed")
    assert lock_owner(client, "db") is None


def test_a_dead_holders_lock_expires(client) -> None:
    client.set(KEY.format("db"), "dbjobs.backup killed-task abc", px=500)  # what a kill -9 leaves behind
    started = time.monotonic()
    with database_lock(client, "db", "dbjobs.backup t2", ttl=2, wait=5):
        waited = time.monotonic() - started
    assert 0.3 < waited < 2


def _left_by(pid: int, owner: str = "dbjobs.restore task-7") -> str:
    return f"{owner} {socket.gethostname()}:{pid}:deadbeef"


def test_a_redelivered_job_takes_over_the_lock_its_dead_predecessor_held(client) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    client.set(KEY.format("db"), _left_by(dead.pid), px=30_000)  # a pool process killed mid-job left this
    started = time.monotonic()
    with database_lock(client, "db", "dbjobs.restore task-7", ttl=30, wait=5):
        assert time.monotonic() - started < 0.5
        assert lock_owner(client, "db") == "dbjobs.restore task-7"
    assert client.get(KEY.format("db")) is None


def test_no_takeover_from_a_live_run_or_another_task(client) -> None:
    alive = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for value in (_left_by(alive.pid), _left_by(dead.pid, "dbjobs.restore other-task")):
            client.set(KEY.format("db"), value, px=30_000)
            with pytest.raises(JobLockedError), database_lock(client, "db", "dbjobs.restore task-7", ttl=30, wait=0.3):
                pass
            assert client.get(KEY.format("db")).decode() == value
    finally:
        alive.kill()
        alive.wait()


def test_a_job_whose_lock_redis_forgot_is_stopped_at_its_next_check(client) -> None:
    with database_lock(client, "db", "dbjobs.restore t1", ttl=30, wait=0) as lease:
        lease.check()
        client.flushdb()  # Redis restarted empty, or a failover lost the key
        client.set(KEY.format("db"), "dbjobs.restore t2 elsewhere:1:x", px=30_000)  # and another job took it
        wait_until(lambda: _stopped(lease), 3, "the lost lock was never noticed")
        with pytest.raises(LockLostError, match="lost its lock on database 'db'"):
            lease.check()
    assert client.get(KEY.format("db")) == b"dbjobs.restore t2 elsewhere:1:x"  # the other job's lock is kept


def _stopped(lease) -> bool:  # type: ignore[no-untyped-def]
    try:
        lease.check()
    except LockLostError:
        return True
    return False


def test_at_a_step_boundary_the_fence_asks_redis_even_right_after_a_check(client) -> None:
    """Within a step the fence asks Redis at most once a second; before a swap or a copy it always asks."""
    with database_lock(client, "db", "dbjobs.restore t1", ttl=30, wait=0) as lease:
        lease.check()
        client.flushdb()  # Redis restarted empty a moment after the last check
        lease.check()  # within the second: not asked again
        with pytest.raises(LockLostError, match="lost its lock on database 'db'"):
            lease.check(fresh=True)


def test_at_a_step_boundary_the_fence_waits_for_an_unreachable_redis(tmp_path) -> None:
    """Redis is down when the job reaches its swap: the fence waits for it instead of going on unknowing, and
    the Redis that comes back empty says the lock is gone."""
    server = OwnedRedis(tmp_path / "redis", appendonly=False).start()
    own = redis.Redis.from_url(server.url(0), socket_connect_timeout=1, socket_timeout=1)
    back = threading.Timer(1.5, server.start)  # back, empty, while the fence waits
    try:
        with database_lock(own, "db", "dbjobs.restore t1", ttl=30, wait=0) as lease:
            server.stop()
            back.start()
            started = time.monotonic()
            with pytest.raises(LockLostError, match="lost its lock on database 'db'"):
                lease.check(fresh=True)
            assert time.monotonic() - started >= 1.0
    finally:
        back.join()
        own.close()
        server.stop()
