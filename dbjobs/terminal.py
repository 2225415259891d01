"""A dependency-free progress bar for the CLI: one redrawn line on stderr, only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from dbjobs.progress import Progress

WIDTH = 30


def human_size(n: float) -> str:
    """Bytes as a short human string (1.2 GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class ProgressBar:
    """Draws progress reports as `phase [#####-----] 42% 1.2 GiB / 2.9 GiB 85.3 MiB/s`."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.1) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self.drawn = False
        self.interval = interval
        self.last: tuple[str, float] = ("", float("-inf"))

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = p.total is not None and p.done >= p.total
        if p.phase == self.last[0] and not finished and now - self.last[1] < self.interval:
            return  # reports come every MiB; a terminal needs ten redraws a second at most
        if p.phase != self.last[0]:
            self.started = now  # the rate is the phase's own
        self.last = (p.phase, now)
        elapsed = now - self.started
        if p.total:
            frac = min(p.done / p.total, 1.0)
            filled = int(frac * WIDTH)
            bar = f"[{'#' * filled}{'-' * (WIDTH - filled)}] {frac:4.0%} {human_size(p.done)} / {human_size(p.total)}"
        else:
            bar = human_size(p.done) if p.done else ""
        rate = f" {human_size(p.done / elapsed)}/s" if p.done and elapsed > 0.2 else ""
        self.drawn = True  # first: a Ctrl-C during the write below must still find the line to end
        self.stream.write(f"\r\x1b[2K{p.phase:<14} {bar}{rate}")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line so the result prints below it."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
