"""PostgreSQL's swap restore on a real server: what the swap carries over, undo, retention, and the in-place fallback.

What must not be lost: the restored database holds the backup row for row; the replaced one
survives, row for row, as the pre-restore copy until the retention rule drops it; whatever
belongs to the database itself (owner, grants, settings, comment) is the same after the swap;
a restore that cannot swap says why and runs in place, and one that was refused changed nothing.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbjobs.catalog import find_backup
from dbjobs.engines import connector_for
from dbjobs.engines.dblock import pg_lock_keys
from dbjobs.errors import JobLockedError, RestoreError
from dbjobs.jobs import run_job
from dbjobs.manifest import Manifest
from dbjobs.pipeline import write_atomic
from dbjobs.progress import Progress
from dbjobs.storage.local import LocalStorage
from tests.backup_support import build_sample, connect, db, mutate, settings_for, snapshot
from tests.conftest import pg_admin

pytestmark = pytest.mark.postgres
PROPERTIES = """
    SELECT pg_get_userbyid(datdba), datacl::text, datconnlimit, datallowconn, shobj_description(oid, 'pg_database'),
           (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid)
    FROM pg_database d WHERE datname = :name
"""


def _server(url: str) -> str:
    return url.rsplit("/", 1)[0]


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _copies(url: str) -> list[str]:
    with pg_admin() as conn:
        return sorted(conn.execute(sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                                   {"p": _name(url) + "__"}).scalars())


@pytest.fixture
def role() -> Iterator[str]:
    """A login role of the test's own (no CREATEDB), dropped afterwards: request it before `pg_url`, so the
    database it owns things in is dropped first."""
    name = f"dbjobs_t_role_{uuid.uuid4().hex[:8]}"
    with pg_admin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {name} LOGIN"))
    try:
        yield name
    finally:
        with pg_admin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {name}"))
            conn.execute(sa.text(f"DROP ROLE {name}"))


def test_swap_keeps_the_database_properties_and_ends_sessions(role: str, pg_url: str, tmp_path: Path) -> None:
    name = _name(pg_url)
    build_sample(pg_url)
    with pg_admin() as conn:
        for statement in (f'ALTER DATABASE "{name}" OWNER TO {role}', f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC',
                          f'GRANT CONNECT ON DATABASE "{name}" TO {role}',
                          f'ALTER DATABASE "{name}" CONNECTION LIMIT 40',
                          f'ALTER DATABASE "{name}" SET search_path TO "$user", public, "Odd, name"',
                          f"ALTER DATABASE \"{name}\" SET statement_timeout TO '5min'",
                          f'ALTER ROLE {role} IN DATABASE "{name}" SET work_mem TO \'8MB\'',
                          f"COMMENT ON DATABASE \"{name}\" IS 'the app''s: database'"):
            conn.execute(sa.text(statement.replace(":", "\\:")))
    settings = settings_for(tmp_path / "backups", main=pg_url)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    expected = snapshot(pg_url)
    mutate(pg_url)
    with pg_admin() as conn:  # the application's sessions are read-only: the shadow's load must not be
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only TO on'))
        before = conn.execute(sa.text(PROPERTIES), {"name": name}).one()
    session = sa.create_engine(f"postgresql+psycopg://{pg_url.split('://', 1)[1]}").connect()  # the app, idle

    restored = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})

    with pg_admin() as conn:
        assert conn.execute(sa.text(PROPERTIES), {"name": name}).one() == before
    assert snapshot(pg_url) == expected
    assert restored["strategy"] == "swap" and 0 < restored["swap_seconds"] < 5
    with pytest.raises(sa.exc.OperationalError):  # its session was ended by the swap
        session.execute(sa.text("SELECT 1"))
    session.invalidate()


def test_undo_swaps_back_and_retention_keeps_the_newest_copies(pg_url: str, tmp_path: Path) -> None:
    build_sample(pg_url)
    settings = dataclasses.replace(settings_for(tmp_path / "backups", main=pg_url), pre_restore_keep=2)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    original = snapshot(pg_url)
    states = []
    for i in range(3):
        with connect(pg_url) as conn:
            conn.execute(sa.text(f"UPDATE customers SET name = 'round {i}'"))
        states.append(snapshot(pg_url))
        last = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})
    copies = _copies(pg_url)
    assert len(copies) == 2 and last["pre_restore_copy"] in copies and len(last["dropped_copies"]) == 1
    for job in ("dbjobs.list_backups", "dbjobs.status"):  # listed as what they are: databases, newest first
        listed = run_job(job, settings, {})["pre_restore_copies"]
        assert [c["name"] for c in listed] == [last["pre_restore_copy"], *(c for c in copies if c != last[
            "pre_restore_copy"])] and {c["replaced_by"] for c in listed} == {backup["id"]}
    assert snapshot(f"{_server(pg_url)}/{last['pre_restore_copy']}") == states[-1]

    undone = run_job("dbjobs.restore", settings, {"database": "main", "undo": True, "confirmed": True})

    assert snapshot(pg_url) == states[-1]
    assert snapshot(f"{_server(pg_url)}/{undone['pre_restore_copy']}") == original
    run_job("dbjobs.restore", settings, {"database": "main", "undo": True, "confirmed": True})
    assert snapshot(pg_url) == original

    stricter = dataclasses.replace(settings, pre_restore_keep=1)  # cleanup applies the rule between restores
    left = _copies(pg_url)
    planned = run_job("dbjobs.cleanup", stricter, {"dry_run": True})["pre_restore_copies_dropped"]
    assert len(planned) == len(left) - 1 and _copies(pg_url) == left
    assert run_job("dbjobs.cleanup", stricter, {})["pre_restore_copies_dropped"] == planned
    assert _copies(pg_url) == sorted(set(left) - set(planned)) and snapshot(pg_url) == original


def test_undo_without_a_copy_is_refused(pg_url: str, tmp_path: Path) -> None:
    build_sample(pg_url)
    before = snapshot(pg_url)
    settings = settings_for(tmp_path / "backups", main=pg_url)
    with pytest.raises(RestoreError, match="no pre-restore copy"):
        run_job("dbjobs.restore", settings, {"database": "main", "undo": True, "confirmed": True})
    assert snapshot(pg_url) == before


def test_a_shadow_that_differs_from_the_manifest_is_dropped(pg_url: str, tmp_path: Path) -> None:
    build_sample(pg_url)
    settings = settings_for(tmp_path / "backups", main=pg_url)
    taken = run_job("dbjobs.backup", settings, {"database": "main"})
    backup = find_backup([LocalStorage(tmp_path / "backups")], taken["id"])
    wrong: Manifest = dataclasses.replace(backup.manifest, row_counts={**backup.manifest.row_counts,
                                                                        "public.orders": 161})
    write_atomic(backup.path.with_name(wrong.manifest_name), wrong.to_json().encode())
    mutate(pg_url)
    current = snapshot(pg_url)

    with pytest.raises(RestoreError, match=r"its manifest: table public.orders has 160 rows, the manifest says 161"):
        run_job("dbjobs.restore", settings, {"backup": taken["id"], "confirmed": True})

    assert snapshot(pg_url) == current and _copies(pg_url) == []


def test_a_role_that_cannot_swap_restores_in_place_with_a_note(role: str, pg_url: str, tmp_path: Path) -> None:
    name = _name(pg_url)
    build_sample(pg_url)
    with pg_admin() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" OWNER TO {role}'))
    as_role = f"postgresql://{role}@{pg_url.split('@', 1)[1]}"
    with connect(pg_url) as conn:
        for table in ("customers", "orders"):
            conn.execute(sa.text(f"ALTER TABLE {table} OWNER TO {role}"))
        conn.execute(sa.text(f"ALTER VIEW order_totals OWNER TO {role}"))
    settings = settings_for(tmp_path / "backups", main=as_role)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    expected = snapshot(pg_url)
    mutate(as_role)  # as the application's role: its safety backup must be able to read what it made
    changed = snapshot(pg_url)

    with pytest.raises(RestoreError, match="cannot restore by swap: the role has no CREATEDB"):
        run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True, "strategy": "swap"})
    assert snapshot(pg_url) == changed

    restored = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})

    assert restored["strategy"] == "in-place" and "CREATEDB" in restored["note"]
    assert restored["safety_backup_id"] and snapshot(pg_url) == expected and _copies(pg_url) == []


def test_a_swap_restore_holds_the_database_lock_from_start_to_swap(pg_url: str, tmp_path: Path) -> None:
    """Held on the maintenance database (the swap ends every session in the target), keyed by the target's
    name: while one restore is loading, a migration's lock is refused naming it and a second restore waits,
    starting only once the first has swapped and returned."""
    build_sample(pg_url)
    settings = dataclasses.replace(settings_for(tmp_path / "backups", main=pg_url), pre_restore_keep=2)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    mutate(pg_url)
    checking, release = threading.Event(), threading.Event()
    events: list[tuple[str, str, float]] = []

    def restore(who: str) -> dict:
        def progress(p: Progress) -> None:
            events.append((who, p.phase, time.monotonic()))
            if who == "first" and p.phase == "check":
                checking.set()
                assert release.wait(60)

        result = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True}, progress)
        events.append((who, "returned", time.monotonic()))
        return result

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(restore, "first")
        assert checking.wait(60), "the first restore never reached its shadow check"
        with pg_admin() as conn:  # the lock lives in `postgres`, not in the target the swap will close
            held_in = conn.execute(sa.text(
                "SELECT d.datname FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = :a AND l.objid = :b AND l.granted"),
                {"a": pg_lock_keys(db(pg_url))[0] & 0xFFFFFFFF, "b": pg_lock_keys(db(pg_url))[1] & 0xFFFFFFFF},
            ).scalars().all()
        assert held_in == ["postgres"]
        with pytest.raises(JobLockedError, match=f"dbjobs.restore of {backup['id']}"), \
                connector_for(db(pg_url)).exclusive("dbjobs.apply_migration t2", wait=0.5):
            pass
        second = pool.submit(restore, "second")
        time.sleep(1.5)
        assert not second.done()
        release.set()
        done = first.result(120), second.result(120)

    first_returned = next(t for who, phase, t in events if who == "first" and phase == "returned")
    second_began = next(t for who, phase, t in events if who == "second" and phase == "restore")
    assert second_began > first_returned, "the second restore loaded while the first still held the database"
    assert snapshot(pg_url) == snapshot(f"{_server(pg_url)}/{done[1]['pre_restore_copy']}")
    assert done[0]["pre_restore_copy"] != done[1]["pre_restore_copy"]


@pytest.mark.parametrize("indexed", [True, False], ids=["frames", "older-backup"])
def test_a_backup_is_restored_from_its_frames_or_streamed_without_an_index(
        pg_url: str, tmp_path: Path, indexed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup cut into frames is loaded frame by frame and nothing is unpacked; one whose manifest has no index
    (an older dbjobs's) is streamed through the work directory as before. Both restore it row for row."""
    from dbjobs import frames
    from dbjobs.engines import pg_load

    monkeypatch.setattr(frames, "MIN_FRAME", 1)  # the sample's small tables get frames of their own
    build_sample(pg_url)
    settings = settings_for(tmp_path / "backups", main=pg_url)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    assert len(backup["extra"]["frames"]) >= 2  # the header's frame ends at the first table's block
    if not indexed:
        found = find_backup([LocalStorage(tmp_path / "backups")], backup["id"])
        older = dataclasses.replace(found.manifest, extra={})
        write_atomic(tmp_path / "backups" / older.manifest_name, older.to_json().encode())
    original = snapshot(pg_url)
    mutate(pg_url)
    unpacked: list[int] = []
    appended = pg_load.GrowingFile.append
    monkeypatch.setattr(pg_load.GrowingFile, "append", lambda self, chunk: (unpacked.append(len(chunk)),
                                                                             appended(self, chunk))[1])
    done = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})
    assert done["strategy"] == "swap" and snapshot(pg_url) == original
    assert (sum(unpacked) == 0) is indexed  # the streamed load wrote the raw dump into its work file
