"""list-backups: complete backups only, newest first, with skipped files reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dbjobs.jobs import run_job
from tests.backup_support import build_sample, run_cli, settings_for


def _populate(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three complete backups of two aliases plus every kind of debris a crash or a person can leave."""
    directory = tmp_path / "backups"
    first, second = f"sqlite:///{tmp_path / 'a.sqlite3'}", f"sqlite:///{tmp_path / 'b.sqlite3'}"
    build_sample(first, customers=3, orders=3)
    build_sample(second, customers=3, orders=3)
    settings = settings_for(directory, first=first, second=second)
    ids = [run_job("dbjobs.backup", settings, {"database": alias})["id"] for alias in ("first", "second", "first")]
    (directory / f".{ids[0]}.dump.zst.partial").write_bytes(b"half")
    shutil.copy(directory / f"{ids[0]}.dump.zst", directory / "first-20200101T000000Z-abcdef.dump.zst")
    (directory / "first-20200101T000000Z-bbbbbb.manifest.json").write_text("{not json")
    gone = json.loads((directory / f"{ids[0]}.manifest.json").read_text())
    gone.update(id="first-20200101T000000Z-cccccc", file="first-20200101T000000Z-cccccc.dump.zst")
    (directory / "first-20200101T000000Z-cccccc.manifest.json").write_text(json.dumps(gone))
    return directory, ids


def test_newest_first_with_limit_and_skipped_reported(tmp_path: Path) -> None:
    directory, ids = _populate(tmp_path)
    settings = settings_for(directory)

    listed = run_job("dbjobs.list_backups", settings, {})
    limited = run_job("dbjobs.list_backups", settings, {"limit": 2})
    first_only = run_job("dbjobs.list_backups", settings, {"database": "first"})

    assert [b["id"] for b in listed["backups"]] == ids[::-1]
    assert [b["id"] for b in limited["backups"]] == ids[:0:-1] and limited["total"] == 3
    assert [b["id"] for b in first_only["backups"]] == [ids[2], ids[0]]
    skipped = sorted(listed["skipped"])
    assert len(skipped) == 3, skipped
    assert skipped[0].startswith("first-20200101T000000Z-abcdef.dump.zst: no manifest beside it")
    assert skipped[1].startswith("first-20200101T000000Z-bbbbbb: manifest without its file")
    assert skipped[2].startswith("first-20200101T000000Z-cccccc: manifest without its file")


def test_cli_lists_text_and_json(tmp_path: Path) -> None:
    directory, ids = _populate(tmp_path)

    text = run_cli(tmp_path, "list-backups", "--limit", "2", DBJOBS_BACKUP_DIR=str(directory))
    as_json = run_cli(tmp_path, "list-backups", "--json", "--backup-dir", str(directory))
    empty = run_cli(tmp_path, "list-backups", "--backup-dir", str(tmp_path / "none"))

    assert text.returncode == 0 and as_json.returncode == 0 and empty.returncode == 0
    rows = [line.split()[0] for line in text.stdout.splitlines()[1:3]]
    assert rows == [ids[2], ids[1]] and "2 of 3 backups shown" in text.stdout
    assert text.stdout.count("skipped: ") == 3
    assert [b["id"] for b in json.loads(as_json.stdout)["backups"]] == ids[::-1]
    assert "no backups found" in empty.stdout
