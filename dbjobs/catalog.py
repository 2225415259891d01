"""Finding backups in one or more storages: only valid manifests with their file count, newest first.

A bare dump, a `.partial` left by a crash, or a manifest whose file is missing is never listed
and never restored. With several storages (this host's directory and the shared Supabase
bucket) the same backup shows once, with every place that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dbjobs.errors import BackupInvalidError, BackupNotFoundError, DbjobsError
from dbjobs.gcpause import gc_paused
from dbjobs.manifest import DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest, is_backup_id, parse_manifest, request_token
from dbjobs.progress import ProgressCallback
from dbjobs.storage.base import Scan, Storage
from dbjobs.storage.local import LocalStorage


@dataclass(frozen=True)
class Backup:
    """A complete backup: its manifest, its file on this host (if here), and the remote stores that hold it."""

    manifest: Manifest
    path: Path | None
    remotes: tuple[str, ...] = ()

    @property
    def locations(self) -> list[str]:
        """Every place that holds the backup: the local file first."""
        return ([str(self.path)] if self.path else []) + list(self.remotes)

    def to_dict(self) -> dict[str, object]:
        """The listing's JSON row."""
        m = self.manifest
        return {"id": m.id, "finished_at": m.finished_at, "database": m.database, "engine": m.engine,
                "size": m.size, "sha256": m.sha256, "kind": m.kind, "location": ", ".join(self.locations),
                "locations": self.locations, "encrypted": m.encrypted}


def load(storage: Storage, backup_id: str) -> Backup:
    """Read and validate one backup's manifest from a storage (its file is known to exist)."""
    return from_manifest(storage, backup_id, storage.read_manifest(backup_id))


def from_manifest(storage: Storage, backup_id: str, raw: bytes) -> Backup:
    """Validate the manifest read for `backup_id` and place the backup in `storage`."""
    manifest = parse_manifest(raw, f"{storage.where}: {backup_id}{MANIFEST_SUFFIX}")
    if manifest.id != backup_id:
        raise BackupInvalidError(f"{backup_id}{MANIFEST_SUFFIX}: manifest id {manifest.id!r} does not match its name")
    path = storage.local_path(manifest)
    return Backup(manifest, path, () if path else (storage.where,))


def merge(found: Backup | None, more: Backup) -> Backup:
    """One backup seen in two storages: keep the first manifest, add the other's location."""
    if found is None:
        return more
    return replace(found, path=found.path or more.path, remotes=found.remotes + more.remotes)


def list_scanned(
    scanned: Sequence[tuple[Storage, Scan]], database: str | None = None
) -> tuple[list[Backup], list[str]]:
    """Complete backups in already-scanned storages newest first, and one line per manifest that was skipped."""
    with gc_paused():
        return _list_scanned(scanned, database)


def _list_scanned(scanned: Sequence[tuple[Storage, Scan]], database: str | None) -> tuple[list[Backup], list[str]]:
    merged: dict[str, Backup] = {}
    problems: list[str] = []
    for storage, scan in scanned:
        problems.extend(f"{i}: manifest without its file in {storage.where} (an interrupted deletion; "
                        "cleanup finishes it)" for i in sorted(scan.orphans))
        problems.extend(f"{i}{DUMP_SUFFIX}: no manifest beside it, so it is not a complete backup"
                        for i in sorted(scan.dumps - scan.manifests))
        ids = scan.complete if database is None else {i for i in scan.complete if i.startswith(database + "-")}
        for backup_id, raw in storage.read_manifests(ids):
            try:
                if isinstance(raw, Exception):
                    raise raw
                backup = from_manifest(storage, backup_id, raw)
            except (DbjobsError, OSError) as exc:
                problems.append(str(exc))
                continue
            if database is None or backup.manifest.database == database:
                merged[backup_id] = merge(merged.get(backup_id), backup)
    backups = sorted(merged.values(), key=lambda b: (b.manifest.finished, b.manifest.id), reverse=True)
    return backups, problems


