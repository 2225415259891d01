"""The engine-agnostic swap restore: names, markers, the recovery plan, retention, and every kill point.

`Server` below is an in-memory model of a database server's names, contents and markers (the
engines' real swaps are tested against PostgreSQL in tests/integration and tests/faults). A
kill is modelled like kill -9: from the chosen step on, nothing more happens, not even cleanup.
What must never be lost: the target always holds either its old contents or the backup's, and
after the next run it holds the backup's with the old contents kept as a pre-restore copy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbjobs.errors import RestoreError
from dbjobs.swap import (
    KEPT,
    LOADING,
    PRE_RESTORE,
    READY,
    SHADOW,
    SWAPPING,
    Marker,
    Retention,
    SwapSite,
    is_derived_name,
    plan,
    pre_restore_name,
    reopen_after_killed_swap,
    restore_by_swap,
    shadow_name,
    undo_swap,
)

T0 = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
LIMIT = 63


class Killed(BaseException):
    """The process died: nothing after this point runs."""


class Server(SwapSite):
    """Databases as name -> [contents, marker, open]; `kill_at` names the step at which the process dies."""

    name_limit = LIMIT

    def __init__(self, target: str, contents: str) -> None:
        self.dbs: dict[str, list] = {target: [contents, None, True]}
        self.backup = "backup-contents"
        self.kill_at: str | None = None
        self.dead = False
        self.fail_at: str | None = None
        self.steps: list[str] = []
        self.clock = T0

    def now(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def restart(self) -> None:
        """The next run: a new process, nothing killed."""
        self.kill_at, self.dead = None, False

    def _step(self, name: str) -> None:
        self.steps.append(name)
        if self.dead or self.kill_at == name:  # once killed, not even cleanup runs
            self.dead = True
            raise Killed(name)
        if self.fail_at == name:
            self.fail_at = None
            raise RestoreError(f"{name} failed")

    def found(self, target: str) -> dict[str, Marker | None]:
        return {n: Marker.parse(d[1]) for n, d in self.dbs.items() if is_derived_name(n, target, LIMIT)}

    def create_shadow(self, target: str, shadow: str, marker: Marker) -> None:
        self._step("create")
        self.dbs[shadow] = ["", marker.to_text(), True]

    def load(self, shadow: str) -> None:
        self.dbs[shadow][0] = "half"
        self._step("load")
        self.dbs[shadow][0] = self.backup

    def check(self, shadow: str) -> None:
        self._step("check")
        if self.dbs[shadow][0] != self.backup:
            raise RestoreError("shadow differs from the manifest")

    def mark(self, name: str, marker: Marker) -> None:
        self._step(f"mark-{marker.phase}")
        self.dbs[name][1] = marker.to_text()

    def swap(self, target: str, incoming: str, outgoing: str, marker: Marker) -> float:
        self.dbs[target][2] = False
        try:
            self._step("swap")
        except RestoreError:  # a swap that fails (not killed) reopens the target, as the engines do
            self.dbs[target][2] = True
            raise
        old, new = self.dbs.pop(target), self.dbs.pop(incoming)
        self.dbs[outgoing] = [old[0], marker.to_text(), True]
        self.dbs[target] = [new[0], old[1], True]
        return 0.01

    def reopen(self, target: str) -> None:
        self._step("reopen")
        self.dbs[target][2] = True

    def drop(self, name: str) -> None:
        self._step(f"drop-{name}")
        del self.dbs[name]

    def copies(self, target: str) -> dict[str, str]:
        return {n: d[0] for n, d in self.dbs.items() if n.startswith(target + "__pre_restore_")}


def _restore(server: Server, request: str = "req-1", keep: int = 1):  # type: ignore[no-untyped-def]
    return restore_by_swap(server, "app", "app-20261201T220000Z-abcdef", request, Retention(keep=keep),
                           now=server.now)


STEPS = ["create", "load", "check", "mark-ready", "mark-swapping", "swap"]


@pytest.mark.parametrize("kill_at", STEPS)
@pytest.mark.parametrize("same_request", [True, False], ids=["redelivered", "new-run"])
def test_a_kill_at_any_step_is_completed_by_the_next_run(kill_at: str, same_request: bool) -> None:
    server = Server("app", "old-contents")
    server.kill_at = kill_at
    with pytest.raises(Killed):
        _restore(server)
    assert server.dbs["app"][0] in ("old-contents", "backup-contents")  # never half
    server.restart()

    outcome = _restore(server, "req-1" if same_request else "req-2")

    assert server.dbs["app"] == ["backup-contents", None, True]
    assert list(server.copies("app").values()) == ["old-contents"]
    assert outcome.pre_restore in server.copies("app")
    assert shadow_name("app", LIMIT) not in server.dbs


def test_a_redelivered_run_after_the_swap_redoes_nothing() -> None:
    server = Server("app", "old-contents")
    first = _restore(server)
    server.steps.clear()

    again = _restore(server)

    assert again.already_done and again.pre_restore == first.pre_restore and server.steps == []


@pytest.mark.parametrize("fail_at", ["load", "check", "mark-ready", "swap"])
def test_a_failure_before_the_swap_completes_drops_the_shadow_and_keeps_the_target(fail_at: str) -> None:
    server = Server("app", "old-contents")
    server.fail_at = fail_at
    with pytest.raises(RestoreError):
        _restore(server)
    assert server.dbs == {"app": ["old-contents", None, True]}


def test_undo_swaps_back_and_can_itself_be_undone() -> None:
    server = Server("app", "old-contents")
    _restore(server)

    undo_swap(server, "app", now=server.now)
    assert server.dbs["app"][0] == "old-contents"
    assert sorted(server.copies("app").values()) == ["backup-contents"]

    undo_swap(server, "app", now=server.now)
    assert server.dbs["app"][0] == "backup-contents"


def test_a_killed_undo_is_reset_and_the_target_reopened_by_the_next_run() -> None:
    server = Server("app", "old-contents")
    _restore(server)
    server.kill_at = "swap"
    with pytest.raises(Killed):
        undo_swap(server, "app", now=server.now)
    assert server.dbs["app"][2] is False
    server.restart()

    undo_swap(server, "app", now=server.now)

    assert server.dbs["app"] == ["old-contents", None, True]


def test_undo_without_a_copy_changes_nothing() -> None:
    server = Server("app", "old-contents")
    with pytest.raises(RestoreError, match="no pre-restore copy"):
        undo_swap(server, "app", now=server.now)
    assert server.dbs == {"app": ["old-contents", None, True]}


def test_retention_after_a_swap_drops_older_copies() -> None:
    server = Server("app", "v0")
    for i in range(3):
        server.backup = f"v{i + 1}"
        outcome = _restore(server, f"req-{i}", keep=2)
    assert sorted(server.copies("app").values()) == ["v1", "v2"]
    assert outcome.dropped and server.dbs["app"][0] == "v3"


def test_keep_zero_keeps_no_copy() -> None:
    server = Server("app", "v0")
    _restore(server, keep=0)
    assert server.copies("app") == {} and server.dbs["app"][0] == "backup-contents"


def test_a_foreign_database_under_the_shadow_name_is_refused_and_kept() -> None:
    server = Server("app", "old-contents")
    server.dbs["app__shadow"] = ["theirs", "a comment of the user's", True]
    with pytest.raises(RestoreError, match="not a dbjobs shadow"):
        _restore(server)
    assert server.dbs["app__shadow"][0] == "theirs" and server.dbs["app"][0] == "old-contents"


def _m(kind: str, phase: str, backup: str = "b1", request: str | None = "r1", target: str = "app") -> Marker:
    return Marker(kind, target, backup, phase, T0.isoformat(), request)


@pytest.mark.parametrize(("found", "backup", "expected"), [
    ({}, "b1", dict()),
    ({"app__shadow": _m(SHADOW, LOADING)}, "b1", dict(drop_shadow=True)),
    ({"app__shadow": _m(SHADOW, READY)}, "b1", dict(resume_swap=True)),
    ({"app__shadow": _m(SHADOW, READY)}, "b2", dict(drop_shadow=True)),
    ({"app__shadow": _m(SHADOW, SWAPPING)}, "b1", dict(reopen_target=True, resume_swap=True)),
    ({"app__shadow": _m(SHADOW, SWAPPING)}, "b2", dict(reopen_target=True, drop_shadow=True)),
    ({"app__pre_restore_x": _m(PRE_RESTORE, KEPT)}, "b1", dict(done_copy="app__pre_restore_x")),
    ({"app__pre_restore_x": _m(PRE_RESTORE, KEPT, request="r0")}, "b1", dict()),
    ({"app__pre_restore_x": _m(PRE_RESTORE, SWAPPING)}, None,
     dict(reopen_target=True, reset_copies=("app__pre_restore_x",))),
    ({"app__pre_restore_x": _m(PRE_RESTORE, KEPT, target="other")}, "b1", dict()),
])
def test_plan(found: dict, backup: str | None, expected: dict) -> None:
    step = plan("app", backup, "r1", found, LIMIT)
    assert {k: v for k, v in vars(step).items() if v} == expected


def test_marker_round_trip_and_foreign_comments() -> None:
    marker = _m(SHADOW, LOADING)
    assert Marker.parse(marker.to_text()) == marker
    for text in (None, "", "our production db", "dbjobs:{not json", 'dbjobs:{"kind": "x"}'):
        assert Marker.parse(text) is None


@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=80),
       st.integers(0, 9))
def test_derived_names_fit_the_limit_and_are_recognised(target: str, repeats: int) -> None:
    taken: list[str] = []
    for _ in range(repeats + 1):
        taken.append(pre_restore_name(target, T0, LIMIT, taken))
    for name in [shadow_name(target, LIMIT), *taken]:
        assert len(name.encode()) <= LIMIT and name != target
        assert is_derived_name(name, target, LIMIT)
    assert len(set(taken)) == len(taken)


def test_retention_rule() -> None:
    copies = {f"c{i}": Marker(PRE_RESTORE, "app", "b", KEPT, (T0 - timedelta(days=i)).isoformat()) for i in range(5)}
    copies["busy"] = Marker(PRE_RESTORE, "app", "b", SWAPPING, (T0 - timedelta(days=30)).isoformat())
    assert Retention(keep=2, days=30).expired(copies, T0) == ["c2", "c3", "c4"]
    assert Retention(keep=9, days=2.5).expired(copies, T0) == ["c3", "c4"]
    assert Retention(keep=0).expired(copies, T0) == ["c0", "c1", "c2", "c3", "c4"]


def test_a_target_left_closed_is_reopened_before_anything_else() -> None:
    server = Server("app", "old-contents")
    server.kill_at = "swap"
    with pytest.raises(Killed):
        _restore(server)
    server.restart()
    assert server.dbs["app"][2] is False

    assert reopen_after_killed_swap(server, "app") is True

    assert server.dbs["app"] == ["old-contents", None, True]
    assert reopen_after_killed_swap(Server("app", "x"), "app") is False
