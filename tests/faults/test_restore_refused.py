"""A damaged or mismatched backup is refused before anything is touched: no safety backup, no change."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dbjobs.errors import BackupInvalidError, BackupNotFoundError, DbjobsError
from dbjobs.jobs import run_job
from tests.backup_support import backup_files, build_sample, mutate, settings_for, snapshot


def _flip_byte(dump: Path, manifest: Path) -> None:
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))


def _truncate(dump: Path, manifest: Path) -> None:
    dump.write_bytes(dump.read_bytes()[:-100])


def _drop_manifest(dump: Path, manifest: Path) -> None:
    manifest.unlink()


def _drop_file(dump: Path, manifest: Path) -> None:
    dump.unlink()


def _tamper(field: str, value: object) -> Callable[[Path, Path], None]:
    def change(dump: Path, manifest: Path) -> None:
        data = json.loads(manifest.read_text())
        data[field] = value
        manifest.write_text(json.dumps(data))

    return change


DAMAGE: dict[str, tuple[Callable[[Path, Path], None], type[DbjobsError], str]] = {
    "flipped byte": (_flip_byte, BackupInvalidError, "SHA-256 does not match"),
    "truncated": (_truncate, BackupInvalidError, "truncated"),
    "missing manifest": (_drop_manifest, BackupNotFoundError, "no backup"),
    "missing file": (_drop_file, BackupNotFoundError, "no backup"),
    "tampered sha256": (_tamper("sha256", "0" * 64), BackupInvalidError, "SHA-256 does not match"),
    "tampered size": (_tamper("size", 12), BackupInvalidError, "size is"),
    "malformed manifest": (_tamper("size", "big"), BackupInvalidError, "'size' is missing or malformed"),
}


def test_damaged_backups_are_refused_and_nothing_changes(db_url: str, tmp_path: Path) -> None:
    build_sample(db_url)
    pristine = tmp_path / "pristine"
    result = run_job("dbjobs.backup", settings_for(pristine, main=db_url), {"database": "main"})
    mutate(db_url)
    current = snapshot(db_url)

    for name, (damage, error, message) in DAMAGE.items():
        directory = tmp_path / name.replace(" ", "-")
        shutil.copytree(pristine, directory)
        dump, manifest = directory / f"{result['id']}.dump.zst", directory / f"{result['id']}.manifest.json"
        damage(dump, manifest)
        files = backup_files(directory)
        settings = settings_for(directory, main=db_url)

        with pytest.raises(error) as refused:
            run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True})

        assert message in str(refused.value), name
        assert "\n" not in str(refused.value)
        assert backup_files(directory) == files, f"{name}: a safety backup was taken or a file removed"
        assert snapshot(db_url) == current, f"{name}: the database changed"


def test_missing_manifest_beside_a_file_path_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    build_sample(sqlite_url)
    settings = settings_for(tmp_path, main=sqlite_url)
    result = run_job("dbjobs.backup", settings, {"database": "main"})
    Path(tmp_path / f"{result['id']}.manifest.json").unlink()

    with pytest.raises(BackupInvalidError, match="no manifest beside it"):
        run_job("dbjobs.restore", settings, {"backup": result["path"], "confirmed": True})


def test_backup_of_another_engine_is_refused(sqlite_url: str, pg_url: str, tmp_path: Path) -> None:
    build_sample(sqlite_url)
    build_sample(pg_url)
    mutate(pg_url)
    current = snapshot(pg_url)
    settings = settings_for(tmp_path, lite=sqlite_url, pg=pg_url)
    result = run_job("dbjobs.backup", settings, {"database": "lite"})
    files = backup_files(tmp_path)

    with pytest.raises(BackupInvalidError, match="is a sqlite backup; database 'pg' is postgresql: refused"):
        run_job("dbjobs.restore", settings, {"backup": result["id"], "database": "pg", "confirmed": True})

    assert snapshot(pg_url) == current
    assert backup_files(tmp_path) == files


def test_unconfirmed_restore_changes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    build_sample(sqlite_url)
    settings = settings_for(tmp_path, main=sqlite_url)
    result = run_job("dbjobs.backup", settings, {"database": "main"})
    mutate(sqlite_url)
    current, files = snapshot(sqlite_url), backup_files(tmp_path)

    with pytest.raises(DbjobsError, match="confirm"):
        run_job("dbjobs.restore", settings, {"backup": result["id"]})

    assert snapshot(sqlite_url) == current and backup_files(tmp_path) == files
