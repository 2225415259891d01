"""Restore by swap, one design for every server engine: load a shadow, check it, swap it in.

Vocabulary (PostgreSQL and MariaDB use the same words, in code, results and docs):

- **target**: the database being restored. It keeps serving, untouched, until the swap.
- **shadow**: `<target>__shadow`, a new database the backup is loaded into and checked against
  the manifest (row count per table, schema fingerprint).
- **swap**: the short step that puts the shadow in the target's place and the old target aside,
  atomically (PostgreSQL: two `ALTER DATABASE ... RENAME` in one transaction; MariaDB: one
  multi-table `RENAME TABLE`). The target is unavailable only for this window.
- **pre-restore copy**: `<target>__pre_restore_<UTC time>`, the old target after a swap. It *is*
  the safety copy (no safety dump is taken); `restore --undo` swaps it back. Old copies are
  dropped by `Retention` (count and age).
- **marker**: a small JSON text the engine keeps with each shadow and pre-restore copy (PostgreSQL:
  the database comment) saying what it is, for which target, which backup and request, and
  which phase the swap is in. Markers live on the server, so the redelivered task of a killed
  worker finds them from any host.

A swap restore moves through phases, each recorded in the shadow's marker before its step:
`loading` (shadow created, being filled) -> `ready` (checked) -> `swapping` (the target's
sessions are being closed and the swap runs) -> gone (the shadow is the target; the old target
carries a `kept` pre-restore marker). `plan` reads what a killed run left and says how the next
run completes or reverts it; it is pure, so every kill point is tested without a server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from dbjobs.errors import ConfigError, RestoreError

SHADOW_SUFFIX = "__shadow"
PRE_RESTORE_INFIX = "__pre_restore_"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# The longest name we derive: stem + "__pre_restore_" + time + "_NN" (a same-second repeat).
_LONGEST_SUFFIX = len(PRE_RESTORE_INFIX) + len("20260101T000000Z") + 3
MARKER_PREFIX = "dbjobs:"

LOADING, READY, SWAPPING, KEPT = "loading", "ready", "swapping", "kept"
SHADOW, PRE_RESTORE = "shadow", "pre-restore"


def _stem(target: str, limit: int) -> str:
    """The target's name, shortened with a hash when a derived name would pass the engine's limit (bytes)."""
    if len(target.encode()) + _LONGEST_SUFFIX <= limit:
        return target
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    cut = target
    while len(cut.encode()) + 9 + _LONGEST_SUFFIX > limit:
        cut = cut[:-1]
    return f"{cut}_{digest}"


def shadow_name(target: str, limit: int) -> str:
    """The one shadow of `target`: fixed, so a redelivered task finds what a killed one left."""
    return _stem(target, limit) + SHADOW_SUFFIX


def pre_restore_name(target: str, when: datetime, limit: int, taken: Sequence[str] = ()) -> str:
    """A free name for the pre-restore copy set aside at `when` (`_2`, `_3`... for a same-second repeat)."""
    base = f"{_stem(target, limit)}{PRE_RESTORE_INFIX}{when.astimezone(UTC):{TIME_FORMAT}}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def is_derived_name(name: str, target: str, limit: int) -> bool:
    """Whether `name` is one of `target`'s shadow or pre-restore names (candidates; markers decide)."""
    stem = _stem(target, limit)
    return name == stem + SHADOW_SUFFIX or name.startswith(stem + PRE_RESTORE_INFIX)


@dataclass(frozen=True)
class Marker:
    """What a shadow or pre-restore copy is, kept with it on the server."""

    kind: str  # SHADOW or PRE_RESTORE
    target: str
    backup_id: str  # being loaded (shadow) or the one that replaced it (pre-restore copy)
    phase: str  # LOADING, READY, SWAPPING (shadow, or a copy being swapped back); KEPT (a copy at rest)
    at: str  # ISO time: shadow created / copy set aside
    request_id: str | None = None
    note: str = ""

    def to_text(self) -> str:
        """The stored form: recognisably ours, one line."""
        return MARKER_PREFIX + json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> Marker | None:
        """The marker stored as `text`, or None for anything else (a database comment of the user's)."""
        if not text or not text.startswith(MARKER_PREFIX):
            return None
        try:
            data = json.loads(text[len(MARKER_PREFIX):])
            marker = cls(**data)
        except (ValueError, TypeError):
            return None
        return marker if marker.kind in (SHADOW, PRE_RESTORE) and isinstance(marker.target, str) else None

    def at_phase(self, phase: str) -> Marker:
        """The same marker one phase on."""
        return replace(self, phase=phase)

    @property
    def when(self) -> datetime:
        """`at` as a datetime (UTC)."""
        return datetime.fromisoformat(self.at)


@dataclass(frozen=True)
class Plan:
    """What a run must do first about what earlier runs left, before (or instead of) loading."""

    reopen_target: bool = False  # a swap was killed after closing the target's sessions
    drop_shadow: bool = False  # a stale shadow: killed mid-load, or loaded for another backup
    resume_swap: bool = False  # the shadow holds this backup, checked: swap it in without reloading
    reset_copies: tuple[str, ...] = ()  # pre-restore copies left in `swapping` by a killed undo
    done_copy: str | None = None  # this request already swapped; its pre-restore copy


