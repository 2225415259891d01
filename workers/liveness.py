"""A live worker's jobs stay with it; a dead worker's jobs come back within minutes, and `result` says so.

Redis hands a delivered but unacknowledged message to another worker once it is older than the
visibility timeout (`DBJOBS_VISIBILITY_TIMEOUT`, 2 minutes). That timeout can be short because this
heartbeat, a thread in each worker's main process, re-dates the messages of the jobs the worker
holds every `interval` seconds: a running job of any length is never redelivered while its worker
lives, and a job whose whole worker was killed is handed to the next worker about one visibility
timeout after the last beat. The same beat keeps `dbjobs:alive:<task id>` (naming the worker) for
three intervals, so a client can tell a running job from one whose worker died.

The beat runs in the main process because only it knows the messages' delivery tags; a pool
process that dies is noticed by the main process, which hands its job back at once
(`task_reject_on_worker_lost`).
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from typing import Any

import redis
from celery.signals import task_received, worker_ready, worker_shutdown
from celery.worker import state
from kombu.exceptions import OperationalError

from dbjobs.settings import load_settings
from workers.config import CONNECT_TIMEOUT, SOCKET_TIMEOUT

log = logging.getLogger(__name__)
ALIVE_KEY = "dbjobs:alive:{}"
UNACKED_INDEX = "unacked_index"  # kombu's Redis transport default: delivery tag -> time of delivery


def heartbeat_interval(visibility_timeout: float) -> float:
    """Seconds between beats: several beats per visibility timeout, so a live job's message never gets old."""
    return max(0.5, visibility_timeout / 8)


def alive_ttl(interval: float) -> int:
    """How long one beat vouches for a job: three beats, so one missed beat is not a death."""
    return max(2, math.ceil(3 * interval))


def _held_requests() -> list[Any]:
    """The requests this worker holds (running, or reserved and waiting for a pool process)."""
    for _ in range(3):
        try:
            return list(state.reserved_requests)
        except RuntimeError:  # the set changed while being copied; try again
            continue
    return []


class Heartbeat:
    """The beat thread of one worker process."""

    def __init__(self, app: Any, broker: redis.Redis, backend: redis.Redis, interval: float, worker: str) -> None:
        self.app, self.broker, self.backend, self.interval, self.worker = app, broker, backend, interval, worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="dbjobs-heartbeat")

    def beat(self, requests: list[Any]) -> None:
        """Re-date the messages of `requests` (only those still unacknowledged) and vouch that they live."""
        if not requests:
            return
        now = time.time()
        tags = {tag: now for r in requests if (tag := getattr(getattr(r, "message", None), "delivery_tag", None))}
        if tags:
            self.broker.zadd(UNACKED_INDEX, tags, xx=True)
        pipe = self.backend.pipeline(transaction=False)
        for request in requests:
            pipe.set(ALIVE_KEY.format(request.id), self.worker, ex=alive_ttl(self.interval))
        pipe.execute()

    def sweep(self) -> None:
        """Hand back the messages of dead workers (older than the visibility timeout) now, not at kombu's next
        sweep (every 100 s in kombu 5.6): a killed worker's job is queued again within one interval of that.
        kombu's mutex lets one worker at a time do it."""
        with self.app.connection_for_write() as conn:
            conn.default_channel.qos.restore_visible(num=100, interval=1)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.beat(_held_requests())
                self.sweep()
            except (redis.RedisError, OSError, OperationalError) as exc:
                log.warning("heartbeat of the running jobs not sent: %s", exc)


_heartbeat: Heartbeat | None = None


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT)


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    settings = load_settings()
    worker = getattr(sender, "hostname", None) or socket.gethostname()
    broker = settings.broker_url or ""
    interval = heartbeat_interval(settings.visibility_timeout)
    _heartbeat = Heartbeat(sender.app, _client(broker), _client(settings.result_backend or broker), interval, worker)
    _heartbeat.thread.start()


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop.set()


@task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    """Vouch for a job from the moment it arrives, so a client never mistakes a new job for an orphan."""
    if _heartbeat is not None and request is not None:
        try:
            _heartbeat.beat([request])
        except redis.RedisError as exc:
            log.warning("heartbeat of %s not sent: %s", request.id, exc)


def worker_of(client: redis.Redis, task_id: str) -> str | None:
    """The worker that vouched for a job within the last beats, or None: no live worker holds it (`client` is
    the result backend's)."""
    value = client.get(ALIVE_KEY.format(task_id))
    return value.decode() if isinstance(value, bytes) else value


def orphan_notice(visibility_timeout: float) -> str:
    """What a client tells a user about a started job that no live worker holds: what happened, what comes next."""
    return (f"its worker stopped (no heartbeat for over {alive_ttl(heartbeat_interval(visibility_timeout))} s: "
            f"killed, crashed or cut off from Redis); Redis hands the job to the next free worker about "
            f"{visibility_timeout:g} s (DBJOBS_VISIBILITY_TIMEOUT) after that worker's last heartbeat, and it runs "
            "again from the start; make sure a worker is running (`dbjobs worker`)")
