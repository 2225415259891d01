"""The execution paths of the contract suite: every way a user or another service runs a dbjobs job.

- `in-process`: `cli.py COMMAND --json` with no broker configured, the embedded default;
- `worker`: `cli.py COMMAND --wait --json` submitting to a real worker process over the tests' Redis;
- `send_task`: a bare Celery client (tests/contract/bare_client.py) that sends the public task name with
  JSON kwargs and imports nothing of dbjobs.

Each returns an `Outcome`: the job's JSON result and, for the two Celery paths, the task id, its final
state in Redis and the PROGRESS metas and `task-progress` events seen while it ran. Adding a path is
adding one function to `PATHS`.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.celery_support import PYTHON, run_cli, wait_until
from tests.contract.observer import Observer

SUBMITTED = re.compile(r"^submitted (\S+) as task ([0-9a-f-]{36});", re.MULTILINE)
# `status` exits 1 on a warning (a database of the matrix without a snapshot, say): still a report.
EXIT_OK = {"dbjobs.status": {0, 1}}


@dataclass(frozen=True)
class Request:
    """One job to run: the CLI's arguments and the same job as public task kwargs."""

    argv: list[str]
    kwargs: dict[str, Any]


@dataclass
class Outcome:
    """What running a job on a path produced."""

    result: dict[str, Any]
    task_id: str | None = None
    state: str | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


@dataclass
class Stack:
    """The module's servers: the environment of the CLI and the worker, the Redis they use, the listeners."""

    env: dict[str, str]
    base: Path
    broker: str
    observer: Observer
    client: subprocess.Popen[str]

    def final_state(self, task_id: str) -> str:
        """The state the result backend holds for `task_id` now."""
        raw = redis.Redis.from_url(self.broker).get(f"celery-task-meta-{task_id}")
        return json.loads(raw)["status"] if raw else "PENDING"

    def observed(self, name: str, task_id: str, result: dict[str, Any]) -> Outcome:
        """The outcome of a Celery task once the observer has heard it finish."""
        wait_until(lambda: any(s["status"] == "SUCCESS" for s in self.observer.seen(task_id)), 10,
                   lambda: f"{name} {task_id}: no SUCCESS published; seen {self.observer.seen(task_id)}")
        seen = self.observer.seen(task_id)
        return Outcome(result, task_id, self.final_state(task_id),
                       progress=[s["result"] for s in seen if s["status"] == "PROGRESS"],
                       events=[e for e in self.observer.seen_events(task_id) if e["type"] == "task-progress"],
                       states=[s["status"] for s in seen])


def in_process(stack: Stack, name: str, request: Request) -> Outcome:
    """`cli.py ... --json` with DBJOBS_BROKER_URL unset: the job runs in the CLI's own process."""
    env = {k: v for k, v in stack.env.items() if k != "DBJOBS_BROKER_URL"}
    done = run_cli(env, stack.base, *request.argv, "--json")
    assert done.returncode in EXIT_OK.get(name, {0}), done.stderr
    assert name == "dbjobs.status" or f"running {name} in this process" in done.stderr, done.stderr
    return Outcome(json.loads(done.stdout))


def worker_cli(stack: Stack, name: str, request: Request) -> Outcome:
    """`cli.py ... --wait --json` through the worker; the task id is read from the line printed on submission."""
    wait = [] if name == "dbjobs.status" else ["--wait"]  # status submits and waits on its own
    done = run_cli(stack.env, stack.base, *request.argv, *wait, "--json")
    assert done.returncode in EXIT_OK.get(name, {0}), done.stderr
    submitted = SUBMITTED.search(done.stderr)
    assert submitted and submitted.group(1) == name, done.stderr
    return stack.observed(name, submitted.group(2), json.loads(done.stdout))


def send_task(stack: Stack, name: str, request: Request) -> Outcome:
    """The bare Celery client sends the public name with the kwargs and waits for the result."""
    assert stack.client.stdin and stack.client.stdout
    stack.client.stdin.write(json.dumps({"name": name, "kwargs": request.kwargs}) + "\n")
    stack.client.stdin.flush()
    answer = json.loads(stack.client.stdout.readline())
    assert answer["leaked_modules"] == [], answer
    assert answer["state"] == "SUCCESS", answer
    outcome = stack.observed(name, answer["id"], answer["result"])
    assert answer["progress"] == [p for p in answer["progress"] if p in outcome.progress]  # the client heard them too
    return outcome


PATHS: dict[str, Callable[[Stack, str, Request], Outcome]] = {
    "in-process": in_process, "worker": worker_cli, "send_task": send_task}


def start_bare_client(broker: str, cwd: Path) -> subprocess.Popen[str]:
    """The bare client, from a directory outside the checkout so `import dbjobs` is not even tempting."""
    script = Path(__file__).with_name("bare_client.py")
    return subprocess.Popen([PYTHON, str(script), broker], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={"PATH": "/usr/bin:/bin"})
