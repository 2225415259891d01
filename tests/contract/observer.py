"""What a task told Redis while it ran: every state the result backend published and every event Flower gets.

Celery's Redis result backend PUBLISHes each state it stores on `celery-task-meta-<id>`, and task events
go out on the broker's `celeryev` fanout channel; this listener records both from outside the worker, as
Flower and a waiting client see them, so a test can say "PROGRESS with phase `restore` and bytes was
seen while it ran" rather than trusting the final result alone.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict
from typing import Any

import redis


class Observer:
    """Records the published states and events of every task, by task id, on one Redis server."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.states: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.failure: BaseException | None = None
        self.pubsub.psubscribe(**{"celery-task-meta-*": self._record, "*celeryev*": self._record})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.01, daemon=True, exception_handler=self._failed)
        deadline = time.monotonic() + 10
        while self.client.execute_command("PUBSUB", "NUMPAT") < 2:  # subscribed before the first task is sent
            assert time.monotonic() < deadline, "the observer could not subscribe"
            time.sleep(0.01)

    def _failed(self, exc: BaseException, *_: Any) -> None:
        self.failure = exc

    def _record(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        body = json.loads(message["data"])
        with self.lock:
            if channel.startswith("celery-task-meta-"):
                self.states[body["task_id"]].append(body)
            else:
                event = json.loads(base64.b64decode(body["body"])) if body.get("body") else {}
                if isinstance(event, dict) and event.get("uuid"):
                    self.events[event["uuid"]].append(event)

    def seen(self, task_id: str) -> list[dict[str, Any]]:
        """The states published for `task_id` so far, in order."""
        with self.lock:
            return list(self.states.get(task_id, ()))

    def seen_events(self, task_id: str) -> list[dict[str, Any]]:
        """The monitoring events of `task_id` so far, in order."""
        with self.lock:
            return list(self.events.get(task_id, ()))

    def close(self) -> None:
        """Stop listening."""
        self.thread.stop()
        self.thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()
