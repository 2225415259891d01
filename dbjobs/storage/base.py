"""The storage protocol: one small set of operations every place that holds backups implements.

A backup in a storage is two objects, `<id>.dump.zst` and `<id>.manifest.json`. The manifest is
always written last and deleted last: a crash while storing leaves a dump without a manifest
(never listed, overwritten by the retry), and a crash while deleting leaves a manifest without
its dump, which the catalog skips and the next cleanup finishes deleting. The reverse order
would strand an unlisted dump that nothing may ever remove (cleanup never touches files that
have no manifest).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dbjobs.engines.base import CHUNK
from dbjobs.errors import BackupInvalidError, DbjobsError, StorageError
from dbjobs.manifest import DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest, is_backup_id
from dbjobs.pipeline import HashingFile, atomic_file, fsync_dir, partial_path, private_dir, write_atomic
from dbjobs.progress import Progress, ProgressCallback


@dataclass(frozen=True)
class Scan:
    """Which backup ids a storage has a manifest and a dump for (names only; nothing opened)."""

    manifests: frozenset[str]
    dumps: frozenset[str]

    @property
    def complete(self) -> frozenset[str]:
        """Ids with both objects: the only ones that can be backups."""
        return self.manifests & self.dumps

    @property
    def orphans(self) -> frozenset[str]:
        """Manifests whose dump is gone: interrupted deletions, never listed, finished by cleanup."""
        return self.manifests - self.dumps


def scan_names(names: Iterable[str]) -> Scan:
    """Sort object or file names into manifests and dumps by well-formed backup id; ignore everything else."""
    manifests: set[str] = set()
    dumps: set[str] = set()
    for name in names:
        if name.endswith(MANIFEST_SUFFIX):
            ids, stem = manifests, name[: -len(MANIFEST_SUFFIX)]
        elif name.endswith(DUMP_SUFFIX):
            ids, stem = dumps, name[: -len(DUMP_SUFFIX)]
        else:
            continue
        if is_backup_id(stem):
            ids.add(stem)
    return Scan(frozenset(manifests), frozenset(dumps))


class Storage(Protocol):
    """A place that holds backups: a local directory or a Supabase Storage bucket."""

    @property
    def where(self) -> str:
        """Where this storage is, for listings and messages (never a secret)."""

    def local_path(self, manifest: Manifest) -> Path | None:
        """The dump as a file on this host, if this storage is a local directory."""

    def scan(self) -> Scan:
        """Which manifests and dumps exist."""

    def read_manifest(self, backup_id: str) -> bytes:
        """The raw manifest of `backup_id`; BackupNotFoundError if there is none."""

    def read_manifests(self, backup_ids: Iterable[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Each manifest's bytes, or the error that stopped reading it (remote stores read in parallel)."""

    def put(self, dump: Path, manifest: Manifest, progress: ProgressCallback) -> None:
        """Store a complete local backup: the dump first, the manifest last."""

    def fetch(self, manifest: Manifest, directory: Path, progress: ProgressCallback) -> Path:
        """A verified copy of the backup (dump and manifest) in local `directory`; the dump's path."""

    def read_dump(self, manifest: Manifest) -> Iterator[bytes]:
        """The stored dump's bytes as they are, streamed (verify re-hashes them where they are kept)."""

    def delete(self, backup_ids: Sequence[str]) -> None:
        """Delete backups, dumps first then manifests; deleting what is already gone is not an error."""


def attempt(read: Callable[[str], bytes], backup_id: str) -> tuple[str, bytes | Exception]:
    """`read(backup_id)`, with a storage or file error returned instead of raised (one bad manifest is skipped)."""
    try:
        return backup_id, read(backup_id)
    except (DbjobsError, OSError) as exc:
        return backup_id, exc


def _check_received(received: HashingFile, manifest: Manifest) -> None:
    checksum = "matches" if received.hash.hexdigest() == manifest.sha256 else "does not match"
    if received.size != manifest.size or checksum != "matches":
        raise BackupInvalidError(f"{manifest.id}: the copy received from storage is corrupt ({received.size} of "
                                 f"{manifest.size} bytes, SHA-256 {checksum}); nothing was restored")


def receive(chunks: Iterable[bytes], manifest: Manifest, directory: Path, progress: ProgressCallback) -> Path:
    """Write a backup arriving as `chunks` into `directory`, verified against its manifest, atomically.

    The dump is hashed as it is written and renamed into place only when its size and SHA-256
    match; then the manifest is written beside it, so the copy is a complete local backup.
    """
    directory = private_dir(directory)
    path = directory / manifest.file
    with atomic_file(path) as f:
        received = HashingFile(f)
        for chunk in chunks:
            received.write(chunk)
            progress(Progress("download", received.size, manifest.size))
        _check_received(received, manifest)
    write_atomic(directory / manifest.manifest_name, manifest.to_json().encode())
    return path


def receive_resuming(chunks_from: Callable[[int], Iterable[bytes]], manifest: Manifest, directory: Path,
                     progress: ProgressCallback) -> Path:
    """Like `receive`, for a download that can fail part-way: its hidden partial file is kept on a storage
    failure, and the next call hashes what it holds and asks `chunks_from(offset)` only for the rest.

    A corrupt result is deleted (and raises BackupInvalidError); two jobs fetching the same backup
    at once do not share the partial file: the second is refused until the first is done.
    """
    directory = private_dir(directory)
    path = directory / manifest.file
    tmp = partial_path(path)
    with os.fdopen(os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600), "r+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"{manifest.id} is being downloaded by another job right now; "
                               "try again when it is done") from None
        received = HashingFile(f)
        while piece := f.read(CHUNK * 4):
            received.hash.update(piece)
            received.size += len(piece)
        try:
            if received.size > manifest.size:
                raise BackupInvalidError(f"{manifest.id}: a partial download is longer than the backup")
            if received.size < manifest.size:
                for chunk in chunks_from(received.size):
                    received.write(chunk)
                    progress(Progress("download", received.size, manifest.size))
            _check_received(received, manifest)
            f.flush()
            os.fsync(f.fileno())
        except BackupInvalidError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    fsync_dir(directory)
    write_atomic(directory / manifest.manifest_name, manifest.to_json().encode())
    return path
