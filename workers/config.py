"""Celery configuration derived from dbjobs settings: pure data, so it is tested without a broker.

Each value is chosen for long, conflicting, must-not-be-lost jobs; README "Running with Celery"
explains them to operators.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dbjobs.settings import Settings

RESULT_EXPIRES = timedelta(days=7)
PROGRESS_STATE = "PROGRESS"  # the custom state of a running job: meta is `Progress.to_dict()`
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 10.0
RESULT_STORE_RETRIES = 40


def soft_time_limit(hard: float) -> float:
    """The soft limit leaves the job time to clean up (drop its partial file) before the hard kill:
    five minutes, or half of a limit shorter than ten minutes."""
    return hard - min(300.0, hard / 2)


def redacted_url(url: str) -> str:
    """A broker URL safe to print: the password (and user) replaced."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings for `settings` (broker and backend URLs included, so never log this dict)."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # A job is acknowledged only when it finished; a worker that dies puts it back in the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_deduplicate_successful_tasks": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_track_started": True,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": soft_time_limit(settings.task_time_limit),
        "result_expires": RESULT_EXPIRES,
        # A job that finishes while Redis restarts keeps trying to store its result (about five minutes)
        # instead of failing a job that succeeded.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_STORE_RETRIES,
        "result_backend_max_sleep_between_retries_ms": 10_000,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": CONNECT_TIMEOUT,
        "broker_transport_options": {
            # Short: the heartbeat (workers/liveness.py) re-dates the messages of running jobs, so only the
            # jobs of a dead worker grow older than this and are handed to another.
            "visibility_timeout": settings.visibility_timeout,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
        "redis_socket_connect_timeout": CONNECT_TIMEOUT,
        "redis_socket_timeout": SOCKET_TIMEOUT,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    }
