"""One contract over every storage backend: a new backend is one more entry in BACKENDS.

Each backend is exercised through the Storage protocol only; the test reaches the stored objects
through `place(name)` (a file on disk for both the local directory and the Supabase test server)
to plant strays, corrupt a copy or remove a dump as a crash or a person would. What must hold:
a stored backup comes back byte for byte, a corrupt copy is never handed out, storing the same
backup again (a redelivered request) overwrites harmlessly, and deletes are idempotent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dbjobs.errors import BackupInvalidError, BackupNotFoundError
from dbjobs.progress import no_progress
from dbjobs.storage import LocalStorage, Storage, SupabaseStorage
from tests.support.backups import make_backup
from tests.support.fake_supabase import FakeSupabase

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
MB = 1 << 20


@dataclass
class Backend:
    """A storage under test and where its objects are on disk."""

    storage: Storage
    place: Callable[[str], Path]
    stop: Callable[[], None] = lambda: None


def local(tmp_path: Path) -> Backend:
    directory = tmp_path / "store"
    directory.mkdir()
    return Backend(LocalStorage(directory), lambda name: directory / name)


def supabase(tmp_path: Path) -> Backend:
    fake = FakeSupabase(tmp_path / "supabase")
    fake.start()
    store = SupabaseStorage(fake.url, fake.key, "backups", chunk_size=2 * MB, retry_delay=0.01)
    return Backend(store, lambda name: fake.object_path("backups", name), fake.stop)


BACKENDS: dict[str, Callable[[Path], Backend]] = {"local": local, "supabase": supabase}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.stop()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("size", [50_000, 7 * MB], ids=["small", "resumable"])
def test_put_scan_read_fetch_delete(backend, tmp_path, size):
    storage, source = backend.storage, tmp_path / "source"
    m = make_backup(source, "app", NOW, os.urandom(size))
    storage.put(source / m.file, m, no_progress)
    assert storage.scan().complete == {m.id}
    assert storage.read_manifest(m.id).decode() == m.to_json()

    path = storage.fetch(m, tmp_path / "here", no_progress)
    assert sha(path) == m.sha256
    assert (tmp_path / "here" / m.manifest_name).read_text() == m.to_json()

    storage.delete([m.id])
    storage.delete([m.id])  # idempotent
    assert storage.scan().manifests == storage.scan().dumps == frozenset()
    with pytest.raises(BackupNotFoundError):
        storage.read_manifest(m.id)


def test_storing_the_same_backup_again_overwrites_harmlessly(backend, tmp_path):
    m = make_backup(tmp_path / "source", "app", NOW, os.urandom(7 * MB))
    backend.storage.put(tmp_path / "source" / m.file, m, no_progress)
    backend.place(m.file).write_bytes(b"a stale, shorter copy")
    backend.storage.put(tmp_path / "source" / m.file, m, no_progress)  # a redelivered backup request
    assert sha(backend.place(m.file)) == m.sha256
    assert backend.storage.scan().complete == {m.id}


def test_scan_ignores_strays_and_folders_and_reports_manifests_without_dump(backend, tmp_path):
    source = tmp_path / "source"
    whole, broken = (make_backup(source, "app", NOW - timedelta(hours=h)) for h in (1, 2))
    for m in (whole, broken):
        backend.storage.put(source / m.file, m, no_progress)
    backend.storage.delete([])  # nothing to do is fine
    backend.place(broken.file).unlink()
    backend.place("notes.txt").write_text("stray")
    backend.place("older").mkdir()
    backend.place(f"older/{whole.file}").write_bytes(b"not at the root: not a backup here")
    scan = backend.storage.scan()
    assert scan.complete == {whole.id} and scan.orphans == {broken.id}


def test_a_corrupt_copy_is_refused_and_never_given_its_name(backend, tmp_path):
    m = make_backup(tmp_path / "source", "app", NOW, b"x" * 1000)
    backend.storage.put(tmp_path / "source" / m.file, m, no_progress)
    backend.place(m.file).write_bytes(b"y" * 1000)
    with pytest.raises(BackupInvalidError, match="corrupt"):
        backend.storage.fetch(m, tmp_path / "dl", no_progress)
    assert not any((tmp_path / "dl").iterdir())
