"""Progress reports: what a long job tells its caller (CLI bar, Celery state, Flower).

Jobs call a plain callback so the library stays free of Celery; the worker adapts it to
`update_state` and the CLI to a progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Progress:
    """One report: the phase a job is in and, where known, bytes (or items) done of a total.

    `detail` is a sentence for the person waiting, when the phase alone would leave them guessing
    (what a job waiting for a lock waits for).
    """

    phase: str
    done: int = 0
    total: int | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form, the `meta` of the custom `PROGRESS` task state."""
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The callback for callers that do not watch progress."""



class Throttled:
    """A progress callback passing on at most one report per `interval` seconds, but always a new
    phase and a finished one.

    Remote callbacks (a Celery state update, a monitoring event) cost a round trip each; a
    fast job must not spend its time reporting.
    """

    def __init__(self, callback: ProgressCallback, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.callback = callback
        self.interval = interval
        self.clock = clock
        self.phase: str | None = None
        self.last = float("-inf")

    def __call__(self, p: Progress) -> None:
        now = self.clock()
        finished = p.total is not None and p.done >= p.total
        if p.phase != self.phase or finished or now - self.last >= self.interval:
            self.phase, self.last = p.phase, now
            self.callback(p)
