"""The cleanup job: apply the retention policy to every storage this process sees.

Only complete backups (a valid manifest of this system and its file) are candidates, so a
stray file is never touched. The policy decides once over the merged catalog (this host's
directory and the shared remote store), and each doomed backup is deleted from every storage
that holds it, dump first, manifest last. Manifests left without their dump by an interrupted
deletion are finished off. A dry run changes nothing and explains every decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dbjobs.catalog import Backup, list_scanned, load, scan_readable
from dbjobs.errors import ConfirmationRequired, DbjobsError, StorageError
from dbjobs.gcpause import gc_paused
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.retention import Candidate, Decision, Rule, decide, emptied
from dbjobs.storage.base import Scan, Storage
from dbjobs.storage.local import LocalStorage

PARTIAL_GRACE = timedelta(minutes=1)  # a partial file nobody holds the lock of, untouched this long, is a dead job's

@dataclass
class CleanupResult:
    """What was (or, in a dry run, would be) deleted and kept, and why."""

    dry_run: bool
    rule: Rule
    deleted: list[dict[str, object]] = field(default_factory=list)
    kept: list[dict[str, object]] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    stale_partials: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    freed: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON result."""
        return {"dry_run": self.dry_run, "rule": self.rule.to_dict(), "deleted": self.deleted, "kept": self.kept,
                "freed_bytes": self.freed,
                "interrupted_deletions": self.interrupted, "stale_partials": self.stale_partials,
                "skipped": self.skipped, "emptied": self.emptied, "in_use": self.in_use,
                "unreadable": self.unreadable}


def _row(backup: Backup, decision: Decision) -> dict[str, object]:
    m = backup.manifest
    return {"id": m.id, "database": m.database, "kind": m.kind, "finished_at": m.finished_at, "size": m.size,
            "locations": backup.locations, "reasons": list(decision.reasons)}


def _orphans(storage: Storage, scan: Scan, database: str | None) -> list[str]:
    """Manifests without their dump that are valid manifests of this system (anything else is left alone)."""
    valid = []
    for backup_id in sorted(scan.orphans):
        if database is not None and not backup_id.startswith(database + "-"):
            continue
        try:
            backup = load(storage, backup_id)
        except (DbjobsError, OSError):
            continue
        if database is None or backup.manifest.database == database:
            valid.append(backup_id)
    return valid


def run_cleanup(storages: Sequence[Storage], rule: Rule, now: datetime, *, database: str | None = None,
                dry_run: bool = False, allow_empty: bool = False,
                progress: ProgressCallback = no_progress) -> CleanupResult:
    """Decide over every visible backup (of `database`, or all) and delete the doomed ones everywhere.

    A decision that leaves a database without any backup is refused before anything is deleted
    unless `allow_empty` (a dry run reports it in `emptied`).
    """
    with gc_paused():
        return _cleanup(storages, rule, now, database, dry_run, allow_empty, progress)


def _cleanup(storages: Sequence[Storage], rule: Rule, now: datetime, database: str | None, dry_run: bool,
             allow_empty: bool, progress: ProgressCallback) -> CleanupResult:
    progress(Progress("scan"))
    # A storage that cannot be listed (Supabase down) keeps its backups for the next cleanup; the others are
    # still cleaned, which is safe: a copy only there is one more than min-keep counted, never one fewer.
    scanned, unreadable = scan_readable(storages)
    backups, problems = list_scanned(scanned, database)
    by_id = {b.manifest.id: b for b in backups}
    decisions = decide((Candidate(b.manifest.id, b.manifest.database, b.manifest.finished, b.manifest.kind)
                        for b in backups), rule, now)
    result = CleanupResult(dry_run, rule, skipped=problems, emptied=[] if allow_empty else emptied(decisions),
                           unreadable=[u.to_dict() for u in unreadable])
    if result.emptied and not dry_run:
        raise ConfirmationRequired(f"these rules would delete every backup of {', '.join(result.emptied)}; "
                                   "nothing was deleted (pass --allow-empty to do it anyway)")
    for d in decisions:
        backup = by_id[d.candidate.id]
        (result.kept if d.keep else result.deleted).append(_row(backup, d))
        if not d.keep:
            result.freed += backup.manifest.size * len(backup.locations)
    doomed = {str(row["id"]) for row in result.deleted}
    busy = {i for i in doomed for s, _ in scanned if isinstance(s, LocalStorage) and s.in_use(i)}
    if busy:  # a restore is reading it: kept this time, the next cleanup decides again
        result.in_use = sorted(busy)
        result.deleted = [row for row in result.deleted if row["id"] not in busy]
        result.freed = sum(by_id[str(row["id"])].manifest.size * len(by_id[str(row["id"])].locations)
                           for row in result.deleted)
        doomed -= busy
    for storage, scan in scanned:
        orphans = _orphans(storage, scan, database)
        result.interrupted.extend(f"{i} ({storage.where})" for i in orphans)
        if dry_run:
            continue
        targets = sorted(doomed & scan.complete) + orphans
        progress(Progress("delete", 0, len(targets)))
        try:
            storage.delete(targets)
        except OSError as exc:
            raise StorageError(f"cannot delete backups in {storage.where}: {exc}; run cleanup again") from None
        progress(Progress("delete", len(targets), len(targets)))
    _sweep_partials(storages, now, dry_run, result)
    return result


def _sweep_partials(storages: Sequence[Storage], now: datetime, dry_run: bool, result: CleanupResult) -> None:
    """Remove the hidden `.partial` files killed jobs left in local directories (they hold whole dumps)."""
    for storage in storages:
        if isinstance(storage, LocalStorage):
            stale = storage.stale_partials((now - PARTIAL_GRACE).timestamp())
            result.stale_partials.extend(str(storage.directory / name) for name in stale)
            if not dry_run:
                storage.remove_partials(stale)