@dataclass(frozen=True)
class Unreadable:
    """A storage that could not be listed (the remote store down, a refused key, a missing bucket)."""

    where: str
    error: DbjobsError

    def to_dict(self) -> dict[str, str]:
        """The listing's JSON row."""
        return {"where": self.where, "error": str(self.error)}


def scan_readable(storages: Sequence[Storage]) -> tuple[list[tuple[Storage, Scan]], list[Unreadable]]:
    """Scan every storage; one that fails is set aside with its error, so the others still count."""
    scanned, unreadable = [], []
    for storage in storages:
        try:
            scanned.append((storage, storage.scan()))
        except DbjobsError as exc:
            unreadable.append(Unreadable(storage.where, exc))
    return scanned, unreadable


def list_backups(storages: Sequence[Storage], database: str | None = None) -> tuple[list[Backup], list[str]]:
    """Complete backups in all `storages` (of `database`, or all) newest first, and the skipped manifests."""
    return list_scanned([(s, s.scan()) for s in storages], database)


def find_by_id(storages: Sequence[Storage], backup_id: str) -> Backup:
    """The backup `backup_id` with every readable storage that holds it complete.

    A storage that cannot be read (the remote store down) does not hide a backup another one
    holds; if none has it, BackupNotFoundError names what was searched and what could not be read.
    """
    scanned, unreadable = scan_readable(storages)
    found: Backup | None = None
    for storage, scan in scanned:
        if backup_id in scan.complete:
            found = merge(found, load(storage, backup_id))
    if found is None:
        raise not_found(backup_id, scanned, unreadable)
    return found


def not_found(backup_id: str, scanned: Sequence[tuple[Storage, Scan]],
              unreadable: Sequence[Unreadable]) -> BackupNotFoundError:
    """The error for a backup no readable storage holds: what was searched, and what could not be read."""
    where = ", ".join(s.where for s, _ in scanned) or "no readable storage"
    unread = "".join(f"; {u.where} could not be read: {u.error}" for u in unreadable)
    return BackupNotFoundError(f"no backup {backup_id!r} in {where} (see `list-backups`){unread}")


def find_request_backup(directory: Path, database: str, request_id: str) -> Backup | None:
    """The complete backup of `database` that request `request_id` already took, if any.

    Only the few manifests whose name carries the request's token are read, so the check
    stays cheap however many backups the directory holds.
    """
    local = LocalStorage(directory)
    token = f"-{request_token(request_id)}"
    for backup_id in local.scan().complete:
        if not (backup_id.startswith(database + "-") and backup_id.endswith(token)):
            continue
        try:
            backup = load(local, backup_id)
        except (DbjobsError, OSError):
            continue
        if backup.manifest.extra.get("request_id") == request_id:
            return backup
    return None


def find_backup(storages: Sequence[Storage], ref: str) -> Backup:
    """Resolve a backup id (looked up in `storages`) or a path to a backup file or its manifest."""
    if is_backup_id(ref):
        return find_by_id(storages, ref)
    path = Path(ref)
    name = path.name
    for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX):
        if name.endswith(suffix) and is_backup_id(name[: -len(suffix)]):
            backup_id = name[: -len(suffix)]
            if not path.is_file():
                raise BackupNotFoundError(f"{ref}: no such file")
            if not path.with_name(backup_id + MANIFEST_SUFFIX).is_file():
                raise BackupInvalidError(f"{ref}: no manifest beside it, so it is not a complete backup")
            if not path.with_name(backup_id + DUMP_SUFFIX).is_file():
                raise BackupInvalidError(f"{ref}: the manifest's file is missing")
            return load(LocalStorage(path.parent), backup_id)
    raise BackupNotFoundError(
        f"{ref!r} is neither a backup id (alias-YYYYMMDDTHHMMSSZ-xxxxxx) nor a .dump.zst/.manifest.json file"
    )


def ensure_local(backup: Backup, storages: Sequence[Storage], directory: Path, progress: ProgressCallback) -> Backup:
    """The backup with a verified file on this host, downloaded from the remote store that holds it if needed."""
    if backup.path is not None:
        return backup
    source = next(s for s in storages if s.where in backup.remotes)
    return replace(backup, path=source.fetch(backup.manifest, directory, progress))
