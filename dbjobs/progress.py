"""Progress reports: what a long job tells its caller (CLI bar, Celery state, Flower).

Jobs call a plain callback so the library stays free of Celery; the worker adapts it to
`update_state` and the CLI to a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Progress:
    """One report: the phase a job is in and, where known, bytes (or items) done of a total."""

    phase: str
    done: int = 0
    total: int | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form, the `meta` of the custom `PROGRESS` task state."""
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The callback for callers that do not watch progress."""
