"""How long a remote store keeps retrying: by time since the last success, not by a count of tries.

A count with short pauses gives up in a few seconds (four tries over 0.5 s doubling is 3.5 s),
while a Supabase restart takes about 5 s and a gateway can answer 502 for as long. Giving up
only after `window` seconds of failures in a row rides out such a restart, and a success
(bytes moved, a call answered) starts the window again, so a flaky link that keeps making
progress never runs out of patience.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

TRANSFER_WINDOW = 60.0  # moving a dump's bytes: worth waiting out a restart of the server
CALL_WINDOW = 10.0  # a listing or a manifest: a user is waiting at the prompt


@dataclass(frozen=True)
class Patience:
    """Retry failures in a row for `window` seconds (and at least `least` times), pausing `first` doubling to `most`."""

    window: float = TRANSFER_WINDOW
    first: float = 0.5
    most: float = 4.0
    least: int = 3

    def pause(self, failures: int) -> float:
        """The pause after the `failures`-th failure in a row."""
        return min(self.first * 2 ** (failures - 1), self.most)


@dataclass
class Tries:
    """The failures in a row of one operation, measured against its `Patience`."""

    patience: Patience
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    failures: int = 0
    since: float | None = field(default=None)

    def succeeded(self) -> None:
        """Progress was made: the next failure starts a new window."""
        self.failures, self.since = 0, None

    def again(self) -> bool:
        """Count a failure; pause and return True if it is worth another try, False to give up."""
        now = self.clock()
        if self.since is None:
            self.since = now
        self.failures += 1
        if self.failures >= self.patience.least and now - self.since >= self.patience.window:
            return False
        self.sleep(self.patience.pause(self.failures))
        return True

    @property
    def waited(self) -> float:
        """Seconds since the first failure in a row (0 when there is none)."""
        return 0.0 if self.since is None else self.clock() - self.since
