"""Submitting tasks by name and waiting for them: what the CLI (or any Python service) needs of Celery.

Only `workers.app` is imported, never `workers.tasks`: a submitter needs the names, not the code,
so it starts fast and works against workers that run a newer version.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import states
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from dbjobs.errors import BrokerUnavailableError, DbjobsError, TaskFailedError
from dbjobs.progress import Progress, ProgressCallback, no_progress
from workers.app import app, task_name
from workers.config import PROGRESS_STATE, redacted_url
from workers.liveness import orphan_notice, worker_of

# A submitter fails within seconds when Redis is down; workers keep Celery's patient defaults.
FAIL_FAST = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
app.conf.result_backend_transport_options = {"retry_policy": FAIL_FAST}
app.conf.result_backend_always_retry = False  # only workers wait out a Redis restart to store a result
Notice = Callable[[str], None]
IDLE_NOTICE = 5.0
RECONNECT_FOR = 60.0  # how long `--wait` keeps trying to reach Redis again (settings: DBJOBS_WAIT_RECONNECT)
RECONNECT_PAUSE = 1.0
WATCH_INTERVAL = 5.0  # how often a waiting client checks that the job's worker still lives


@dataclass(frozen=True)
class TaskStatus:
    """Where a task is: its state, its name if known, and its result once it succeeded."""

    id: str
    name: str | None
    state: str
    result: dict[str, Any] | None = None
    progress: Progress | None = None
    worker_lost: str | None = None  # set when a started job has no live worker: what happened and what comes next

    def to_dict(self) -> dict[str, Any]:
        """JSON form for `result ID --json`."""
        return {"id": self.id, "name": self.name, "state": self.state, "result": self.result,
                "progress": self.progress.to_dict() if self.progress else None, "worker_lost": self.worker_lost}


@contextmanager
def _broker() -> Iterator[None]:
    """Turn a dead or unreachable Redis into one clear line instead of a traceback or a hang."""
    try:
        yield
    except (OperationalError, RedisError, OSError, RuntimeError) as exc:
        cause = exc.__cause__ if isinstance(exc, RuntimeError) else exc
        if not isinstance(cause, (RedisError, OSError, OperationalError)):
            raise  # a RuntimeError that is not Celery's "cannot reconnect to the result store" is a bug
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise BrokerUnavailableError(
            f"cannot reach the broker {redacted_url(app.conf.broker_url)} ({reason}); "
            "start Redis or fix DBJOBS_BROKER_URL / DBJOBS_RESULT_BACKEND"
        ) from None


def submit(name: str, kwargs: dict[str, Any]) -> str:
    """Queue task `name` with JSON `kwargs` (aliases and options, never URLs); return its id."""
    with _broker():
        return app.send_task(name, kwargs=kwargs, retry_policy=FAIL_FAST).id


def _progress(meta: Any) -> Progress | None:
    if not isinstance(meta, dict) or "phase" not in meta:
        return None
    return Progress(str(meta["phase"]), int(meta.get("done") or 0), meta.get("total"), meta.get("detail"))


def _reason(error: Any) -> str:
    """The message of an exception as the result backend stores it (a dict) or as Celery rebuilt it."""
    if isinstance(error, dict):
        return " ".join(str(a) for a in error.get("exc_message") or ()) or str(error.get("exc_type"))
    return str(error)


def _failure(task_id: str, name: str | None, state: str, error: Any) -> DbjobsError:
    if isinstance(error, DbjobsError):
        return error
    what = f"task {task_id} ({name or 'unknown job'})"
    if state == states.REVOKED:
        return TaskFailedError(f"{what} was revoked before it finished")
    return TaskFailedError(f"{what} failed: {type(error).__name__}: {error}")


def status(task_id: str) -> TaskStatus:
    """The task's state now; raise the job's own error if it failed, TaskFailedError if the id is unknown."""
    with _broker():
        result = app.AsyncResult(task_id)
        state, info = result.state, result.info
        name = task_name(task_id)
    if state == states.PENDING and name is None:
        raise TaskFailedError(f"no task {task_id} is known here: it was never submitted, its result expired "
                              "(results are kept for 7 days), or Redis lost its data (restarted without "
                              "persistence); a job still running is known again at its next progress report")
    if state in states.PROPAGATE_STATES:
        raise _failure(task_id, name, state, info)
    if state == states.SUCCESS:
        return TaskStatus(task_id, name, state, result=info)
    return TaskStatus(task_id, name, state, progress=_progress(info), worker_lost=_worker_lost(task_id, state))


def _worker_lost(task_id: str, state: str) -> str | None:
    """For a started job that no live worker vouches for (workers/liveness.py): why, and what happens next."""
    client = getattr(app.backend, "client", None)
    if state not in (states.STARTED, PROGRESS_STATE) or client is None:
        return None
    with _broker():
        if worker_of(client, task_id) is not None:
            return None
    return orphan_notice(float(app.conf.broker_transport_options.get("visibility_timeout", 3600)))


def _wait_once(task_id: str, progress: ProgressCallback, notice: Notice | None, heard: list[bool],
               connected: Callable[[], None]) -> TaskStatus:
    """Follow the task's published states until it finishes (one subscription to the result backend)."""
    current = status(task_id)  # an unknown id fails here instead of waiting forever
    connected()
    if current.state in states.READY_STATES:
        return current
    heard[0] = heard[0] or current.state != states.PENDING

    def on_message(meta: dict[str, Any]) -> None:
        heard[0] = True
        if meta.get("status") == PROGRESS_STATE and (p := _progress(meta.get("result"))):
            progress(p)
        elif meta.get("status") == states.RETRY and notice:
            notice(f"task {task_id} will be retried: {_reason(meta.get('result'))}")

    result = app.AsyncResult(task_id)
    lost: list[str | None] = [None]
    try:
        with _broker():
            try:
                result.get(on_message=on_message, propagate=False, interval=0.05, timeout=IDLE_NOTICE)
            except ResultTimeout:
                if not heard[0] and notice:
                    notice(f"task {task_id} is still queued: no worker has taken it yet "
                           "(is one running? `dbjobs worker`)")
                while not _finished_within(result, on_message, WATCH_INTERVAL):
                    _watch_worker(task_id, lost, notice)
    finally:
        _release(result)
    return status(task_id)


