"""One job per database at a time: a Redis lock per alias, short-lived and renewed while the job runs.

The lock expires after `ttl` seconds unless a heartbeat thread renews it, so a worker killed
with `kill -9` blocks the database for at most `ttl`, never forever. A second job on the same
alias waits for the lock up to `wait` seconds, then fails with a message naming the task that
holds it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from dbjobs.errors import JobLockedError

log = logging.getLogger(__name__)
KEY = "dbjobs:lock:{}"


def lock_owner(client: redis.Redis, alias: str) -> str | None:
    """`<job> <task id>` of whoever holds the alias's lock now, or None."""
    token = client.get(KEY.format(alias))
    return token.decode().rsplit(" ", 1)[0] if token else None


def _renew(lock: redis.lock.Lock, alias: str, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            lock.reacquire()
        except LockNotOwnedError:
            log.error("lost the lock of database %r (expired while Redis was unreachable?)", alias)
            return
        except RedisError as exc:
            log.warning("could not renew the lock of database %r: %s; retrying", alias, exc)


@contextmanager
def database_lock(client: redis.Redis, alias: str, owner: str, *, ttl: float, wait: float) -> Iterator[None]:
    """Hold the lock of `alias` for the duration of the block; `owner` is `<job> <task id>`."""
    lock = client.lock(KEY.format(alias), timeout=ttl, sleep=0.05, thread_local=False)
    if not lock.acquire(blocking=wait > 0, blocking_timeout=wait, token=f"{owner} {uuid.uuid4().hex}"):
        holder = lock_owner(client, alias) or "another job (just finished)"
        raise JobLockedError(
            f"database {alias!r} is busy: {holder} still holds its lock after waiting {wait:g} s; "
            "try again when it has finished (raise DBJOBS_LOCK_WAIT to wait longer)"
        )
    stop = threading.Event()
    heartbeat = threading.Thread(target=_renew, args=(lock, alias, ttl / 3, stop), daemon=True,
                                 name=f"dbjobs-lock-{alias}")
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        try:
            lock.release()
        except (LockError, RedisError) as exc:
            log.warning("could not release the lock of database %r: %s (it expires in %g s)", alias, exc, ttl)
