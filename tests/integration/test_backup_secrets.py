"""Backups are private to their owner and never carry the database password."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from dbjobs.jobs import run_job
from tests.backup_support import build_sample, connect, error_line, run_cli, settings_for
from tests.conftest import drop_copies

PASSWORD = "s3cr3t-XYZ"


@contextmanager
def login(admin_url: str, admin_user: str, create: list[str], drop: list[str], password: str) -> Iterator[str]:
    """`admin_url` reached as a new login with `password` (created by the statements, dropped after)."""
    name = f"dbjobs_pw_{uuid.uuid4().hex[:8]}"
    with connect(admin_url) as conn:
        for statement in create:
            conn.execute(sa.text(statement.format(name=name)), {"pw": password})
    try:
        yield admin_url.replace(f"://{admin_user}@", f"://{name}:{quote(password, safe='')}@")
    finally:
        with connect(admin_url) as conn:
            for statement in drop:
                conn.execute(sa.text(statement.format(name=name)))


@pytest.fixture
def password_url(pg_url: str) -> Iterator[str]:
    """`pg_url` reached as a role with a password (loopback auth is trust, so any password logs in)."""
    with login(pg_url, "postgres", [f"CREATE ROLE {{name}} LOGIN PASSWORD '{PASSWORD}' SUPERUSER"],
               ["DROP OWNED BY {name}", "DROP ROLE {name}"], PASSWORD) as url:
        yield url
        drop_copies("postgres", pg_url)  # a swap restore's pre-restore copy holds the role's tables: gone first


def test_files_are_private_and_hold_no_password(password_url: str, tmp_path: Path) -> None:
    build_sample(password_url)
    directory = tmp_path / "backups"
    settings = settings_for(directory, secret=password_url)

    result = run_job("dbjobs.backup", settings, {"database": "secret"})
    restored = run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True})

    assert PASSWORD not in json.dumps(result) + json.dumps(restored)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = [p for p in directory.rglob("*") if p.is_file()]  # job state in .last-jobs/ included
    # the backup, and a safety backup unless the restore swapped (then the old database is the copy, on the server)
    kept = 2 if restored["strategy"] == "swap" else 4
    assert len([p for p in files if p.name.endswith((".dump.zst", ".manifest.json"))]) == kept
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        assert PASSWORD.encode() not in path.read_bytes(), path.name


def test_cli_output_holds_no_password(password_url: str, tmp_path: Path) -> None:
    build_sample(password_url)
    env = {"DBJOBS_DATABASES": json.dumps({"secret": password_url,
                                           "far": password_url.replace("127.0.0.1:5432", "127.0.0.1:1")})}
    outputs = [run_cli(tmp_path, *args, **env) for args in (
        ["backup", "--database", "secret"], ["backup", "--database", "secret", "--json"],
        ["list-backups"], ["list-backups", "--json"])]
    failed = run_cli(tmp_path, "backup", "--database", "far", **env)

    assert all(p.returncode == 0 for p in outputs), [p.stderr for p in outputs]
    assert "is unreachable" in error_line(failed) and "***" in failed.stderr
    for proc in [*outputs, failed]:
        assert PASSWORD not in proc.stdout + proc.stderr


TRICKY = 'a"b\\c#d e\'f;%@'


@pytest.fixture
def mysql_password_url(mysql_url: str) -> Iterator[str]:
    """`mysql_url` reached as a user whose password needs quoting everywhere (MariaDB checks it)."""
    with login(mysql_url, "root", ["CREATE USER '{name}'@'%' IDENTIFIED BY :pw", "GRANT ALL ON *.* TO '{name}'@'%'"],
               ["DROP USER '{name}'@'%'"], TRICKY) as url:
        yield url


def test_mysql_password_with_quotes_and_hashes_reaches_the_tools(mysql_password_url: str, tmp_path: Path) -> None:
    build_sample(mysql_password_url)
    settings = settings_for(tmp_path, secret=mysql_password_url)

    result = run_job("dbjobs.backup", settings, {"database": "secret"})
    run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True})

    assert sum(result["row_counts"].values()) == 200
    assert TRICKY not in json.dumps(result)
    assert all(TRICKY.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
