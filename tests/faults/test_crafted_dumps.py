"""Dumps crafted to pass the checksum (with a consistent manifest) but not backups: refused, nothing touched.

A manifest proves only that a file is the one it describes. An empty dump, a stray `SELECT 1;`,
a gigabyte of NUL bytes compressed to a few kilobytes, or a dump cut short at a statement
boundary must each be refused with a one-line error before the live database changes, on every
engine and on both paths (in the caller's process, and `restore --yes --wait` through a real worker on
the suite's Redis); the bomb must never be decompressed beyond what its manifest says (nor next to the
live database). What must not be lost: every row of the database as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dbjobs.catalog import Backup, find_backup
from dbjobs.errors import BackupInvalidError, RestoreError
from dbjobs.jobs import run_job
from dbjobs.pipeline import write_atomic, write_compressed
from dbjobs.progress import no_progress
from dbjobs.storage.local import LocalStorage
from tests.backup_support import backup_files, build_sample, db, mutate, raw_dump, settings_for, snapshot
from tests.celery_support import celery_env, flushed_redis, run_cli, start_worker

REDIS_DB = 3

GIB = 1 << 30
MIB = 1 << 20


def craft(backup: Backup, pieces: Callable[[bytes], Iterator[bytes]], *, raw_size: int | None = None) -> None:
    """Rewrite the backup's dump from `pieces(original)` (streamed) with a manifest that matches it."""
    original = raw_dump(backup)

    def produce(sink: Callable[[bytes], object]) -> None:
        for piece in pieces(original):
            sink(piece)

    written, _ = write_compressed(backup.path, produce, progress=no_progress, total=None)  # type: ignore[arg-type]
    manifest = dataclasses.replace(backup.manifest, size=written.size, sha256=written.sha256,
                                   raw_size=written.raw_size if raw_size is None else raw_size)
    write_atomic(backup.path.with_name(manifest.manifest_name), manifest.to_json().encode())  # type: ignore[union-attr]


def _nul(total: int, head: bytes = b"") -> Iterator[bytes]:
    yield head
    block = bytes(MIB)
    for _ in range(total // MIB):
        yield block


def _cut_at_statement(raw: bytes, engine: str) -> bytes:
    """The dump up to a clean boundary two thirds in: whole statements (MySQL), whole pages (SQLite)."""
    if engine == "mysql":
        return raw[: raw.rindex(b";\n", 0, len(raw) * 2 // 3) + 2]
    if engine == "sqlite":
        page = int.from_bytes(raw[16:18], "big")
        return raw[: (len(raw) * 2 // 3) // page * page]
    return raw[: len(raw) * 2 // 3]  # a pg_dump archive cut between its data blocks' bytes


CRAFTED: dict[str, tuple[Callable[[bytes, str], Iterator[bytes]], bool]] = {
    # name: (pieces of the crafted dump, whether its first bytes already refuse it before any safety backup)
    "empty": (lambda raw, engine: iter([b""]), True),
    "SELECT 1;": (lambda raw, engine: iter([b"SELECT 1;\n"]), True),
    "1 GiB of NUL": (lambda raw, engine: _nul(GIB), True),
    "truncated at a statement boundary": (lambda raw, engine: iter([_cut_at_statement(raw, engine)]), False),
}


Restorer = Callable[[str], str]  # a backup id -> the one-line message the refused restore gave


@contextlib.contextmanager
def in_process(url: str, backups: Path) -> Iterator[Restorer]:
    """The restore job run in the test's own process, as the CLI runs it without a broker."""
    def restore(backup_id: str) -> str:
        with pytest.raises((BackupInvalidError, RestoreError)) as refused:
            run_job("dbjobs.restore", settings_for(backups, main=url), {"backup": backup_id, "confirmed": True})
        return str(refused.value)
    yield restore


@contextlib.contextmanager
def through_a_worker(url: str, backups: Path) -> Iterator[Restorer]:
    """`cli.py restore ID --yes --wait` submitted to a real worker; the worker's own files live in a subfolder."""
    base = backups / "worker"
    base.mkdir()
    env = celery_env(base, flushed_redis(REDIS_DB), DBJOBS_DATABASES=json.dumps({"main": url}),
                     DBJOBS_BACKUP_DIR=str(backups))
    worker = start_worker(env, base, "crafted")
    worker.wait_for_log("initial schema snapshot of main")  # its catalog reads are done before the test compares

    def restore(backup_id: str) -> str:
        done = run_cli(env, base, "restore", backup_id, "--yes", "--wait")
        assert done.returncode == 1 and "submitted dbjobs.restore as task" in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
        return last.removeprefix("error: ")
    try:
        yield restore
    finally:
        worker.stop()
        flushed_redis(REDIS_DB)


PATHS = {"in-process": in_process, "worker": through_a_worker}


@pytest.mark.parametrize("path", ["in-process", pytest.param("worker", marks=pytest.mark.redis)])
@pytest.mark.parametrize("crafted", list(CRAFTED))
def test_crafted_dumps_are_refused_and_nothing_changes(db_url: str, tmp_path: Path, crafted: str, path: str) -> None:
    build_sample(db_url)
    settings = settings_for(tmp_path, main=db_url)
    result = run_job("dbjobs.backup", settings, {"database": "main"})
    backup = find_backup([LocalStorage(tmp_path)], result["id"])
    mutate(db_url)
    current = snapshot(db_url)
    pieces, refused_at_once = CRAFTED[crafted]
    craft(backup, lambda raw: pieces(raw, db(db_url).engine))

    with PATHS[path](db_url, tmp_path) as restore:
        files = backup_files(tmp_path)
        message = restore(result["id"])

    assert "\n" not in message and ("nothing was changed" in message or "unchanged" in message), message
    assert snapshot(db_url) == current, f"{crafted}: the database changed"
    if refused_at_once:
        assert backup_files(tmp_path) == files, f"{crafted}: refused only after a safety backup or a staged file"
    else:
        assert [f for f in backup_files(tmp_path) if f.startswith(".")] == [], "a staged image was left behind"


def test_a_bomb_behind_a_good_header_stops_at_the_manifest_size(sqlite_url: str, tmp_path: Path) -> None:
    """A manifest that understates the raw size: decompression stops there, nothing lands beside the database."""
    build_sample(sqlite_url)
    settings = settings_for(tmp_path / "backups", main=sqlite_url)
    result = run_job("dbjobs.backup", settings, {"database": "main"})
    backup = find_backup([LocalStorage(tmp_path / "backups")], result["id"])
    mutate(sqlite_url)
    current = snapshot(sqlite_url)
    craft(backup, lambda raw: itertools.chain([raw], _nul(GIB)), raw_size=len(raw_dump(backup)))

    with pytest.raises(BackupInvalidError, match=r"longer than the .* bytes its manifest says"):
        run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True})

    assert snapshot(sqlite_url) == current
    beside = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".dbjobs-lock"))  # the job's lock file
    assert beside == ["app.sqlite3", "backups"], "something was staged beside it"
    assert not any(p.name.startswith(".") and p.is_file() for p in (tmp_path / "backups").iterdir())
