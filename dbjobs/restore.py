"""The restore job: verify, confirm, then replace the database all or nothing, by swap or in place.

Order matters: nothing touches the target until the backup's checksum, engine and dump header
are known good. The backup's file is opened once: it is verified and loaded from that descriptor
(a cleanup deleting it meanwhile changes nothing) and marked in use so cleanup skips it; its
bytes are checked as they stream (`dbjobs.dumpcheck`: header, trailer, the manifest's raw size).
Where the engine can (PostgreSQL, MariaDB 10.5+), the backup is loaded into a shadow database,
checked against the manifest and swapped in (dbjobs/swap.py): the old database becomes the
pre-restore copy, so no safety dump is taken and `undo_restore` swaps it back. Otherwise the
restore runs in place after a safety backup (a redelivered task reuses the one its killed first
attempt took): PostgreSQL in one transaction; SQLite stages its image in the backup directory,
checks it, and copies it in with the journaled backup API; MySQL, whose DDL commits implicitly,
is put back from the safety backup if the load fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from dbjobs.backup import run_backup
from dbjobs.catalog import Backup, find_request_backup
from dbjobs.dburl import DatabaseURL
from dbjobs.dumpcheck import check_header, checked_dump
from dbjobs.engines import connector_for
from dbjobs.engines.base import Connector, ShadowLoad, Staging
from dbjobs.errors import BackupInvalidError, ConfigError, ConfirmationRequired, RestoreError
from dbjobs.frames import FrameReader, parse_index
from dbjobs.inuse import reading
from dbjobs.manifest import Manifest
from dbjobs.pipeline import decompressed_open, verify_open
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.recipients import NO_KEYS, AgeKeys, Sealed, sealed
from dbjobs.swap import (
    Retention,
    SwapOutcome,
    copies_of,
    prune_copies,
    reopen_after_killed_swap,
    restore_by_swap,
    undo_swap,
)

TRANSACTIONAL = {"postgresql", "sqlite"}
DB_LOCK_WAIT = 900.0  # the Redis lock serializes jobs first; this waits only for a job Redis forgot
STRATEGIES = ("auto", "swap", "in-place")


@dataclass(frozen=True)
class RestoreResult:
    """What was restored where, how, and what can undo it (the pre-restore copy, or the safety backup)."""

    backup_id: str | None
    database: str
    safety_backup_id: str | None
    seconds: float
    strategy: str = "in-place"
    swap: SwapOutcome | None = None
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON result."""
        return {"backup_id": self.backup_id, "database": self.database, "strategy": self.strategy,
                "safety_backup_id": self.safety_backup_id, "seconds": round(self.seconds, 3),
                **(self.swap.to_dict() if self.swap else {}), **({"note": self.note} if self.note else {})}


def _chunks(backup: Backup, f: BinaryIO, progress: ProgressCallback, opened: Sealed | None) -> Iterable[bytes]:
    """The dump open as `f`, decrypted if `opened`, decompressed from its start and checked as it streams."""
    m = backup.manifest
    return checked_dump(decompressed_open(f, m.file, progress, m.raw_size, sealed=opened), m.engine, m.raw_size, m.id)


def _load(backup: Backup, f: BinaryIO, db: DatabaseURL, progress: ProgressCallback, opened: Sealed | None) -> None:
    m = backup.manifest
    staging = Staging(backup.path.parent if backup.path else Path("."), m.id, m.raw_size, m.row_counts,
                      m.extra.get("row_counts_exact", True) is not False,
                      before_copy=lambda: progress(Progress("restore", m.raw_size, m.raw_size)))
    connector_for(db).restore(_chunks(backup, f, progress, opened), same_database=m.database == db.alias,
                              staging=staging)


def _load_safety(safety: Backup, db: DatabaseURL, keys: AgeKeys) -> None:
    assert safety.path is not None
    with reading(safety.path) as f:
        _load(safety, f, db, no_progress, sealed(safety.manifest.id, safety.manifest.encryption, keys.identity_file))


def safety_request(request_id: str) -> str:
    """The request id of the safety backup a restore request takes: its retries find and reuse it."""
    return f"{request_id}:safety"


def _safety_backup(db: DatabaseURL, safety_dir: Path, backup_id: str, request_id: str | None,
                   keys: AgeKeys, progress: ProgressCallback) -> Backup:
    """The safety backup this request took before (a killed first attempt), or a new one.

    A retry must not back up what a killed attempt left: its first safety backup shows the
    database as it was before the restore began.
    """
    if request_id is not None:
        taken = find_request_backup(safety_dir, db.alias, safety_request(request_id))
        if taken is not None:
            return taken
    return run_backup(db, safety_dir, kind="safety", note=f"before restoring {backup_id}",
                      request_id=safety_request(request_id) if request_id else None,
                      recipients=keys.recipients,
                      progress=lambda p: progress(Progress("safety-backup", p.done, p.total))).backup


