"""apply-migration on the real servers: ledger, skip, drift, destructive gate, failing statements,
bad files and a concurrent applier."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from dbjobs.errors import JobLockedError, MigrationError
from dbjobs.migrate import apply_migration, pending_migrations
from dbjobs.schema.migration_file import FORWARD, REVERSE
from dbjobs.schema.snapshot import take_snapshot
from tests.integration.schema_helpers import apply, database, rows

HEADER = "-- dbjobs migration {name}\n-- engine: {engine}\n"


def write(tmp_path, engine: str, forward: str, reverse: str = "", name: str = "0001_20260101T000000_t",
          extra: str = ""):  # type: ignore[no-untyped-def]
    path = tmp_path / f"{name}.sql"
    path.write_text(HEADER.format(name=name, engine=engine) + extra + f"{FORWARD}\n{forward}\n{REVERSE}\n{reverse}\n")
    return path


def test_apply_records_the_ledger_and_skips_an_applied_file(db_url: str, tmp_path) -> None:
    db = database(db_url)
    path = write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY);\nINSERT INTO a VALUES (1);",
                 "DROP TABLE a;")
    assert pending_migrations(db, tmp_path) == [path.name]
    first = apply(db, path)
    assert first["status"] == "applied" and first["statements"] == 2
    assert first["transactional"] is (db.engine != "mysql")
    assert apply(db, path)["status"] == "skipped"
    assert pending_migrations(db, tmp_path) == []
    (name, success), = rows(db, "SELECT name, success FROM dbjobs_migrations")
    assert name == path.stem and bool(success)
    assert "dbjobs_migrations" not in take_snapshot(db).tables


def test_an_edited_applied_file_is_reported_as_drift(db_url: str, tmp_path) -> None:
    db = database(db_url)
    path = write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY);")
    apply(db, path)
    write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER);")
    with pytest.raises(MigrationError, match="drift"):
        apply(db, path)


def test_destructive_statements_need_allow_destructive(db_url: str, tmp_path) -> None:
    db = database(db_url)
    create = "CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER);"
    apply(db, write(tmp_path, db.engine, create, name="0001_20260101T000000_a"))
    path = write(tmp_path, db.engine, "ALTER TABLE a DROP COLUMN x;", name="0002_20260101T000000_b")
    with pytest.raises(MigrationError, match="--allow-destructive"):
        apply_migration(db, path)
    assert [c["name"] for c in take_snapshot(db).tables["a"]["columns"]] == ["id", "x"]
    assert apply(db, path)["status"] == "applied"


def test_a_failing_statement_leaves_schema_and_ledger_as_they_were(db_url: str, tmp_path) -> None:
    db = database(db_url)
    before = take_snapshot(db)
    path = write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY);\nCREATE TABLE b (id INTEGER);\n"
                                      "ALTER TABLE nowhere ADD COLUMN y INTEGER;")
    with pytest.raises(MigrationError, match=r"statement 3 of 3 failed .*nowhere") as error:
        apply(db, path)
    if db.engine == "mysql":
        assert "statements 1-2 stay applied" in str(error.value)
        assert rows(db, "SELECT success, statements_done, failure FROM dbjobs_migrations") == [
            (0, 2, f"statement 3: Table '{db.database}.nowhere' doesn't exist")]
    else:
        assert "nothing was changed" in str(error.value)
        assert take_snapshot(db).to_json() == before.to_json()
        engine = db.create_engine()
        assert not sa.inspect(engine).has_table("dbjobs_migrations")
        engine.dispose()


def test_bad_files_are_refused_before_touching_the_database(sqlite_url: str, tmp_path) -> None:
    db = database(sqlite_url)
    with pytest.raises(MigrationError, match="does not exist"):
        apply(db, tmp_path / "0009_20260101T000000_missing.sql")
    malformed = tmp_path / "0001_20260101T000000_bad.sql"
    malformed.write_text("CREATE TABLE a (id int);\n")
    with pytest.raises(MigrationError, match="not a dbjobs migration"):
        apply(db, malformed)
    with pytest.raises(MigrationError, match="generated for postgresql"):
        apply(db, write(tmp_path, "postgresql", "CREATE TABLE a (id SERIAL);"))
    with pytest.raises(MigrationError, match="engine"):
        apply(db, write(tmp_path, "oracle", "CREATE TABLE a (id int);"))
    assert not (tmp_path / "app.sqlite3").exists() or take_snapshot(db).tables == {}


def test_malformed_sql_fails_and_names_the_statement(db_url: str, tmp_path) -> None:
    db = database(db_url)
    path = write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY);\nCREAT TABEL oops (;")
    with pytest.raises(MigrationError, match=r"statement 2 of 2 failed.*CREAT TABEL oops"):
        apply(db, path)


def _hold_lock(db, ready: threading.Event, release: threading.Event) -> None:  # type: ignore[no-untyped-def]
    from dbjobs.engines import connector_for

    with connector_for(db).exclusive("dbjobs.restore t-other", wait=5):
        ready.set()
        release.wait(20)


def test_a_concurrent_applier_is_refused(db_url: str, tmp_path) -> None:
    db = database(db_url)
    path = write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY);")
    if db.engine == "sqlite":
        apply(db, write(tmp_path, "sqlite", "CREATE TABLE z (id INTEGER);", name="0000_20260101T000000_z"))
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(db, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(JobLockedError, match="is busy"):
            apply_migration(db, path, lock_timeout=0.5)
    finally:
        release.set()
        holder.join()
    assert apply(db, path)["status"] == "applied"


def test_status_lists_pending_and_drifted_files(sqlite_url: str, tmp_path) -> None:
    from dbjobs.migrate import drifted_migrations

    db = database(sqlite_url)
    first = write(tmp_path, "sqlite", "CREATE TABLE a (id INTEGER);", name="0001_20260101T000000_a")
    second = write(tmp_path, "sqlite", "CREATE TABLE b (id INTEGER);", name="0002_20260101T000000_b")
    apply(db, first)
    assert pending_migrations(db, tmp_path) == [second.name]
    assert drifted_migrations(db, tmp_path) == []
    write(tmp_path, "sqlite", "CREATE TABLE a (id INTEGER, x INTEGER);", name="0001_20260101T000000_a")
    assert drifted_migrations(db, tmp_path) == [first.name]


def test_sqlite_rebuild_refuses_orphan_rows_for_a_new_foreign_key(sqlite_url: str, tmp_path) -> None:
    from tests.integration.schema_helpers import create, write_migration

    db = database(sqlite_url)
    parent = sa.MetaData()
    sa.Table("p", parent, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("c", parent, sa.Column("id", sa.Integer, primary_key=True), sa.Column("p_id", sa.Integer))
    create(db, parent, {"p": [{"id": 1}], "c": [{"id": 1, "p_id": 1}, {"id": 2, "p_id": 7}]})
    target = sa.MetaData()
    sa.Table("p", target, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("c", target, sa.Column("id", sa.Integer, primary_key=True), sa.Column("p_id", sa.ForeignKey("p.id")))
    path, _ = write_migration(db, target, tmp_path)
    before = take_snapshot(db)
    with pytest.raises(MigrationError, match="would break its foreign key to p"):
        apply(db, path)
    assert take_snapshot(db) == before


def test_pending_files_are_all_checked_before_the_first_runs(db_url: str, tmp_path) -> None:
    from dbjobs.migrate import apply_pending

    db = database(db_url)
    write(tmp_path, db.engine, "CREATE TABLE a (id INTEGER PRIMARY KEY);", name="0001_20260101T000000_a")
    write(tmp_path, db.engine, "DROP TABLE a;", name="0002_20260101T000000_b")
    with pytest.raises(MigrationError, match=r"0002_20260101T000000_b\.sql is destructive"):
        apply_pending(db, tmp_path)
    assert "a" not in take_snapshot(db).tables
    assert [r.status for r in apply_pending(db, tmp_path, allow_destructive=True)] == ["applied", "applied"]
    assert pending_migrations(db, tmp_path) == []


def test_applying_to_another_schema_than_the_one_generated_from_is_noted(sqlite_url: str, tmp_path) -> None:
    from tests.integration.schema_helpers import create, write_migration

    db = database(sqlite_url)
    md = sa.MetaData()
    sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True))
    create(db, md)
    target = sa.MetaData()
    sa.Table("t", target, sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", sa.Integer))
    path, _ = write_migration(db, target, tmp_path)
    engine = db.create_engine()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other (id INTEGER)"))
    engine.dispose()
    notes = apply(db, path)["notes"]
    assert any("not the one this migration was generated from" in n for n in notes)


def test_an_unreachable_database_is_a_one_line_error(tmp_path) -> None:
    from dbjobs.dburl import parse_url
    from dbjobs.errors import DatabaseUnavailableError

    db = parse_url("gone", "postgresql://someone:pw-secret@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseUnavailableError) as error:
        pending_migrations(db, tmp_path)
    with pytest.raises(DatabaseUnavailableError) as snapshot_error:
        take_snapshot(db)
    with pytest.raises(DatabaseUnavailableError) as apply_error:
        apply(db, write(tmp_path, "postgresql", "SELECT 1;"))
    for failure in (error, snapshot_error, apply_error):
        assert "pw-secret" not in str(failure.value) and "\n" not in str(failure.value)


def test_a_partly_applied_mysql_migration_continues_after_its_last_good_statement(mysql_url: str, tmp_path) -> None:
    db = database(mysql_url)
    first, second = "CREATE TABLE a (id INTEGER PRIMARY KEY)", "ALTER TABLE a ADD COLUMN x INTEGER"
    path = write(tmp_path, "mysql", f"{first};\n{second};\nALTER TABLE a ADD COLUMN y BOGUS_TYPE;")
    with pytest.raises(MigrationError, match=r"statement 3 of 3 failed.*statements 1-2 stay applied"):
        apply(db, path)
    edited = write(tmp_path, "mysql", f"{first};\n  {second};\nALTER TABLE a ADD COLUMN y INTEGER;")
    done = apply(db, edited)
    assert done["status"] == "applied"
    assert "statements 1-2 were applied by an earlier attempt that stopped; continuing from statement 3 of 3" \
        in done["notes"]
    assert [c["name"] for c in take_snapshot(db).tables["a"]["columns"]] == ["id", "x", "y"]
    assert rows(db, "SELECT success, statements_done, failure FROM dbjobs_migrations") == [(1, 3, None)]
    assert apply(db, edited)["status"] == "skipped"


def test_a_resume_refuses_when_the_statements_that_ran_were_changed(mysql_url: str, tmp_path) -> None:
    db = database(mysql_url)
    path = write(tmp_path, "mysql", "CREATE TABLE a (id INTEGER PRIMARY KEY);\nCREAT oops;")
    with pytest.raises(MigrationError, match="statements 1-1 stay applied"):
        apply(db, path)
    write(tmp_path, "mysql", "CREATE TABLE b (id INTEGER PRIMARY KEY);\nCREATE TABLE c (id INTEGER);")
    with pytest.raises(MigrationError, match=r"committed statements 1-1 of the file as it was then"):
        apply(db, path)
    assert sorted(take_snapshot(db).tables) == ["a"]


def test_a_first_statement_failure_says_nothing_was_applied(mysql_url: str, tmp_path) -> None:
    db = database(mysql_url)
    with pytest.raises(MigrationError, match="no statement was applied") as error:
        apply(db, write(tmp_path, "mysql", "CREAT oops;"))
    assert "1-0" not in str(error.value)


def test_postgres_migration_sessions_carry_their_timeouts(pg_url: str, tmp_path) -> None:
    from dbjobs.migrate import Timeouts, apply_migration

    db = database(pg_url)
    path = write(tmp_path, "postgresql", "CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_t, "
                 "current_setting('statement_timeout') AS stmt_t, "
                 "current_setting('client_connection_check_interval') AS check_t;")
    apply_migration(db, path, timeouts=Timeouts(lock=3, statement=120))
    assert rows(db, "SELECT lock_t, stmt_t, check_t FROM seen") == [("3s", "2min", "2s")]
