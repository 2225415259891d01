"""Retry patience is measured in time since the last success, so a restart of ~5 s is ridden out."""

from __future__ import annotations

from dbjobs.storage.retry import Patience, Tries


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def failures_until_giving_up(tries: Tries) -> int:
    count = 0
    while tries.again():
        count += 1
    return count


def test_failures_in_a_row_are_retried_for_the_window_with_doubling_capped_pauses():
    clock = Clock()
    tries = Tries(Patience(window=10, first=0.5, most=4), clock=lambda: clock.now, sleep=clock.sleep)
    assert failures_until_giving_up(tries) == 5  # pauses 0.5, 1, 2, 4, 4: 11.5 s > the 10 s window
    assert clock.now == 11.5 and tries.waited == 11.5


def test_progress_starts_the_window_again():
    clock = Clock()
    tries = Tries(Patience(window=6, first=1, most=4), clock=lambda: clock.now, sleep=clock.sleep)
    for _ in range(10):  # a link that fails twice after every success never runs out of patience
        assert tries.again() and tries.again()
        tries.succeeded()
    assert clock.now == 30 and tries.failures == 0 and tries.waited == 0


def test_pauses_longer_than_the_window_still_leave_the_least_tries():
    clock = Clock()
    tries = Tries(Patience(window=1, first=2, least=3), clock=lambda: clock.now, sleep=clock.sleep)
    assert tries.again() and tries.again() and not tries.again()  # 2 s pauses: past the window after one
