"""A PostgreSQL swap restore whose worker is killed (-9) mid-load or mid-swap, completed by the redelivered task.

Real prefork workers on the suite's Redis, the CLI as a user runs it, a real server. What must
not be lost: until the redelivered task finishes, the target holds its old rows; afterwards it
holds the backup's, row for row, and open to connections, with the old rows kept, row for row,
as the one pre-restore copy; no shadow is left.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from dbjobs.jobs import run_job
from tests.backup_support import connect, settings_for
from tests.celery_support import celery_env, cli_json, flushed_redis, run_cli, start_worker, wait_until
from tests.conftest import PG_ADMIN_URL, pg_admin

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
REDIS_DB = 6
ROWS = 300_000  # ~35 MB of table data: a load of a second or more, long enough to be killed in


def digests(url: str) -> dict[str, tuple[int, str]]:
    """Rows and an MD5 of every row in key order, per table: equal digests are equal tables, row for row."""
    with connect(url) as conn:
        tables = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        return {t: tuple(conn.execute(sa.text(f"SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x.id), "
                                              f"'')) FROM {t} x")).one()) for t in sorted(tables)}


def databases(prefix: str) -> dict[str, tuple[bool, str | None]]:
    """Databases named `prefix...`: whether they accept connections, and their comment."""
    with pg_admin() as conn:
        rows = conn.execute(sa.text("SELECT datname, datallowconn, shobj_description(oid, 'pg_database') "
                                    "FROM pg_database WHERE starts_with(datname, :p)"), {"p": prefix})
        return {name: (allow, comment) for name, allow, comment in rows}


def _phase(name: str) -> str | None:
    found = databases(name + "__shadow")
    comment = found.get(name + "__shadow", (True, None))[1]
    return json.loads(comment.removeprefix("dbjobs:"))["phase"] if comment else None


def _copying(shadow: str) -> bool:
    with pg_admin() as conn:
        return bool(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                                         "AND query ILIKE 'COPY%'"), {"d": shadow}).scalar())


@contextmanager
def _rename_blocked(name: str) -> Iterator[None]:
    """Hold a lock on the database object, so the swap stalls at its rename (after closing the target)."""
    with psycopg.connect(PG_ADMIN_URL) as holder:
        holder.execute(f"COMMENT ON DATABASE \"{name}\" IS 'held'")
        try:
            yield
        finally:
            holder.rollback()


def _wait_mid_load(name: str) -> None:
    wait_until(lambda: _phase(name) == "loading" and _copying(name + "__shadow"), 120, "the load never started")


def _wait_mid_swap(name: str) -> None:
    wait_until(lambda: _phase(name) == "swapping" and databases(name)[name][0] is False, 120,
               "the swap never closed the target")


@pytest.mark.parametrize("stage", ["mid-load", "mid-swap"])
def test_a_killed_swap_restore_is_completed_by_the_redelivered_task(pg_url: str, tmp_path: Path, stage: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    with connect(pg_url) as conn:
        conn.execute(sa.text("CREATE TABLE big (id integer PRIMARY KEY, v text NOT NULL, n bigint)"))
        conn.execute(sa.text(f"INSERT INTO big SELECT i, md5(i::text) || md5((i * 7)::text), i::bigint * i "
                             f"FROM generate_series(1, {ROWS}) i"))
    backup = run_job("dbjobs.backup", settings_for(tmp_path / "backups", app=pg_url), {"database": "app"})
    backed_up = digests(pg_url)
    with connect(pg_url) as conn:
        conn.execute(sa.text("UPDATE big SET v = 'changed' WHERE id % 10 = 0"))
        conn.execute(sa.text("DELETE FROM big WHERE id > :n"), {"n": ROWS - 1000})
    current = digests(pg_url)
    broker = flushed_redis(REDIS_DB)
    env = celery_env(tmp_path, broker, DBJOBS_DATABASES=f"app={pg_url}", DBJOBS_VISIBILITY_TIMEOUT="4",
                     DBJOBS_LOCK_TTL="2")
    first = start_worker(env, tmp_path, "first")
    second = None
    wait: Callable[[str], None] = _wait_mid_load if stage == "mid-load" else _wait_mid_swap
    try:
        with _rename_blocked(name) if stage == "mid-swap" else contextmanager(lambda: iter([None]))():
            task_id = run_cli(env, tmp_path, "restore", backup["id"], "--database", "app", "--yes").stdout.strip()
            wait(name)
            first.kill(signal.SIGKILL)
        if stage == "mid-load":
            assert digests(pg_url) == current
        else:
            assert databases(name)[name][0] is False  # the killed swap left the target closed: unavailable
        second = start_worker(env, tmp_path, "second")
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
    finally:
        first.stop()
        if second:
            second.stop()
        flushed_redis(REDIS_DB)

    assert result["strategy"] == "swap" and result["resumed"] is (stage == "mid-swap")
    assert digests(pg_url) == backed_up
    left = databases(name)
    assert left[name] == (True, None) and set(left) == {name, result["pre_restore_copy"]}
    assert digests(f"{pg_url.rsplit('/', 1)[0]}/{result['pre_restore_copy']}") == current