def _release(result: AsyncResult) -> None:
    """Unsubscribe now, while the interpreter and Redis are up: left to `AsyncResult.__del__` at exit
    (after Ctrl-C, or with Redis gone) it prints a traceback."""
    backend, result.backend = result.backend, None
    with contextlib.suppress(Exception):
        backend.remove_pending_result(result)


def wait(task_id: str, progress: ProgressCallback = no_progress, notice: Notice | None = None,
         reconnect_for: float = RECONNECT_FOR) -> TaskStatus:
    """Block until the task finishes, passing its progress reports on; return it or raise its error.

    `notice` hears of retries (a database that is briefly unreachable), of a task that no worker
    has picked up after a while, and of a lost connection to Redis: waiting is resumed for up to
    `reconnect_for` seconds (the job itself runs on in its worker), then given up, naming the task.
    """
    heard = [False]
    lost_since: float | None = None

    def connected() -> None:
        nonlocal lost_since
        if lost_since is not None and notice:
            notice(f"reconnected to the broker; still waiting for task {task_id}")
        lost_since = None

    while True:
        try:
            return _wait_once(task_id, progress, notice, heard, connected)
        except BrokerUnavailableError as exc:
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                if notice:
                    notice(f"lost the connection to the broker while waiting for task {task_id}; "
                           f"retrying for up to {reconnect_for:g} s")
            if now - lost_since >= reconnect_for:
                raise BrokerUnavailableError(
                    f"gave up waiting for task {task_id} after {reconnect_for:g} s without the broker ({exc}); "
                    f"the job may still be running: `dbjobs result {task_id} --wait` follows it once Redis is back"
                ) from None
            time.sleep(RECONNECT_PAUSE)


def _finished_within(result: Any, on_message: Callable[[dict[str, Any]], None], seconds: float) -> bool:
    try:
        result.get(on_message=on_message, propagate=False, interval=0.05, timeout=seconds)
    except ResultTimeout:
        return False
    return True


def _watch_worker(task_id: str, lost: list[str | None], notice: Notice | None) -> None:
    """Tell a waiting user once when the job's worker dies, and once when another worker takes the job up."""
    now = status(task_id)
    if now.worker_lost and not lost[0] and notice:
        notice(f"task {task_id} ({now.name or 'unknown job'}): {now.worker_lost}")
    elif lost[0] and not now.worker_lost and notice:
        notice(f"task {task_id} was taken up again by a worker")
    lost[0] = now.worker_lost
