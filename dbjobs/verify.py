"""Verify backups where they are kept, and drill restores of them into a scratch database.

A checksum in a manifest proves nothing until someone re-reads the bytes: `verify_backups`
re-hashes every copy (this host's file, the object in Supabase Storage) against its manifest
and calls each ok, damaged (size or SHA-256 differ) or missing (the manifest is there, its dump
is not). The outcome is remembered per copy in `<backup dir>/.checksums/<id>.json`, which is
what `list-backups` shows as the checksum state.

A checksum says the bytes are the ones written, not that they restore. `drill` restores a
backup into a scratch alias through the public restore job (injected, so this module stays
below `dbjobs.jobs`), then counts every table's rows and takes the schema fingerprint, and
compares both with what the manifest recorded when the backup was taken.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from dbjobs.catalog import (
    Backup,
    Unreadable,
    find_backup,
    from_manifest,
    list_scanned,
    not_found,
    scan_readable,
)
from dbjobs.dburl import DatabaseURL
from dbjobs.engines.base import unavailable
from dbjobs.engines.postgres import USER_TABLES
from dbjobs.errors import BackupInvalidError, BackupNotFoundError, DbjobsError
from dbjobs.jobstate import DRILL_JOB, JobOutcome, record
from dbjobs.manifest import Manifest, is_backup_id
from dbjobs.pipeline import private_dir, verify_file, write_atomic
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.storage.base import Storage
from dbjobs.storage.local import LocalStorage

State = Literal["ok", "damaged", "missing"]
STATES: tuple[State, ...] = ("ok", "missing", "damaged")  # worst last
CHECKS_DIR = ".checksums"
VERIFY_JOB = "dbjobs.verify"
NEVER = "never checked"


@dataclass(frozen=True)
class CopyCheck:
    """The outcome of re-hashing one copy of a backup in one place."""

    where: str
    state: State
    checked_at: str
    detail: str = ""


@dataclass(frozen=True)
class Verified:
    """One backup and the check of each of its copies."""

    manifest: Manifest
    copies: tuple[CopyCheck, ...]

    @property
    def state(self) -> State:
        """The worst state of its copies: one damaged copy makes the backup damaged."""
        return max((c.state for c in self.copies), key=STATES.index)

    def to_dict(self) -> dict[str, object]:
        """JSON row of the verify result."""
        m = self.manifest
        return {"id": m.id, "database": m.database, "kind": m.kind, "finished_at": m.finished_at, "size": m.size,
                "state": self.state, "copies": [asdict(c) for c in self.copies]}


def _hash_stream(chunks: Iterator[bytes], manifest: Manifest, progress: ProgressCallback) -> None:
    """Size and SHA-256 of a streamed copy against the manifest; BackupInvalidError when they differ."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        progress(Progress("verify", min(size, manifest.size), manifest.size))
    if size != manifest.size:
        raise BackupInvalidError(f"size is {size} bytes, the manifest says {manifest.size} (truncated?)")
    if digest.hexdigest() != manifest.sha256:
        raise BackupInvalidError("SHA-256 does not match the manifest (the copy is corrupt)")


def check_copy(storage: Storage, manifest: Manifest, present: bool,
               progress: ProgressCallback = no_progress) -> CopyCheck:
    """Re-hash one copy where it is kept. A storage that cannot be read raises: that is not damage."""
    now = datetime.now(UTC).isoformat()
    if not present:
        return CopyCheck(storage.where, "missing", now, "the manifest is there but the dump is gone")
    path = storage.local_path(manifest)
    try:
        if path is not None:
            verify_file(path, manifest.size, manifest.sha256, progress)
        else:
            _hash_stream(storage.read_dump(manifest), manifest, progress)
    except BackupInvalidError as exc:
        return CopyCheck(storage.where, "damaged", now, str(exc).removeprefix(f"{manifest.file}: "))
    except FileNotFoundError:
        return CopyCheck(storage.where, "missing", now, "the dump disappeared while it was checked")
    return CopyCheck(storage.where, "ok", now)


Wanted = list[tuple[Storage, str, bool]]