def plan(target: str, backup_id: str | None, request_id: str | None, found: Mapping[str, Marker | None],
         limit: int) -> Plan:
    """Decide how to complete or revert what earlier runs left for `target` (`backup_id` None: an undo).

    `found` holds the databases named like `target`'s shadow or copies, with their markers. A
    database under the shadow's name without our marker is someone else's: refused, never dropped.
    """
    shadow = shadow_name(target, limit)
    mine = {name: m for name, m in found.items() if m is not None and m.target == target}
    if shadow in found and shadow not in mine:
        raise RestoreError(f"a database named {shadow!r} exists and is not a dbjobs shadow of {target!r}; "
                           "rename or drop it, then restore again (the target is unchanged)")
    copies = {name: m for name, m in mine.items() if m.kind == PRE_RESTORE}
    if request_id is not None:
        done = [name for name, m in copies.items() if m.request_id == request_id and m.phase == KEPT]
        if done and shadow not in mine:
            return Plan(done_copy=done[0])
    stuck = tuple(sorted(name for name, m in copies.items() if m.phase == SWAPPING))
    marker = mine.get(shadow)
    closed = bool(stuck) or (marker is not None and marker.phase == SWAPPING)
    if marker is None:
        return Plan(reopen_target=closed, reset_copies=stuck)
    resumable = backup_id is not None and marker.backup_id == backup_id and marker.phase in (READY, SWAPPING)
    return Plan(reopen_target=closed, drop_shadow=not resumable, resume_swap=resumable, reset_copies=stuck)


@dataclass(frozen=True)
class Retention:
    """How many pre-restore copies of a target to keep, and for how long (they are whole databases)."""

    keep: int = 1
    days: float = 7.0

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 0:
            raise ConfigError(f"DBJOBS_PRE_RESTORE_KEEP must be a whole number of 0 or more, got {self.keep!r}")
        if self.days < 0:
            raise ConfigError(f"DBJOBS_PRE_RESTORE_DAYS must be 0 or more, got {self.days!r}")

    def expired(self, copies: Mapping[str, Marker], now: datetime) -> list[str]:
        """Copies to drop: all but the `keep` newest, and any older than `days`. Copies mid-swap are never dropped."""
        at_rest = sorted(((m.when, name) for name, m in copies.items() if m.phase == KEPT), reverse=True)
        cutoff = now - timedelta(days=self.days)
        return sorted(name for i, (when, name) in enumerate(at_rest) if i >= self.keep or when < cutoff)


@dataclass(frozen=True)
class SwapOutcome:
    """How a swap restore (or undo) ended: the copy set aside, the window the target was unavailable."""

    pre_restore: str
    swap_seconds: float
    resumed: bool = False  # a redelivered run completed what a killed one had loaded and checked
    already_done: bool = False  # a redelivered run found its swap done: nothing was redone
    dropped: tuple[str, ...] = ()  # older pre-restore copies dropped by the retention rule

    def to_dict(self) -> dict[str, object]:
        """JSON part of a restore result."""
        return {"pre_restore_copy": self.pre_restore, "swap_seconds": round(self.swap_seconds, 4),
                "resumed": self.resumed, "already_done": self.already_done, "dropped_copies": list(self.dropped)}


class SwapSite(ABC):
    """What an engine provides so `restore_by_swap` and `undo_swap` can drive it. Each step is one I/O action."""

    name_limit: ClassVar[int]

    @abstractmethod
    def found(self, target: str) -> dict[str, Marker | None]:
        """Databases named like `target`'s shadow or pre-restore copies (see `is_derived_name`), with markers."""

    @abstractmethod
    def create_shadow(self, target: str, shadow: str, marker: Marker) -> None:
        """Create the empty shadow, shaped like the target (owner, encoding, ...), carrying `marker`."""

    @abstractmethod
    def load(self, shadow: str) -> None:
        """Load the backup into the shadow."""

    @abstractmethod
    def check(self, shadow: str) -> None:
        """Compare the loaded shadow with the manifest; raise RestoreError on any difference."""

    @abstractmethod
    def mark(self, name: str, marker: Marker) -> None:
        """Store `marker` with database `name`."""

    @abstractmethod
    def swap(self, target: str, incoming: str, outgoing: str, marker: Marker) -> float:
        """Put `incoming` in the target's place and the target aside as `outgoing` carrying `marker`, atomically.

        What belongs to the target's name rather than its contents (its own comment, grants on the
        name) stays with the target: `incoming` arrives without its marker. Returns the seconds the
        target was unavailable. On failure the target is as it was (and open).
        """

    @abstractmethod
    def reopen(self, target: str) -> None:
        """Undo what a killed swap did to the target before its atomic step (its sessions closed)."""

    @abstractmethod
    def drop(self, name: str) -> None:
        """Drop database `name` (a shadow or a pre-restore copy; never anything else)."""


