"""The backup job: check tools, stream the dump into a compressed, checksummed file, write the manifest.

The manifest is written last, atomically: until it exists the backup does not exist, so a job
killed at any moment leaves nothing that is listed or restored.
"""

from __future__ import annotations

import errno
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dbjobs import __version__
from dbjobs.catalog import Backup
from dbjobs.crypto import age_version, check_recipients
from dbjobs.dburl import DatabaseURL
from dbjobs.engines import connector_for
from dbjobs.errors import BackupError
from dbjobs.manifest import DUMP_SUFFIX, Manifest, new_backup_id, request_token
from dbjobs.pipeline import DEFAULT_LEVEL, private_dir, write_atomic, write_compressed
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.recipients import encryption_record
from dbjobs.schema.snapshot import fingerprint


@dataclass(frozen=True)
class BackupResult:
    """The finished backup, as a job result."""

    backup: Backup
    seconds: float

    @classmethod
    def of(cls, backup: Backup) -> BackupResult:
        """The result of a backup taken earlier, timed from its manifest."""
        m = backup.manifest
        return cls(backup, (m.finished - datetime.fromisoformat(m.started_at)).total_seconds())

    def to_dict(self) -> dict[str, object]:
        """JSON result: the manifest plus where the file is (never a URL or password)."""
        return {**self.backup.manifest.to_dict(), "path": str(self.backup.path), "seconds": round(self.seconds, 3)}


# What a full disk, a quota, a read-only mount or a file size limit look like: the storage's fault, not a bug.
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


@contextmanager
def _write_errors(directory: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise BackupError(f"cannot write the backup to {directory}: {exc.strerror}; nothing was kept") from None


def expected_size(alias: str, directory: Path) -> int | None:
    """The raw size of the alias's newest backup here: the best estimate of the next dump's size (a database's
    size on disk counts indexes and free space a dump does not carry), or None for a first backup."""
    from dbjobs.catalog import list_backups
    from dbjobs.storage.local import LocalStorage

    if not directory.is_dir():
        return None
    backups, _ = list_backups([LocalStorage(directory)], alias)
    return backups[0].manifest.raw_size if backups else None


def run_backup(
    db: DatabaseURL, output_dir: Path, *, progress: ProgressCallback = no_progress,
    kind: str = "full", note: str = "", level: int = DEFAULT_LEVEL, request_id: str | None = None,
    recipients: Sequence[str] = (),
) -> BackupResult:
    """Back up `db` into `output_dir`; return the complete backup or raise a DbjobsError (no file left).

    A `request_id` is recorded in the manifest and fixes the id's token, so a re-run of the same
    request can find this backup (`catalog.find_request_backup`). With `recipients` (age public
    keys) the backup is encrypted to them as it is written; no key that can read it is needed here.
    """
    connector = connector_for(db)
    progress(Progress("check"))
    tools = connector.tool_versions()
    if recipients:
        tools["age"] = age_version()
        check_recipients(recipients)
    server_version = connector.server_version()
    total = expected_size(db.alias, output_dir) or connector.size_bytes()
    try:
        directory = private_dir(output_dir)
    except OSError as exc:
        raise BackupError(f"cannot create backup directory {output_dir}: {exc.strerror}") from None
    started = datetime.now(UTC)
    backup_id = new_backup_id(db.alias, started, request_token(request_id) if request_id else secrets.token_hex(3))
    path = directory / (backup_id + DUMP_SUFFIX)
    with _write_errors(directory):
        written, row_counts = write_compressed(path, connector.dump, level=level, threads=connector.compress_threads,
                                               progress=progress, total=total, recipients=recipients,
                                               cuts=None if recipients else connector.frame_cuts())
    try:
        schema_fingerprint = fingerprint(db)
        finished = datetime.now(UTC)
        manifest = Manifest(
            id=backup_id, database=db.alias, engine=db.engine, server_version=server_version,
            started_at=started.isoformat(), finished_at=finished.isoformat(), file=path.name,
            size=written.size, raw_size=written.raw_size, sha256=written.sha256, compression="zstd",
            compression_level=level, tools=tools, schema_fingerprint=schema_fingerprint, row_counts=row_counts,
            dbjobs_version=__version__, kind=kind, note=note,
            extra={**({"request_id": request_id} if request_id else {}),
                   **({"frames": written.frames} if written.frames else {}),
                   **({} if connector.counts_exact else {"row_counts_exact": False})},
            encryption=encryption_record(tuple(recipients), written.compressed_size, written.compressed_sha256)
            if recipients else None,
        )
        with _write_errors(directory):
            write_atomic(directory / manifest.manifest_name, manifest.to_json().encode())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return BackupResult(Backup(manifest, path), (finished - started).total_seconds())