def _wanted(storages: Sequence[Storage], ref: str | None, database: str | None) -> tuple[Wanted, list[Unreadable]]:
    """(storage, backup id, dump present) for every manifest asked about, orphans included (they are `missing`),
    and the storages that could not be listed (their copies are not checked, which the report says)."""
    if ref is not None and not is_backup_id(ref):
        found = find_backup(storages, ref)  # a file path: only that copy, wherever the file is
        assert found.path is not None
        return [(LocalStorage(found.path.parent), found.manifest.id, True)], []
    wanted = []
    scanned, unreadable = scan_readable(storages)
    for storage, scan in scanned:
        for backup_id in sorted(scan.manifests):
            if ref is not None and backup_id != ref:
                continue
            if ref is None and database is not None and not backup_id.startswith(database + "-"):
                continue
            wanted.append((storage, backup_id, backup_id in scan.dumps))
    if ref is not None and not wanted:
        raise not_found(ref, scanned, unreadable)
    return wanted, unreadable


def verify_backups(storages: Sequence[Storage], state_dir: Path, *, ref: str | None = None,
                   database: str | None = None,
                   progress: ProgressCallback = no_progress) -> tuple[list[Verified], list[str], list[Unreadable]]:
    """Re-hash every copy of every backup (or of `ref`, or of `database`'s) and remember each outcome.

    Returns the backups newest first with their copies, the manifests that could not be read, and the
    storages that could not be listed (the others are still checked).
    """
    copies: dict[str, tuple[Manifest, list[CopyCheck]]] = {}
    skipped: list[str] = []
    wanted, unreadable = _wanted(storages, ref, database)
    for storage, backup_id, present in wanted:
        try:
            manifest = from_manifest(storage, backup_id, storage.read_manifest(backup_id)).manifest
        except (DbjobsError, OSError) as exc:
            skipped.append(str(exc))
            continue
        if database is not None and ref is None and manifest.database != database:
            continue
        check = check_copy(storage, manifest, present, progress)
        copies.setdefault(backup_id, (manifest, []))[1].append(check)
    results = [Verified(m, tuple(c)) for m, c in copies.values()]
    results.sort(key=lambda v: (v.manifest.finished, v.manifest.id), reverse=True)
    for v in results:
        remember(state_dir, v)
    if ref is None:  # one backup checked says nothing of the alias's others: only a full pass is its outcome
        _record_per_alias(state_dir, results)
    if ref is None and database is None and not unreadable:  # an unlisted store's backups are not gone
        _forget_deleted(state_dir, {backup_id for _, backup_id, _ in wanted})
    return results, skipped, unreadable


def _forget_deleted(state_dir: Path, present: set[str]) -> None:
    """Drop the remembered checks of backups no storage holds any more (cleanup deleted them)."""
    for path in (state_dir / CHECKS_DIR).glob("*.json"):
        if path.stem not in present:
            path.unlink(missing_ok=True)


def _record_per_alias(state_dir: Path, results: Sequence[Verified]) -> None:
    """One `dbjobs.verify` outcome per alias checked: what `status` and the metrics report as the last verify."""
    by_alias: dict[str, list[Verified]] = {}
    for v in results:
        by_alias.setdefault(v.manifest.database, []).append(v)
    now = datetime.now(UTC).isoformat()
    for alias, checked in by_alias.items():
        bad = [f"{v.manifest.id} {v.state}" for v in checked if v.state != "ok"]
        record(state_dir, JobOutcome(VERIFY_JOB, alias, not bad, now, ", ".join(bad) or None))


def remember(state_dir: Path, verified: Verified) -> None:
    """Store the copies' outcomes beside the backups, keeping those of places not checked this time."""
    path = state_dir / CHECKS_DIR / f"{verified.manifest.id}.json"
    known = _read_states(path)
    known.update({c.where: asdict(c) for c in verified.copies})
    try:
        private_dir(path.parent)
        write_atomic(path, json.dumps(known, sort_keys=True).encode())
    except OSError:
        pass  # an unwritable state directory loses the memory of a check, never the check itself


