"""The collector pause: nested and overlapping pauses (in several threads) resume it once, at the last end."""

from __future__ import annotations

import gc
import threading

from dbjobs.gcpause import gc_paused


def test_overlapping_pauses_in_two_threads_resume_only_when_both_end() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with gc_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    assert gc.isenabled()
    worker = threading.Thread(target=first)
    worker.start()
    first_in.wait(5)
    with gc_paused():  # began after the other thread's pause and outlives it
        second_in.set()
        first_out.wait(5)
        seen.append(gc.isenabled())
    worker.join(5)
    assert seen == [False]  # the other thread's end did not resume it under this one
    assert gc.isenabled()


def test_nested_pauses_and_a_collector_already_off() -> None:
    @gc_paused()
    def inner() -> bool:
        return gc.isenabled()

    with gc_paused():
        assert inner() is False
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: stays off
    finally:
        gc.enable()
