"""One job per database at a time: a Redis lock per alias, short-lived and renewed while the job runs.

The lock expires after `ttl` seconds unless a heartbeat thread renews it, so a worker killed
with `kill -9` blocks the database for at most `ttl`, never forever. A second job on the same
alias waits for the lock up to `wait` seconds, then fails with a message naming the task that
holds it. A redelivered job whose own predecessor (same task id) died on this host takes the
lock over at once instead of waiting for it to expire.

The lock is also a fence: a job that lost it (Redis restarted empty, failed over, or was away
longer than the TTL) is told so by `Lease.check()`, which the worker calls before every progress
report, so the job stops before its next step instead of running beside the job that took the lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from dbjobs.errors import JobLockedError, LockLostError

log = logging.getLogger(__name__)
KEY = "dbjobs:lock:{}"
CHECK_EVERY = 1.0  # seconds between ownership checks of a running job's fence
FRESH_RETRY = 0.2  # seconds between tries of a step boundary's check while Redis does not answer
# Replace the lock's value only if it is still exactly the dead predecessor's.
TAKEOVER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end"


def lock_owner(client: redis.Redis, alias: str) -> str | None:
    """`<job> <task id>` of whoever holds the alias's lock now, or None."""
    token = client.get(KEY.format(alias))
    return token.decode().rsplit(" ", 1)[0] if token else None


def new_token(owner: str) -> str:
    """A lock value: `<job> <task id> <host>:<pid>:<random>`, so a successor can tell whether its holder lives."""
    return f"{owner} {socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def process_gone(pid: int) -> bool:
    """Whether process `pid` of this host has exited (a zombie not yet reaped counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def dead_predecessor(value: str, owner: str) -> bool:
    """Whether lock value `value` was left by an earlier run of the same task (`owner`) whose process is dead.

    Only a process on this host can be checked; elsewhere the lock's TTL decides.
    """
    held_by, _, where = value.rpartition(" ")
    host, _, rest = where.partition(":")
    pid = rest.partition(":")[0]
    return held_by == owner and host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() \
        and process_gone(int(pid))


class Lease:
    """A held lock: renewed by a heartbeat thread, and a fence the job checks before each step."""

    def __init__(self, client: redis.Redis, alias: str, lock: redis.lock.Lock, ttl: float) -> None:
        self.client, self.alias, self.lock, self.ttl = client, alias, lock, ttl
        self.lost = threading.Event()
        self._renewed = self._checked = time.monotonic()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, daemon=True, name=f"dbjobs-lock-{alias}")

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.error("lost the lock of database %r (%s): the job stops before its next step", self.alias, why)
        self.lost.set()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.lock.reacquire()
                self._renewed = time.monotonic()
            except LockNotOwnedError:
                self._lose("it expired or was taken while Redis was unreachable or restarted")
                return
            except RedisError as exc:
                log.warning("could not renew the lock of database %r: %s; retrying", self.alias, exc)
                if time.monotonic() - self._renewed > self.ttl:
                    self._lose(f"not renewed for over {self.ttl:g} s, so it has expired")
                    return

    def check(self, *, fresh: bool = False) -> None:
        """Raise LockLostError if the lock is no longer ours.

        Within a step Redis is asked at most every CHECK_EVERY seconds, and an unreachable Redis is
        left to the heartbeat. At a step's boundary (`fresh`: what follows may be the swap or the
        copy) Redis is always asked, and while it cannot answer the job waits for it, until the
        lock's TTL has run out since its last renewal (then the lock is lost).
        """
        now = time.monotonic()
        if now - self._renewed > self.ttl:
            self._lose(f"not renewed for over {self.ttl:g} s, so it has expired")
        while not self.lost.is_set() and (fresh or now - self._checked >= CHECK_EVERY):
            self._checked = now
            try:
                if not self.lock.owned():
                    self._lose("another job holds it now, or Redis forgot it")
                break
            except RedisError:
                if not fresh:
                    break  # Redis away: the heartbeat decides once it is back (or the TTL runs out)
                if time.monotonic() - self._renewed > self.ttl:
                    self._lose(f"Redis did not answer for over {self.ttl:g} s, so it has expired")
                time.sleep(FRESH_RETRY)
        if self.lost.is_set():
            raise LockLostError(
                f"the job lost its lock on database {self.alias!r} (Redis restarted empty, failed over, or was "
                f"unreachable for over {self.ttl:g} s) and stopped before its next step; it is retried")

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join()
        try:
            self.lock.release()
        except (LockError, RedisError) as exc:
            log.warning("could not release the lock of database %r: %s (it expires in %g s)", self.alias, exc,
                        self.ttl)


def _acquire(client: redis.Redis, lock: redis.lock.Lock, key: str, owner: str, wait: float) -> bool:
    token = new_token(owner)
    deadline = time.monotonic() + max(wait, 0)
    while True:
        if lock.acquire(blocking=False, token=token):
            return True
        held = client.get(key)
        if held and dead_predecessor(held.decode(errors="replace"), owner) \
                and client.eval(TAKEOVER, 1, key, held, token, int(lock.timeout * 1000)):
            lock.local.token = token.encode()
            log.warning("took over the lock of %s from an earlier run of the same task that died", key)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@contextmanager
def database_lock(client: redis.Redis, alias: str, owner: str, *, ttl: float, wait: float) -> Iterator[Lease]:
    """Hold the lock of `alias` for the duration of the block; `owner` is `<job> <task id>`."""
    key = KEY.format(alias)
    lock = client.lock(key, timeout=ttl, sleep=0.05, thread_local=False)
    if not _acquire(client, lock, key, owner, wait):
        holder = lock_owner(client, alias) or "another job (just finished)"
        raise JobLockedError(
            f"database {alias!r} is busy: {holder} still holds its lock after waiting {wait:g} s; "
            "try again when it has finished (raise DBJOBS_LOCK_WAIT to wait longer)"
        )
    lease = Lease(client, alias, lock, ttl)
    lease._heartbeat.start()
    try:
        yield lease
    finally:
        lease.release()
