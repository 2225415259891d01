"""Restore as a person at a terminal meets it: the question names the backup and the target after the backup was
found and verified, a pipe without --yes is told to pass --yes, `--create` makes a missing server database, and
every failure under --json is JSON. What must not be lost: nothing is restored until the question is answered
yes, and a refused or failed restore changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.backup_support import build_sample, connect, snapshot
from tests.celery_support import ROOT
from tests.conftest import MYSQL_ADMIN_URL, PG_ADMIN_URL, _scratch_name

PYTHON = sys.executable


def cli_env(tmp_path: Path, **aliases: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBJOBS_", "BACKUP_", "SUPABASE_"))}
    env.update(PYTHONPATH=str(ROOT), DBJOBS_DATABASE_URL=f"sqlite:///{tmp_path / 'app.sqlite3'}",
               DBJOBS_BACKUP_DIR=str(tmp_path / "backups"), DBJOBS_DATABASES=json.dumps(aliases))
    return env


def run(env: dict[str, str], cwd: Path, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python cli.py ARGS`; with `answer`, stdin is a terminal (a pty) that types it when asked."""
    argv = [PYTHON, str(ROOT / "cli.py"), *args]
    if answer is None:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=120, check=False)
    main, side = os.openpty()
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=side, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        os.write(main, answer.encode() + b"\n")  # the terminal's line discipline holds it until input() reads
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(main)
        os.close(side)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture
def sample(tmp_path):
    """A SQLite application database with the sample rows, its backup, and a second alias `copy`."""
    build_sample(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    env = cli_env(tmp_path, copy=f"sqlite:///{tmp_path / 'copy.sqlite3'}")
    done = run(env, tmp_path, "backup", "--json")
    assert done.returncode == 0, done.stderr
    return env, json.loads(done.stdout)


def test_the_question_names_backup_and_target_and_only_yes_restores(sample, tmp_path):
    env, backup = sample
    app = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    before = snapshot(app)
    with connect(app) as conn:
        conn.execute(sa.text("DELETE FROM orders"))
    no = run(env, tmp_path, "restore", backup["id"], answer="n")
    assert no.returncode == 1 and "restore not confirmed; nothing was changed" in no.stderr
    question = no.stdout
    assert f"Restore backup {backup['id']} (taken {backup['finished_at'][:19].replace('T', ' ')} UTC from default" in \
        question
    assert f"checksum verified in {tmp_path / 'backups'}" in question
    assert f"into default (sqlite at {tmp_path / 'app.sqlite3'}): its current contents (" in question
    assert question.rstrip().endswith("Continue? [y/N]")
    assert snapshot(app)["tables"]["orders"]["rows"] == []  # "n" changed nothing

    yes = run(env, tmp_path, "restore", backup["id"], answer="y")
    assert yes.returncode == 0, yes.stderr
    assert f"restored {backup['id']} into default" in yes.stdout and snapshot(app) == before


def test_a_damaged_backup_is_refused_before_the_question(sample, tmp_path):
    env, backup = sample
    path = Path(backup["path"])
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    asked = run(env, tmp_path, "restore", backup["id"], answer="y")
    assert asked.returncode == 1 and "Restore backup" not in asked.stdout
    assert asked.stderr.strip().splitlines()[-1].startswith(f"error: {backup['id']} in {tmp_path / 'backups'} is "
                                                            "damaged (SHA-256 does not match")


def test_a_pipe_without_yes_is_told_to_pass_yes_and_json_failures_are_json(sample, tmp_path):
    env, backup = sample
    piped = run(env, tmp_path, "restore", backup["id"], "--database", "copy", "--json")
    assert piped.returncode == 1 and not (tmp_path / "copy.sqlite3").exists()
    assert json.loads(piped.stdout) == {"error": "restore not confirmed: stdin is not a terminal, so it cannot ask; "
                                        "nothing was changed (pass --yes to go ahead without the question)",
                                        "task_id": None}
    unknown = run(env, tmp_path, "list-backups", "--database", "nope", "--json")
    assert unknown.returncode == 0 and json.loads(unknown.stdout)["backups"] == []
    bad = run(env, tmp_path, "backup", "--database", "nope", "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"].startswith("unknown database alias 'nope'")
    version = run(env, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "dbjobs 0.1.0"


@pytest.mark.parametrize("engine", ["pg_url", "mysql_url"])
def test_restore_create_makes_a_missing_server_database(engine, request, tmp_path):
    source = request.getfixturevalue(engine)
    build_sample(source)
    name = _scratch_name()
    target = source.rsplit("/", 1)[0] + f"/{name}"
    env = cli_env(tmp_path, app=source, target=target)
    backup = json.loads(run(env, tmp_path, "backup", "--database", "app", "--json").stdout)
    admin, drop = {"pg_url": (PG_ADMIN_URL, 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'),
                   "mysql_url": (MYSQL_ADMIN_URL, "DROP DATABASE IF EXISTS `{}`")}[engine]
    driver = {"pg_url": "postgresql+psycopg", "mysql_url": "mysql+pymysql"}[engine]
    server = sa.create_engine(f"{driver}://{admin.split('://', 1)[1]}", isolation_level="AUTOCOMMIT")
    try:
        refused = run(env, tmp_path, "restore", backup["id"], "--database", "target", "--yes")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1] == (
            f"error: database 'target' (127.0.0.1:{source.split(':')[-1].split('/')[0]}/{name}) does not exist; "
            "nothing was changed (pass --create to create it, empty, and restore into it)")
        asked = run(env, tmp_path, "restore", backup["id"], "--database", "target", "--create", answer="n")
        assert f"into target ({backup['engine']} at 127.0.0.1:" in asked.stdout
        assert "it does not exist yet and will be created" in asked.stdout
        with server.connect() as conn:  # still nothing: the answer was no
            exists = {"pg_url": "SELECT count(*) FROM pg_database WHERE datname = :n",
                      "mysql_url": "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"}[engine]
            assert conn.execute(sa.text(exists), {"n": name}).scalar() == 0
        created = run(env, tmp_path, "restore", backup["id"], "--database", "target", "--create", "--yes")
        assert created.returncode == 0, created.stderr
        assert "safety backup" not in created.stdout  # a database created empty a moment ago has nothing to save
        assert snapshot(target)["tables"] == snapshot(source)["tables"]
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(drop.format(name)))
        server.dispose()