def _read_states(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def checksum_state(state_dir: Path, backup: Backup) -> dict[str, object]:
    """What `list-backups` shows: the worst remembered state over the backup's copies, and when the oldest was checked.

    A copy never checked makes the backup `never checked` unless another copy is known damaged or missing.
    """
    known = _read_states(state_dir / CHECKS_DIR / f"{backup.manifest.id}.json")
    places = ([str(backup.path.parent)] if backup.path else []) + list(backup.remotes)  # each storage's `where`
    found = [known.get(where) for where in places]
    checked = [c for c in found if isinstance(c, dict) and c.get("state") in STATES]
    bad = [c for c in checked if c["state"] != "ok"]
    if bad:
        worst = max(bad, key=lambda c: STATES.index(c["state"]))
        return {"state": worst["state"], "verified_at": worst.get("checked_at"), "detail": worst.get("detail", "")}
    if not found or len(checked) < len(found):
        return {"state": NEVER, "verified_at": None, "detail": ""}
    return {"state": "ok", "verified_at": min(c.get("checked_at") or "" for c in checked), "detail": ""}


TABLES_SQL = {
    "postgresql": USER_TABLES,
    "mysql": "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
             "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
}


def live_row_counts(db: DatabaseURL) -> dict[str, int]:
    """Rows per table now, keyed like a manifest's `row_counts` (PostgreSQL names carry their schema, quoted)."""
    engine = db.create_engine(poolclass=NullPool)
    try:
        with engine.connect() as conn:
            names = [str(row[0]) for row in conn.execute(text(TABLES_SQL[db.engine]))]
            quote = conn.dialect.identifier_preparer.quote_identifier
            sql = {n: n if db.engine == "postgresql" else quote(n) for n in names}  # PG names come quoted
            return {n: int(conn.execute(text(f"SELECT count(*) FROM {sql[n]}")).scalar() or 0) for n in names}
    except OperationalError as exc:
        raise unavailable(db, exc) from None
    finally:
        engine.dispose()


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Every table whose rows differ from the manifest's, or that is missing or extra after the restore."""
    problems = []
    for table in sorted(expected.keys() | actual.keys()):
        if table not in actual:
            problems.append(f"table {table} is missing ({expected[table]} rows expected)")
        elif table not in expected:
            problems.append(f"table {table} is not in the backup's manifest ({actual[table]} rows)")
        elif expected[table] != actual[table]:
            problems.append(f"table {table} has {actual[table]} rows, the manifest says {expected[table]}")
    return problems


@dataclass
class DrillResult:
    """A restore drill: what was restored where, and each difference from the manifest (none when it passed)."""

    backup_id: str
    database: str
    into: str
    problems: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0
    schema: str = "not checked"
    restore: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Passed: restored, every row count and the schema fingerprint as recorded."""
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        """JSON result."""
        return {"backup_id": self.backup_id, "database": self.database, "into": self.into, "ok": self.ok,
                "problems": self.problems, "tables": self.tables, "rows": self.rows, "schema": self.schema,
                "restore": self.restore, "seconds": round(self.seconds, 3)}


Restore = Callable[[str, str], dict[str, Any]]
Fingerprint = Callable[[DatabaseURL], str]


def newest_full(storages: Sequence[Storage], database: str) -> Backup:
    """The newest full backup of `database`: what a scheduled drill restores."""
    backups, _ = list_scanned(scan_readable(storages)[0], database)  # a store that is down does not stop a drill
    for b in backups:
        if b.manifest.kind == "full":
            return b
    raise BackupNotFoundError(f"no full backup of {database!r} to drill (take one with `backup --database "
                              f"{database}`)")


def drill(backup: Backup, storages: Sequence[Storage], into: DatabaseURL, state_dir: Path, restore: Restore,
          fingerprint: Fingerprint, progress: ProgressCallback = no_progress) -> DrillResult:
    """Verify `backup`'s copies, restore it into `into` with `restore(id, alias)`, then compare counts and schema.

    Every failure, from a damaged copy to a restore error to a missing table, is a failed drill
    (recorded for `status`), never an exception: the drill's job is to find them.
    """
    m = backup.manifest
    start = time.monotonic()
    result = DrillResult(m.id, m.database, into.alias)
    try:
        verified, _, _ = verify_backups(storages, state_dir, ref=m.id, progress=progress)
        result.problems += [f"copy in {c.where} is {c.state}: {c.detail}" for v in verified for c in v.copies
                            if c.state != "ok"]
        if result.ok:
            result.restore = restore(m.id, into.alias)
            progress(Progress("drill-check"))
            actual = live_row_counts(into)
            result.tables, result.rows = len(actual), sum(actual.values())
            result.problems += compare_counts(m.row_counts, actual)
            result.schema = _compare_schema(m.schema_fingerprint, fingerprint(into), result.problems)
    except DbjobsError as exc:
        result.problems.append(str(exc))
    result.seconds = time.monotonic() - start
    record(state_dir, JobOutcome(DRILL_JOB, m.database, result.ok, datetime.now(UTC).isoformat(),
                                 "; ".join(result.problems) or None))
    return result


def _compare_schema(recorded: str | None, live: str, problems: list[str]) -> str:
    if recorded is None:
        return "not recorded in the manifest"
    if recorded != live:
        problems.append(f"schema fingerprint {live[:12]} differs from the manifest's {recorded[:12]}")
        return "differs"
    return "matches"
