"""One Celery task per public job in `dbjobs.jobs.JOBS`, under the job's own name (`dbjobs.backup`, ...).

Each task resolves settings in the worker, takes the database lock the job needs, reports
progress as the custom `PROGRESS` state (and a `task-progress` event for Flower), and returns
the job's JSON result. User errors fail the task with their one-line message; only transient
connection errors are retried, with exponential backoff.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Task, states
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_ready

from dbjobs.errors import DatabaseUnavailableError, DbjobsError, JobTimeoutError, LockLostError
from dbjobs.jobs import JOBS, Job, locked_alias, run_job
from dbjobs.progress import Progress, ProgressCallback, Throttled
from dbjobs.settings import Settings, load_settings
from workers.app import app
from workers.config import CONNECT_TIMEOUT, PROGRESS_STATE, SOCKET_TIMEOUT
from workers.locks import Lease, database_lock, lock_owner

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5
TRANSIENT = (DatabaseUnavailableError, LockLostError, redis.ConnectionError, redis.TimeoutError)
MAX_RETRIES = 5
BACKOFF_MAX = 300


def backoff(retries: int) -> float:
    """Seconds before retry number `retries + 1`: 2, 4, 8, ... capped, with jitter so workers spread out."""
    return min(BACKOFF_MAX, 2 ** (retries + 1)) * random.uniform(0.8, 1.2)


def clean(exc: DbjobsError) -> DbjobsError:
    """The error without its chained causes or deep traceback: a result holds the one-line message only."""
    exc.__cause__ = exc.__context__ = None
    exc.__suppress_context__ = True
    return exc.with_traceback(None)


def _reporter(task: Task) -> Throttled:
    """Progress as task state and a `task-progress` event, from whichever thread of the job reports it.

    Celery keeps the current request in a thread-local stack, so `task.update_state()` in the thread
    that feeds pg_restore finds no task id. The request is bound here, when the task starts, and
    every report names it explicitly. A report that cannot be delivered is logged and dropped: a lost
    progress line must never fail an hour-long job.
    """
    request = task.request
    task_id, hostname = request.id, request.hostname
    lock = threading.Lock()

    def report(p: Progress) -> None:
        meta = p.to_dict()
        try:
            with lock:
                task.backend.store_result(task_id, meta, PROGRESS_STATE, request=request)
                with task.app.events.default_dispatcher(hostname=hostname) as dispatcher:
                    # `result` is the field Flower displays: while the task runs, it shows the progress
                    dispatcher.send("task-progress", uuid=task_id, retry=False, result=repr(meta), **meta)
        except Exception as exc:  # reporting is best effort, whatever went wrong
            log.warning("progress of %s not reported: %s: %s", task_id, type(exc).__name__, exc)

    return Throttled(report, PROGRESS_INTERVAL)


@functools.cache
def _redis(url: str) -> redis.Redis:
    """One client (and connection pool) per worker process; redis-py renews its pool after a fork."""
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT)


@contextmanager
def _locked(task: Task, job: Job, settings: Settings, kwargs: dict[str, Any],
            progress: ProgressCallback) -> Iterator[Lease | None]:
    """Hold the database lock `job` needs; a job that must wait for it says for whom (CLI and Flower show it)."""
    alias = locked_alias(job.name, settings, kwargs)
    if alias is None:
        yield None
        return
    client = _redis(settings.broker_url or "")
    holder = lock_owner(client, alias)
    if holder:
        progress(Progress("waiting", detail=f"waiting for {holder} on {alias!r}"))
    with database_lock(client, alias, f"{job.name} {task.request.id}", ttl=settings.lock_ttl,
                       wait=settings.lock_wait) as lease:
        yield lease


def _fenced(report: ProgressCallback, lease: Lease | None) -> ProgressCallback:
    """Progress that first checks the job still holds its lock: jobs report before each step, so one that lost
    it (Redis restarted empty, failed over) stops there instead of running beside the job that took it.

    A report that starts a phase or ends one (all of its total done) is a step's boundary, where the check
    asks Redis even if it did a moment ago: a copy or a swap follows such a report.
    """
    if lease is None:
        return report
    last: list[str | None] = [None]

    def fenced(p: Progress) -> None:
        boundary = p.phase != last[0] or (p.total is not None and p.done >= p.total)
        last[0] = p.phase
        lease.check(fresh=boundary)
        report(p)

    return fenced


def _earlier_success(task: Task) -> Any:
    """The stored result when this message is a redelivery of a request that already succeeded."""
    if not (task.request.delivery_info or {}).get("redelivered"):
        return None
    meta = task.backend.get_task_meta(task.request.id)
    return meta["result"] if meta["status"] == states.SUCCESS else None


def execute(task: Task, job: Job, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run `job` for `task` under its database lock; a redelivered request that already succeeded is not redone."""
    settings = load_settings()
    if job.accepts_request_id:
        kwargs = {"request_id": task.request.id, **kwargs}
    progress = _reporter(task)
    try:
        with _locked(task, job, settings, kwargs, progress) as lease:
            done = _earlier_success(task)
            return done if done is not None else run_job(job.name, settings, kwargs, _fenced(progress, lease))
    except SoftTimeLimitExceeded:
        raise JobTimeoutError(f"{job.name} was stopped near its time limit of {settings.task_time_limit:g} s "
                              "(DBJOBS_TASK_TIME_LIMIT); raise the limit for bigger databases") from None


def register(job: Job) -> Task:
    """The Celery task that runs `job`, named like the job so other services can `send_task` it."""

    @app.task(name=job.name, bind=True, max_retries=MAX_RETRIES, throws=(DbjobsError,))
    def run(self: Task, **kwargs: Any) -> dict[str, Any]:
        try:
            return execute(self, job, kwargs)
        except TRANSIENT as exc:
            failure = clean(exc) if isinstance(exc, DbjobsError) else exc
            try:
                raise self.retry(exc=failure, countdown=backoff(self.request.retries)) from None
            except Reject:  # the retry could not be queued (Redis away): the unacknowledged message comes back
                raise Reject(failure, requeue=True) from None
        except DbjobsError as exc:
            raise clean(exc) from None

    run.__doc__ = job.function.__doc__
    return run


TASKS: dict[str, Task] = {name: register(job) for name, job in JOBS.items()}


def initial_snapshots() -> None:
    """Start each database's schema history (SPEC: an initial snapshot on start); never fails the worker."""
    from dbjobs.schema.history import ensure_initial_snapshots

    try:
        outcome = ensure_initial_snapshots(load_settings())
    except Exception:
        log.exception("initial schema snapshots failed")
        return
    for alias, state in outcome.items():
        log.info("initial schema snapshot of %s: %s", alias, state)


@worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    threading.Thread(target=initial_snapshots, name="initial-snapshots", daemon=True).start()
