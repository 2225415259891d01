"""A local (or shared, mounted) directory as a storage: what `backup` writes and `list-backups` reads."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from dbjobs.engines.base import CHUNK
from dbjobs.errors import BackupNotFoundError
from dbjobs.inuse import in_use
from dbjobs.manifest import DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest, is_backup_id
from dbjobs.pipeline import PARTIAL_SUFFIX
from dbjobs.progress import ProgressCallback
from dbjobs.storage.base import Scan, attempt, receive, scan_names


def file_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in fixed-size pieces, so copies keep memory flat."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 4):
            yield chunk


STAGED = re.compile(r"^(?P<id>.+)\.restore-[0-9a-f]{8}$")  # an SQLite image a restore stages (engines/sqlite.py)


def left_by_an_unfinished_job(name: str) -> bool:
    """A hidden `.partial` of dbjobs' own naming (a dump, manifest or staged restore image of a backup id)."""
    if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)):
        return False
    inner = name[1 : -len(PARTIAL_SUFFIX)]
    staged = STAGED.match(inner)
    return (staged is not None and is_backup_id(staged["id"])) or any(
        inner.endswith(suffix) and is_backup_id(inner[: -len(suffix)]) for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX))


class LocalStorage:
    """Backups in one directory; listing is one `scandir`, no per-file `stat`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._prefix = str(directory)

    @property
    def where(self) -> str:
        """The directory, as the user configured it."""
        return str(self.directory)

    def local_path(self, manifest: Manifest) -> Path:
        """Where the dump of `manifest` is (or would be) in this directory."""
        return self.directory / manifest.file

    def scan(self) -> Scan:
        """Backup ids by the names in the directory (hidden `.partial` files are skipped by the id check)."""
        try:
            with os.scandir(self.directory) as entries:
                return scan_names(entry.name for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            return Scan(frozenset(), frozenset())

    def read_manifest(self, backup_id: str) -> bytes:
        """The manifest's bytes, or BackupNotFoundError."""
        try:
            fd = os.open(os.path.join(self._prefix, backup_id + MANIFEST_SUFFIX), os.O_RDONLY)
        except FileNotFoundError:
            raise BackupNotFoundError(f"no backup {backup_id!r} in {self.directory} (see `list-backups`)") from None
        try:  # raw reads: no buffered file object for a few kB, listing 10,000 stays well under 0.5 s
            parts = [os.read(fd, 1 << 16)]
            while len(parts[-1]) == 1 << 16:
                parts.append(os.read(fd, 1 << 16))
            return b"".join(parts)
        finally:
            os.close(fd)

    def read_manifests(self, backup_ids: Iterable[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """One after the other: local reads are fast and a thread pool would only contend for the GIL."""
        for backup_id in backup_ids:
            yield attempt(self.read_manifest, backup_id)

    def put(self, dump: Path, manifest: Manifest, progress: ProgressCallback) -> None:
        """Copy a backup in (a shared volume as the destination), verified like any download."""
        if dump.resolve() != self.local_path(manifest).resolve():
            receive(file_chunks(dump), manifest, self.directory, progress)

    def fetch(self, manifest: Manifest, directory: Path, progress: ProgressCallback) -> Path:
        """The dump's path: in place when `directory` is this one, otherwise a verified copy."""
        source = self.local_path(manifest)
        if directory.resolve() == self.directory.resolve():
            return source
        return receive(file_chunks(source), manifest, directory, progress)

    def read_dump(self, manifest: Manifest) -> Iterator[bytes]:
        """The dump file's bytes."""
        return file_chunks(self.local_path(manifest))

    def stale_partials(self, before: float) -> list[str]:
        """`.partial` files left by a killed backup or download: no live process holds their lock (the writer's
        flock, dropped by the kernel when it died), and not written since `before` (epoch seconds), which covers
        the instant between a writer creating its file and locking it."""
        try:
            with os.scandir(self.directory) as entries:
                return sorted(e.name for e in entries
                              if left_by_an_unfinished_job(e.name) and e.stat(follow_symlinks=False).st_mtime < before
                              and not in_use(Path(e.path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove_partials(self, names: Sequence[str]) -> None:
        """Unlink what `stale_partials` found (already gone is fine)."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._prefix, name))

    def in_use(self, backup_id: str) -> bool:
        """Whether a restore is reading this backup's file now (cleanup skips it)."""
        return in_use(self.directory / (backup_id + DUMP_SUFFIX))

    def delete(self, backup_ids: Sequence[str]) -> None:
        """Unlink each dump, then its manifest; missing files are already deleted."""
        for backup_id in backup_ids:
            for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._prefix, backup_id + suffix))
