"""Finding backups in a directory: only files with a valid manifest count, newest first.

A bare dump, a `.partial` left by a crash, or a manifest whose file is missing is never listed
and never restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dbjobs.errors import BackupInvalidError, BackupNotFoundError
from dbjobs.manifest import DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest, is_backup_id, parse_manifest, request_token


@dataclass(frozen=True)
class Backup:
    """A complete backup: its manifest and where its file is."""

    manifest: Manifest
    path: Path

    def to_dict(self) -> dict[str, object]:
        """The listing's JSON row."""
        m = self.manifest
        return {"id": m.id, "finished_at": m.finished_at, "database": m.database, "engine": m.engine,
                "size": m.size, "sha256": m.sha256, "kind": m.kind, "location": str(self.path)}


def read_backup(manifest_path: Path) -> Backup:
    """Load one backup from its manifest; raise BackupInvalidError if it is not complete."""
    manifest = parse_manifest(manifest_path.read_bytes(), manifest_path.name)
    if manifest_path.name != manifest.manifest_name:
        raise BackupInvalidError(f"{manifest_path.name}: manifest id {manifest.id!r} does not match its name")
    path = manifest_path.with_name(manifest.file)
    if not path.is_file():
        raise BackupInvalidError(f"{manifest.id}: the manifest's file {manifest.file} is missing")
    return Backup(manifest, path)


def list_backups(directory: Path, database: str | None = None) -> tuple[list[Backup], list[str]]:
    """Complete backups in `directory` newest first, and one line per manifest or bare dump that was skipped."""
    backups: list[Backup] = []
    problems: list[str] = []
    if not directory.is_dir():
        return backups, problems
    for manifest_path in directory.glob("*" + MANIFEST_SUFFIX):
        try:
            backup = read_backup(manifest_path)
        except (BackupInvalidError, OSError) as exc:
            problems.append(str(exc))
            continue
        if database is None or backup.manifest.database == database:
            backups.append(backup)
    for dump in directory.glob("*" + DUMP_SUFFIX):
        if not dump.with_name(dump.name[: -len(DUMP_SUFFIX)] + MANIFEST_SUFFIX).is_file():
            problems.append(f"{dump.name}: no manifest beside it, so it is not a complete backup")
    backups.sort(key=lambda b: (b.manifest.finished, b.manifest.id), reverse=True)
    return backups, problems


def find_request_backup(directory: Path, database: str, request_id: str) -> Backup | None:
    """The complete backup of `database` that request `request_id` already took, if any.

    Only the few manifests whose name carries the request's token are read, so the check
    stays cheap however many backups the directory holds.
    """
    for manifest_path in directory.glob(f"{database}-*-{request_token(request_id)}{MANIFEST_SUFFIX}"):
        try:
            backup = read_backup(manifest_path)
        except (BackupInvalidError, OSError):
            continue
        if backup.manifest.extra.get("request_id") == request_id:
            return backup
    return None


def find_backup(directory: Path, ref: str) -> Backup:
    """Resolve a backup id (looked up in `directory`) or a path to a backup file or its manifest."""
    if is_backup_id(ref):
        manifest_path = directory / (ref + MANIFEST_SUFFIX)
        if not manifest_path.is_file():
            raise BackupNotFoundError(f"no backup {ref!r} in {directory} (see `list-backups`)")
        return read_backup(manifest_path)
    path = Path(ref)
    name = path.name
    for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX):
        if name.endswith(suffix) and is_backup_id(name[: -len(suffix)]):
            manifest_path = path.with_name(name[: -len(suffix)] + MANIFEST_SUFFIX)
            if not path.is_file():
                raise BackupNotFoundError(f"{ref}: no such file")
            if not manifest_path.is_file():
                raise BackupInvalidError(f"{ref}: no manifest beside it, so it is not a complete backup")
            return read_backup(manifest_path)
    raise BackupNotFoundError(
        f"{ref!r} is neither a backup id (alias-YYYYMMDDTHHMMSSZ-xxxxxx) nor a .dump.zst/.manifest.json file"
    )
