"""Another service's view of dbjobs: a plain Celery client that knows only the public task names.

It imports celery and nothing of dbjobs (it checks that before every answer), sends each request it
reads on stdin (`{"name": ..., "kwargs": ...}`, one JSON line) with `send_task`, waits for the result
and writes `{"id", "state", "result", "progress"}` as one JSON line: `progress` holds every PROGRESS
meta the client heard while it waited. One process serves a whole test module, so the matrix pays
Celery's import time once.

Usage: python bare_client.py REDIS_URL
"""

import json
import sys

from celery import Celery


def main(url: str) -> None:
    """Serve requests until stdin closes."""
    app = Celery("another-service", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    for line in sys.stdin:
        request = json.loads(line)
        result = app.send_task(request["name"], kwargs=request["kwargs"])
        heard = []

        def on_message(meta, heard=heard):
            if meta.get("status") == "PROGRESS":
                heard.append(meta.get("result"))

        value = result.get(timeout=request.get("timeout", 120), propagate=False, on_message=on_message)
        state = result.state
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("dbjobs", "workers"))
        answer = {"id": result.id, "state": state, "progress": heard, "leaked_modules": leaked,
                  "result": value if state == "SUCCESS" else repr(value)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
