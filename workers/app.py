"""The Celery app: `celery -A workers.app worker|beat|flower` and the CLI's submitter.

Importing this module does not import the tasks (the worker loads `workers.tasks` itself), so
the CLI can submit by name and stay quick to start.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import after_task_publish, task_received

from dbjobs.errors import ConfigError
from dbjobs.settings import Settings, load_settings
from workers.config import RESULT_EXPIRES, celery_config

TASK_KEY = "dbjobs:task:{}"


def make_app(settings: Settings) -> Celery:
    """A Celery app for `settings`; the beat schedule is on in production mode."""
    if not settings.broker_url:
        raise ConfigError("DBJOBS_BROKER_URL is not set: workers, beat and Flower need a Redis broker "
                          "(e.g. redis://localhost:6379/0)")
    celery = Celery("dbjobs", include=["workers.tasks", "workers.liveness"])
    celery.conf.update(celery_config(settings))
    if settings.production:
        from beat_schedule import build_schedule

        celery.conf.beat_schedule = build_schedule(settings)
    return celery


def remember_task(task_id: str, name: str) -> None:
    """Record that a task id exists, so `result ID` can tell a queued task from an unknown id."""
    client = getattr(app.backend, "client", None)
    if client is not None:
        client.set(TASK_KEY.format(task_id), name, ex=int(RESULT_EXPIRES.total_seconds()))


def task_name(task_id: str) -> str | None:
    """The name of a task this app published or a worker received, or None for an unknown id."""
    client = getattr(app.backend, "client", None)
    name = client.get(TASK_KEY.format(task_id)) if client is not None else None
    return name.decode() if isinstance(name, bytes) else name


@after_task_publish.connect
def _published(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers and sender:
        remember_task(headers["id"], sender)


@task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    if request is not None:
        remember_task(request.id, request.name)


app = make_app(load_settings())