def choose_strategy(connector: Connector, wanted: str) -> tuple[str, str]:
    """`swap` or `in-place` for this database, and the note saying why a swap was not possible."""
    if wanted not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {wanted!r}")
    if wanted == "in-place":
        return wanted, ""
    blocker = connector.swap_blocker() if connector.exists() else "there is no database to swap out yet"
    if blocker is None:
        return "swap", ""
    if wanted == "swap":
        raise RestoreError(f"cannot restore by swap: {blocker}; nothing was changed (use --strategy in-place)")
    return "in-place", f"restored in place, with a safety backup: {blocker}" if connector.swaps else ""


def check_shadow(shadow: DatabaseURL, manifest: Manifest, jobs: int, counted: Mapping[str, int]) -> None:
    """The loaded shadow must hold the manifest's tables with their exact row counts, and its schema.

    The schema is reflected while the rows are counted: both only read the idle shadow. `counted`
    are the counts the load already took of the tables it finished (PostgreSQL's LoadedCounts).
    """
    from concurrent.futures import ThreadPoolExecutor

    from dbjobs.schema.snapshot import fingerprint

    with ThreadPoolExecutor(max_workers=1) as pool:
        schema = pool.submit(fingerprint, shadow) if manifest.schema_fingerprint else None
        counts = {**counted, **connector_for(shadow).row_counts(jobs, skip=counted)}
        loaded_fingerprint = schema.result() if schema else None
    if counts != manifest.row_counts:
        diff = sorted(set(counts) ^ set(manifest.row_counts)) or sorted(
            t for t in counts if counts[t] != manifest.row_counts[t])
        table = diff[0]
        raise RestoreError(f"the loaded copy of {manifest.id} differs from its manifest: table {table} has "
                           f"{counts.get(table, 'no')} rows, the manifest says {manifest.row_counts.get(table, 'none')}"
                           "; the target is unchanged")
    if loaded_fingerprint != manifest.schema_fingerprint:
        raise RestoreError(f"the loaded copy of {manifest.id} has another schema than its manifest records; "
                           "the target is unchanged")


def _swap_in(backup: Backup, f: BinaryIO, db: DatabaseURL, connector: Connector, work_dir: Path, jobs: int,
             request_id: str | None, retention: Retention, progress: ProgressCallback,
             opened: Sealed | None) -> SwapOutcome:
    manifest = backup.manifest

    def chunks() -> Iterable[bytes]:
        return _chunks(backup, f, progress, opened)

    def check(shadow: DatabaseURL) -> None:
        progress(Progress("check"))
        check_shadow(shadow, manifest, jobs, load.counted)

    index = None if opened else parse_index(manifest.extra.get("frames"), manifest.raw_size, manifest.size)
    load = ShadowLoad(chunks, manifest.id, work_dir, jobs, manifest.database == db.alias, check,
                      frames=FrameReader(f.fileno(), index, manifest.id) if index else None,
                      progress=lambda fed: progress(Progress("restore", fed, max(manifest.raw_size, fed))))
    return restore_by_swap(connector.swap_site(load), db.database, manifest.id, request_id, retention)


def pre_restore_copies(db: DatabaseURL) -> list[dict[str, object]]:
    """The pre-restore copies of `db` on its server, newest first (none for engines that restore in place).

    They are whole databases, not backup files: listed beside the backups so they are not forgotten.
    """
    connector = connector_for(db)
    if not connector.swaps:
        return []
    copies = copies_of(connector.swap_site(None), db.database)
    return [{"database": db.alias, "name": name, "set_aside_at": m.at, "replaced_by": m.backup_id,
             "note": m.note, "phase": m.phase}
            for name, m in sorted(copies.items(), key=lambda c: c[1].at, reverse=True)]


def prune_pre_restore_copies(db: DatabaseURL, retention: Retention, now: datetime, *, dry_run: bool) -> list[str]:
    """Apply the pre-restore retention rule to `db` (what `cleanup` does between restores)."""
    connector = connector_for(db)
    if not connector.swaps:
        return []
    return prune_copies(connector.swap_site(None), db.database, retention, now, dry_run=dry_run)


