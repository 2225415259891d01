"""The schema commands end to end through `python cli.py` on SQLite (in-process, no broker)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp_path: Path, *args: str, models: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBJOBS_")}
    env.update({"DBJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}", "PYTHONPATH": str(ROOT),
                "DBJOBS_SCHEMA_DIR": str(tmp_path / "migrations"), "DBJOBS_BACKUP_DIR": str(tmp_path / "backups")})
    if models:
        env["DBJOBS_MODELS"] = "tests.integration.app_models:Base"
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_detect_then_apply_then_nothing_left(tmp_path: Path) -> None:
    detected = cli(tmp_path, "detect-migrations", "--json")
    assert detected.returncode == 0, detected.stderr
    result = json.loads(detected.stdout)
    assert result["changed"] and Path(result["file"]).is_file()
    applied = cli(tmp_path, "apply-migration", "--file", result["file"], "--yes", "--json")
    assert applied.returncode == 0, applied.stderr
    assert [m["status"] for m in json.loads(applied.stdout)["migrations"]] == ["applied"]
    again = cli(tmp_path, "apply-migration", "--file", result["file"], "--yes")
    assert again.returncode == 0 and again.stdout.startswith("skipped")
    assert "no schema changes" in cli(tmp_path, "detect-migrations").stdout


def test_detect_with_backup_and_apply(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "app.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 1")
    done = cli(tmp_path, "detect-migrations", "--backup", "--apply", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backup"]["id"] and result["applied"]["status"] == "applied"


def test_apply_without_file_applies_every_pending_migration(tmp_path: Path) -> None:
    first = json.loads(cli(tmp_path, "detect-migrations", "--json").stdout)
    assert cli(tmp_path, "apply-migration", "--yes").stdout.startswith(f"applied {Path(first['file']).stem}")
    assert cli(tmp_path, "apply-migration", "--yes").stdout.strip() == "no pending migrations for default"
    refused = cli(tmp_path, "apply-migration", "--yes", "--reverse")
    assert refused.returncode == 2 and "--reverse needs --file" in refused.stderr


def test_failures_are_one_line_and_non_zero(tmp_path: Path) -> None:
    missing = cli(tmp_path, "apply-migration", "--file", "nope.sql", "--yes")
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].startswith("error: migration file nope.sql does not exist")
    unconfirmed = cli(tmp_path, "apply-migration", "--file", "nope.sql")
    assert unconfirmed.returncode != 0 and "not confirmed" in unconfirmed.stderr
