"""A no-op task for the Celery benchmark's anchor: the cost of a round trip with no job in it.

Registered only when a worker is started with `--include bench.noop_task`, never in the public registry.
"""

from workers.app import app


@app.task(name="bench.noop")
def noop() -> dict[str, bool]:
    """Nothing: what remains is Celery's dispatch cost."""
    return {"ok": True}