def undo_restore(db: DatabaseURL, copy: str | None = None) -> RestoreResult:
    """Swap the newest (or the named) pre-restore copy of `db` back in; the replaced database is kept as one."""
    start = time.monotonic()
    connector = connector_for(db)
    if not connector.swaps:
        raise RestoreError(f"{db.engine} restores in place: undo by restoring its safety backup; nothing was changed")
    with connector.exclusive(f"dbjobs.restore --undo (pid {os.getpid()})", wait=DB_LOCK_WAIT):
        outcome = undo_swap(connector.swap_site(None), db.database, copy)
    return RestoreResult(None, db.alias, None, time.monotonic() - start, "swap", outcome)


def run_restore(
    backup: Backup, db: DatabaseURL, safety_dir: Path, *, confirmed: bool,
    safety_backup: bool = True, progress: ProgressCallback = no_progress, keys: AgeKeys = NO_KEYS,
    strategy: str = "auto", request_id: str | None = None, jobs: int = 1, retention: Retention | None = None,
) -> RestoreResult:
    """Restore `backup` into `db`; on failure the database is as it was, and the error says so.

    An encrypted backup needs `keys.identity_file`, and is decrypted and checked in full before
    anything is touched; the safety backup is encrypted to `keys.recipients` like any other.
    `strategy` auto swaps where the database allows it and otherwise restores in place, saying why
    in the result's note. A `request_id` lets the re-run of a killed request complete its swap.
    """
    manifest = backup.manifest
    if manifest.engine != db.engine:
        raise BackupInvalidError(
            f"{manifest.id} is a {manifest.engine} backup; database {db.alias!r} is {db.engine}: refused"
        )
    assert backup.path is not None
    opened = sealed(manifest.id, manifest.encryption, keys.identity_file)
    with reading(backup.path) as f:
        verify_open(f, backup.path.name, manifest.size, manifest.sha256, progress, sealed=opened)
        check_header(decompressed_open(f, manifest.file, no_progress, manifest.size, sealed=opened), manifest.engine,
                     manifest.raw_size, manifest.id)
        if not confirmed:
            raise ConfirmationRequired(f"restoring {manifest.id} replaces everything in {db.alias!r}; confirm (--yes)")
        # The database's own lock, held for the whole restore (from reopening a target a killed swap left closed,
        # through the safety backup or the shadow's load, to the swap): no migration, undo or other restore of
        # this database can interleave, even if Redis forgot the job lock.
        with connector_for(db).exclusive(f"dbjobs.restore of {manifest.id} (pid {os.getpid()})", wait=DB_LOCK_WAIT):
            return _restore(backup, f, opened, db, safety_dir, safety_backup=safety_backup, progress=progress,
                            keys=keys, strategy=strategy, request_id=request_id, jobs=jobs, retention=retention)


def _restore(backup: Backup, f: BinaryIO, opened: Sealed | None, db: DatabaseURL, safety_dir: Path, *,
             safety_backup: bool, progress: ProgressCallback, keys: AgeKeys, strategy: str,
             request_id: str | None, jobs: int, retention: Retention | None) -> RestoreResult:
    manifest = backup.manifest
    start = time.monotonic()
    connector = connector_for(db)
    if connector.swaps:  # a swap killed while the target was closed: reopen it before connecting to it
        reopen_after_killed_swap(connector.swap_site(None), db.database)
    existing = connector.exists()
    if existing:
        connector.connect_check()
    chosen, note = choose_strategy(connector, strategy)
    if chosen == "swap":
        progress(Progress("restore", 0, manifest.raw_size))
        kept = (retention or Retention()) if safety_backup else Retention(keep=0)  # a drill keeps no copy
        outcome = _swap_in(backup, f, db, connector, safety_dir / f".restore-{db.alias}", jobs, request_id, kept,
                           progress, opened)
        return RestoreResult(manifest.id, db.alias, None, time.monotonic() - start, "swap", outcome)
    safety = None
    if safety_backup and existing:
        progress(Progress("safety-backup"))
        safety = _safety_backup(db, safety_dir, manifest.id, request_id, keys, progress)
    progress(Progress("restore", 0, manifest.raw_size))
    try:
        _load(backup, f, db, progress, opened)
    except Exception as exc:  # any failure (a bug, a time limit) leaves a half-loaded MySQL: put it back
        if db.engine in TRANSACTIONAL or safety is None:
            raise
        try:
            _load_safety(safety, db, keys)
        except Exception as undo:
            raise RestoreError(
                f"{exc}; putting back safety backup {safety.manifest.id} also failed ({undo}): restore it by hand"
            ) from None
        raise RestoreError(f"{exc}; the database was put back from safety backup {safety.manifest.id}") from None
    return RestoreResult(manifest.id, db.alias, safety.manifest.id if safety else None, time.monotonic() - start,
                         note=note)
