"""The migration workflow per database, through `python cli.py` (in-process, no broker), as a user
runs it: dev changes its schema, detect writes a file, production replays it.

What must not be lost or confused: the first run says it only took a baseline; the file is
never pending on the database it came from; applying it on another alias records that alias's
new snapshot (so its next detect writes nothing); a PostgreSQL file never blocks the SQLite
alias sharing the directory; `--stamp` marks a file applied without running it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbjobs.dburl import parse_url
from dbjobs.migrate import pending_migrations
from tests.conftest import PG_ADMIN_URL, scratch_database

ROOT = Path(__file__).resolve().parents[2]
CREATE, DROP = 'CREATE DATABASE "{name}"', 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


@pytest.fixture
def aliases(tmp_path: Path) -> Iterator[dict[str, str]]:
    """dev and prod on PostgreSQL, lite on SQLite, one schema directory."""
    with scratch_database("postgres", PG_ADMIN_URL, "postgresql+psycopg", CREATE, DROP) as dev, \
         scratch_database("postgres", PG_ADMIN_URL, "postgresql+psycopg", CREATE, DROP) as prod:
        yield {"dev": dev, "prod": prod, "lite": f"sqlite:///{tmp_path / 'lite.sqlite3'}"}


def cli(tmp_path: Path, urls: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBJOBS_")}
    env.update({"DBJOBS_DATABASES": json.dumps(urls), "DBJOBS_DATABASE_URL": urls["dev"], "PYTHONPATH": str(ROOT),
                "DBJOBS_SCHEMA_DIR": str(tmp_path / "migrations"), "DBJOBS_BACKUP_DIR": str(tmp_path / "backups")})
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def run(url: str, sql: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


def detect(tmp_path: Path, urls: dict[str, str], alias: str) -> dict:
    done = cli(tmp_path, urls, "detect-migrations", "--database", alias, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_baseline_replay_snapshot_after_apply_and_stamp(tmp_path: Path, aliases: dict[str, str]) -> None:
    for alias in ("dev", "prod"):
        run(aliases[alias], "CREATE TABLE item (id int PRIMARY KEY, name text)")
    first = cli(tmp_path, aliases, "detect-migrations", "--database", "dev")
    assert first.returncode == 0 and "baseline taken, nothing to compare yet" in first.stdout
    assert detect(tmp_path, aliases, "prod")["baseline"] is True

    run(aliases["dev"], "ALTER TABLE item ADD COLUMN price numeric CHECK (price::numeric / 3 > 0.1)")
    written = detect(tmp_path, aliases, "dev")
    assert written["changed"] and written["applied"]["status"] == "recorded"
    name = Path(written["file"]).name
    # never pending where it came from, nor on the SQLite alias sharing the directory
    for alias, pending in {"dev": [], "prod": [name], "lite": []}.items():
        assert pending_migrations(parse_url(alias, aliases[alias]), tmp_path / "migrations") == pending, alias

    applied = cli(tmp_path, aliases, "apply-migration", "--database", "prod", "--yes", "--json")
    assert applied.returncode == 0, applied.stderr
    assert [m["status"] for m in json.loads(applied.stdout)["migrations"]] == ["applied"]
    again = detect(tmp_path, aliases, "prod")  # the snapshot was recorded after apply: nothing new to write
    assert again["changed"] is False and again["file"] is None

    run(aliases["dev"], "CREATE INDEX item_name ON item (lower(name))")
    second = detect(tmp_path, aliases, "dev")
    run(aliases["prod"], "CREATE INDEX item_name ON item (lower(name))")  # done by hand on prod
    stamped = cli(tmp_path, aliases, "apply-migration", "--database", "prod", "--stamp", "--yes", "--json")
    assert stamped.returncode == 0, stamped.stderr
    assert [m["status"] for m in json.loads(stamped.stdout)["migrations"]] == ["stamped"]
    assert cli(tmp_path, aliases, "apply-migration", "--database", "prod", "--yes").stdout.strip() == \
        "no pending migrations for prod"
    assert detect(tmp_path, aliases, "prod")["changed"] is False
    assert Path(second["file"]).name != name