def copies_of(site: SwapSite, target: str) -> dict[str, Marker]:
    """`target`'s pre-restore copies on the server, with their markers."""
    return {name: m for name, m in site.found(target).items()
            if m is not None and m.kind == PRE_RESTORE and m.target == target}


def prune_copies(site: SwapSite, target: str, retention: Retention, now: datetime, *,
                 dry_run: bool = False) -> list[str]:
    """Drop the pre-restore copies of `target` the retention rule no longer keeps (only name them in a dry run)."""
    doomed = retention.expired(copies_of(site, target), now)
    if not dry_run:
        for name in doomed:
            site.drop(name)
    return doomed


def _recover(site: SwapSite, target: str, step: Plan, found: Mapping[str, Marker | None]) -> None:
    shadow = shadow_name(target, site.name_limit)
    if step.reopen_target:
        site.reopen(target)
    for name in step.reset_copies:
        site.mark(name, found[name].at_phase(KEPT))  # type: ignore[union-attr]  # plan only lists marked copies
    if step.drop_shadow:
        site.drop(shadow)


def reopen_after_killed_swap(site: SwapSite, target: str) -> bool:
    """Reopen a target a killed swap left closed, before anything else connects to it; True if it did.

    The rest of the killed run's leftovers (its shadow, a copy mid-undo) are settled by the next
    restore or undo (`plan`); this only ends the unavailability, which must not wait for them.
    """
    found = site.found(target)
    if plan(target, None, None, found, site.name_limit).reopen_target:
        site.reopen(target)
        return True
    return False


def _drop_quietly(site: SwapSite, shadow: str) -> None:
    """Drop a shadow after a failure; if even that fails, the next run drops it (`plan`), and the first error stands."""
    with contextlib.suppress(Exception):
        site.drop(shadow)


def _now() -> datetime:
    return datetime.now(UTC)


def restore_by_swap(site: SwapSite, target: str, backup_id: str, request_id: str | None, retention: Retention,
                    *, now: Callable[[], datetime] = _now) -> SwapOutcome:
    """Load `backup_id` into the shadow, check it, swap it in; a failure before the swap drops the shadow.

    First completes or reverts whatever a killed earlier run left (see `plan`). After the swap the
    retention rule drops older pre-restore copies of the target (the one just set aside too when
    it keeps none: then there is nothing to undo).
    """
    limit = site.name_limit
    shadow = shadow_name(target, limit)
    found = site.found(target)
    step = plan(target, backup_id, request_id, found, limit)
    if step.done_copy is not None:
        return SwapOutcome(step.done_copy, 0.0, already_done=True)
    _recover(site, target, step, found)
    marker = found[shadow] if step.resume_swap else Marker(SHADOW, target, backup_id, LOADING, now().isoformat(),
                                                            request_id)
    if not step.resume_swap:
        site.create_shadow(target, shadow, marker)
        try:
            site.load(shadow)
            site.check(shadow)
            marker = marker.at_phase(READY)
            site.mark(shadow, marker)
        except BaseException:
            _drop_quietly(site, shadow)
            raise
    assert marker is not None
    when = now()
    outgoing = pre_restore_name(target, when, limit, list(found))
    site.mark(shadow, marker.at_phase(SWAPPING))
    kept = Marker(PRE_RESTORE, target, backup_id, KEPT, when.isoformat(), request_id,
                  f"{target} before restoring {backup_id}")
    try:
        window = site.swap(target, shadow, outgoing, kept)
    except BaseException:
        _drop_quietly(site, shadow)
        raise
    dropped = prune_copies(site, target, retention, now())
    return SwapOutcome(outgoing, window, resumed=step.resume_swap, dropped=tuple(dropped))


def undo_swap(site: SwapSite, target: str, copy: str | None = None, *,
              now: Callable[[], datetime] = _now) -> SwapOutcome:
    """Swap a pre-restore copy (the newest unless `copy` names one) back in; the current target becomes a
    pre-restore copy itself.

    Nothing is dropped, so an undo can be undone the same way.
    """
    limit = site.name_limit
    found = site.found(target)
    step = plan(target, None, None, found, limit)
    _recover(site, target, step, found)
    copies = copies_of(site, target)
    if not copies:
        raise RestoreError(f"{target!r} has no pre-restore copy to swap back (see `status`); nothing was changed")
    if copy is not None and copy not in copies:
        raise RestoreError(f"{copy!r} is not a pre-restore copy of {target!r} (have: {', '.join(sorted(copies))}); "
                           "nothing was changed")
    incoming = copy or max(copies, key=lambda name: (copies[name].when, name))
    when = now()
    outgoing = pre_restore_name(target, when, limit, list(found))
    back = copies[incoming]
    site.mark(incoming, back.at_phase(SWAPPING))
    kept = Marker(PRE_RESTORE, target, back.backup_id, KEPT, when.isoformat(), None,
                  f"{target} before undoing the restore of {back.backup_id}")
    try:
        window = site.swap(target, incoming, outgoing, kept)
    except BaseException:
        site.mark(incoming, back)
        raise
    return SwapOutcome(outgoing, window)
