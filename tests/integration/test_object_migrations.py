"""MariaDB and SQLite migrations between two real schemas, as a user makes them (issue 15).

Each case is two scripts, `a` (before) and `b` (after). A database is created at `a`,
`detect-migrations` takes its baseline, the database is rebuilt as `b`, and the next
`detect-migrations` writes the migration file. The file is then applied to a fresh database
at `a` (with rows in it), whose schema must read back from the catalogs exactly as `b`'s does;
its reverse section must bring back `a`. The catalogs are read by this test on its own terms
(information_schema and SHOW CREATE on MariaDB, sqlite_master and the PRAGMAs on SQLite), not
through the snapshot code under test. The case names carry the defect number of the issue.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dbjobs.dburl import DatabaseURL, parse_url
from dbjobs.errors import MigrationError
from dbjobs.migrate import apply_migration
from dbjobs.schema.detect import detect_migrations
from dbjobs.schema.sqlparse import split_statements
from tests.conftest import MYSQL_ADMIN_URL, mysql_database

MYSQL_CASES = {
    "1 unsigned auto_increment table": (
        "create table keep (x int)",
        "create table keep (x int); create table t (id int unsigned not null auto_increment primary key, "
        "b bigint unsigned zerofill)",
        "insert into keep values (1)",
    ),
    "2 literals in parentheses": (
        "create table t (id int primary key, ts datetime(6) not null default '2000-01-01', s varchar(5))",
        """create table t (id int primary key, ts datetime(6) not null default current_timestamp(6),
                           s varchar(5) default 'a' check (s in ('a', 'b')), n int default (1 + 1));
           create view v as select count(1) as n, sum(id) as total from t where s in ('a')""",
        "insert into t (id, s) values (1, 'a')",
    ),
    "3 views without the database's name": (
        "create table t (id int)",
        "create table t (id int); create view v as select id, (select count(*) from t) as n from t",
        "insert into t values (1), (2)",
    ),
    "5 modify keeps collation, charset and on update": (
        """create table t (id int primary key, code varchar(10) collate utf8mb4_bin not null,
                           n int, name varchar(20) collate utf8mb4_general_ci,
                           ts timestamp not null default current_timestamp on update current_timestamp,
                           u datetime, unique key code (code));
           create table c (s varchar(10), t text) default charset=utf8mb4""",
        """create table t (id int primary key, code varchar(10) collate utf8mb4_bin not null,
                           n bigint, name varchar(20) collate utf8mb4_unicode_ci,
                           ts timestamp not null default current_timestamp on update current_timestamp,
                           u datetime default current_timestamp on update current_timestamp,
                           unique key code (code)) comment 'kept';
           create table c (s varchar(10), t text) default charset=latin1""",
        "insert into t (id, code, n) values (1, 'a', 1), (2, 'A', 2)",
    ),
    "6 primary keys": (
        """create table d (id int not null primary key, v int);
           create table w (id int not null auto_increment primary key, x int not null default 0);
           create table n (v int)""",
        """create table d (v int);
           create table w (id int not null auto_increment, x int not null default 0, primary key (id, x));
           create table n (id int not null auto_increment primary key, v int)""",
        "insert into d values (1, 1); insert into w (x) values (1), (2); insert into n values (5), (6)",
    ),
    "6 column order": (
        "create table o (a int, b int, c int)",
        "create table o (c int, a int, d int default 7, b int)",
        "insert into o values (1, 2, 3)",
    ),
    "7 generated columns": (
        "create table g (a int, b int as (a + 1) virtual, c int as (a * 2) stored, keep int)",
        "create table g (a int, b int as (a + 2) virtual, c int as (a * 3) persistent, d int as (a) virtual, keep int)",
        "insert into g (a, keep) values (1, 1)",
    ),
    "8 strings that look like numbers": (
        "create table s (v varchar(10) default '1.00', w decimal(5,2) default 1.5, e enum('1', '2') default '1')",
        "create table s (v varchar(10) default '1', w decimal(5,2) default 1.50, e enum('1', '2') default '2')",
        "insert into s values ()",
    ),
    "9 indexes and view options": (
        """create table p (id int primary key);
           create table i (id int primary key, body text, g point not null, name varchar(50), pid int, qid int,
                           key ix_name (name));
           create view sv as select id from p""",
        """create table p (id int primary key);
           create table i (id int primary key, body text, g point not null, name varchar(50), pid int, qid int,
                           key ix_renamed (name), fulltext key ft (body), spatial key sp (g), key pre (name(10)),
                           key inv (pid) ignored, constraint fk2 foreign key (qid) references p (id));
           create sql security invoker view sv as select id from p with check option""",
        "insert into p values (1); insert into i values (1, 'x', point(1, 1), 'n', 1, 1)",
    ),
    "9 foreign keys and checks": (
        """create table p (id int primary key, code varchar(10) unique);
           create table c (id int primary key, pid int, constraint ck check (pid > 0),
                           constraint fk foreign key (pid) references p (id))""",
        """create table p (id bigint primary key, code varchar(10) unique);
           create table c (id int primary key, pid bigint, pcode varchar(10), constraint ck check (pid > 1),
                           constraint fk foreign key (pid) references p (id) on delete cascade,
                           constraint fk_code foreign key (pcode) references p (code));
           create table cyc1 (id int primary key, o int);
           create table cyc2 (id int primary key, o int, constraint c2 foreign key (o) references cyc1 (id));
           alter table cyc1 add constraint c1 foreign key (o) references cyc2 (id)""",
        "insert into p values (1, 'a'), (2, 'b'); insert into c values (1, 2)",
    ),
    "10 views on views, invisible columns, descending keys, table options": (
        """create table t (a int, b int, j json);
           create view v1 as select a from t; create view v2 as select a from v1""",
        """create table t (a int, b int, j json, h int invisible default 3, key d (b desc, a)) engine=MyISAM
           comment='c' row_format=fixed;
           create view v1 as select a, b from t; create view v2 as select a, b from v1 where a > 0""",
        "insert into t (a, b) values (1, 2)",
    ),
    "10 triggers, routines, events, sequences and partitioning": (
        "create table t (id int not null, v int, primary key (id))",
        """create table t (id int not null, v int, primary key (id)) partition by hash (id) partitions 3;
           create table log (msg varchar(50));
           DELIMITER //
           create trigger t1 before insert on t for each row
             begin set new.v = coalesce(new.v, 0); set new.v = new.v + 1; end//
           create trigger t2 before insert on t for each row follows t1 set new.v = new.v * 10//
           create procedure clean(in below int) begin delete from t where v < below; insert into log values ('x'); end//
           create function twice(x int) returns int deterministic return x * 2//
           DELIMITER ;
           create event nightly on schedule every 1 day starts '2030-01-01 00:00:00' do delete from log;
           create sequence sq start with 10 increment by 5""",
        "insert into t values (1, 1), (2, 2)",
    ),
}

REBUILT_OBJECTS = """;
    create index "ix a" on r (a) -- the index on a
    ;
    create index ix_expr on r (a + b) where b > 0;
    create table log (msg text);
    create trigger tr after insert on r begin insert into log values ('r'); insert into log values (new.id); end;
    create view rv (x, y) as select a, b from r;
    create view rv2 as select x from rv"""

SQLITE_CASES = {
    "2 literals in parentheses": (
        "create table t (id integer primary key, ts text, s text)",
        """create table t (id integer primary key, ts text default (datetime('now')),
                           s text default 'a' check (s in ('a')), n int default (1 + 1));
           create view v as select count(1) as n, sum(id) as total from t where s in ('a')""",
        "insert into t (id, s) values (1, 'a')",
    ),
    "4 rebuild keeps indexes, triggers and views": (
        "create table r (id integer primary key autoincrement, a int, b int, gone text)" + REBUILT_OBJECTS,
        """create table r (id integer primary key autoincrement, a int, b int not null default 0,
                           g int generated always as (a + 1) virtual, h int as (a * 2) stored) strict"""
        + REBUILT_OBJECTS,
        "insert into r (a, b, gone) values (1, 2, 'x'), (3, 4, 'y'); delete from r where id = 2",
    ),
    "4 a column added as ADD COLUMN writes it": (
        "create table t (a int, unique(a)); create index ta on t (a)",
        "create table t (a int, b text default 'x' collate nocase, unique(a)); create index ta on t (a)",
        "insert into t values (1)",
    ),
    "4 without rowid and constraints": (
        "create table w (k text primary key, v int); create table p (id integer primary key)",
        """create table w (k text primary key, v int check (v > 0), pid int references p (id) on delete cascade,
                           unique (v, pid)) without rowid;
           create table p (id integer primary key)""",
        "insert into w values ('a', 1)",
    ),
    "4 rebuilt parent keeps its children": (
        """create table p (id integer primary key, n text);
           create table c (pid int references p (id) on delete cascade, note text);
           create table gone (x int); create view gv as select x from gone""",
        """create table p (id integer primary key, n text not null default '', m int);
           create table c (pid int references p (id) on delete cascade);
           create view gone as select 1 as x""",
        "insert into p values (1, 'x'), (2, 'y'); insert into c values (1, 'a'), (2, 'b'); insert into gone values (1)",
    ),
    "8 strings that look like numbers": (
        "create table s (v text default '1.00', w real default 1.5)",
        "create table s (v text default '1', w real default 1.50)",
        "insert into s default values",
    ),
    "10 triggers and views with column lists": (
        "create table t (x int); create table u (y int)",
        """create table t (x int); create table u (y int);
           create trigger tt after update on t when new.x > 0
             begin update u set y = new.x; insert into u values (1); end;
           create view vu (a) as select y from u;
           create trigger iv instead of insert on vu begin insert into u values (new.a); end;
           create index ux on u (y desc) where y is not null""",
        "insert into t values (1); insert into u values (2)",
    ),
}


def run_mysql(db: DatabaseURL, script: str) -> None:
    engine = db.create_engine()
    try:
        with engine.begin() as conn:
            for statement in split_statements(script):
                conn.exec_driver_sql(statement.replace("%", "%%"))
    finally:
        engine.dispose()


def run_sqlite(db: DatabaseURL, script: str) -> None:
    with sqlite3.connect(db.sqlite_path) as conn:
        conn.executescript(script)
    conn.close()


def _definer_free(text: str) -> str:
    return re.sub(r" DEFINER=`[^`]*`@`[^`]*`", "", text)


def _keys_sorted(create: str) -> str:
    """SHOW CREATE TABLE with its key lines in name order (the server lists them in the order they were made)."""
    lines = [line.rstrip(",") for line in create.split("\n")]
    end = next(i for i, line in enumerate(lines) if line.startswith(")"))
    columns = [line for line in lines[1:end] if line.startswith("  `")]
    keys = sorted(line for line in lines[1:end] if not line.startswith("  `"))
    return "\n".join([lines[0], *columns, *keys, *lines[end:]])


def mysql_state(db: DatabaseURL) -> dict[str, Any]:
    """The schema as the catalogs tell it, database name and counters aside."""
    engine = db.create_engine()
    try:
        with engine.connect() as conn:
            def q(sql: str) -> list[tuple]:
                return [tuple(r) for r in conn.exec_driver_sql(sql)]
            own = q("SELECT DATABASE()")[0][0]
            state: dict[str, Any] = {"columns": q(
                "SELECT TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, "
                "EXTRA, GENERATION_EXPRESSION, CHARACTER_SET_NAME, COLLATION_NAME, COLUMN_COMMENT "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'dbjobs_migrations' "
                "ORDER BY 1, 2"),
                "indexes": q("SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART, INDEX_TYPE, "
                             "NON_UNIQUE, IGNORED FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                             "AND TABLE_NAME <> 'dbjobs_migrations' ORDER BY 1, 2, 3"),
                "triggers": q("SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, "
                              "ACTION_ORDER, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                              "WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1"),
                "views": q("SELECT TABLE_NAME, REPLACE(VIEW_DEFINITION, CONCAT('`', DATABASE(), '`.'), ''), "
                           "CHECK_OPTION, SECURITY_TYPE, ALGORITHM FROM information_schema.VIEWS "
                           "WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1"),
                "routines": [(n, _definer_free(q(f"SHOW CREATE {k} `{n}`")[0][2])) for n, k in q(
                    "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                    "WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1")],
                "events": [_definer_free(q(f"SHOW CREATE EVENT `{n}`")[0][3]) for (n,) in q(
                    "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY 1")],
            }
            tables = q("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                       "AND TABLE_NAME <> 'dbjobs_migrations' AND TABLE_TYPE <> 'VIEW' ORDER BY 1")
            state["tables"] = [_keys_sorted(re.sub(r" AUTO_INCREMENT=\d+", "", q(f"SHOW CREATE TABLE `{t}`")[0][1]))
                               for t, _ in tables]
            state["views_sql"] = [_definer_free(q(f"SHOW CREATE VIEW `{v[0]}`")[0][1]) for v in state["views"]]
            assert own not in repr(state), "an object names the database it lives in"
            return state
    finally:
        engine.dispose()


def sqlite_state(db: DatabaseURL) -> dict[str, Any]:
    """The schema as sqlite_master and the PRAGMAs tell it (a table's name as SQLite re-quotes it aside)."""
    conn = sqlite3.connect(db.sqlite_path)
    try:
        def q(sql: str) -> list[tuple]:
            return [tuple(r) for r in conn.execute(sql)]
        master = q("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                   "AND name <> 'dbjobs_migrations' ORDER BY 1, 2")
        state: dict[str, Any] = {"master": [(t, n, tb, _sqlite_text(s)) for t, n, tb, s in master]}
        for kind, name, _, _ in master:
            if kind == "table":
                state[f"xinfo {name}"] = q(f"SELECT * FROM pragma_table_xinfo('{name}')")
                state[f"indexes {name}"] = q(f"SELECT name, \"unique\", origin, partial "
                                             f"FROM pragma_index_list('{name}') ORDER BY name")
                state[f"fks {name}"] = q(f"SELECT * FROM pragma_foreign_key_list('{name}')")
            if kind == "index":
                state[f"xinfo {name}"] = q(f"SELECT * FROM pragma_index_xinfo('{name}')")
        return state
    finally:
        conn.close()


def _sqlite_text(sql: str) -> str:
    """CREATE text without the table's name (SQLite re-quotes it on rename) and without `--` comments
    (a migration file's statements carry none)."""
    sql = re.sub(r"^CREATE TABLE (\"[^\"]*\"|\S+?)\s*\(", "(", sql)
    return re.sub(r"--[^\n]*", "", sql).strip()


class Engine:
    """What the test needs of one engine: running a script, reading the schema, starting again empty."""

    def __init__(self, run: Callable[[DatabaseURL, str], None], state: Callable[[DatabaseURL], dict[str, Any]],
                 wipe: Callable[[DatabaseURL], None]) -> None:
        self.run, self.state, self.wipe = run, state, wipe

    def tables(self, state: dict[str, Any]) -> set[str]:
        """The base tables of a state."""
        if "master" in state:
            return {n for kind, n, _, _ in state["master"] if kind == "table"}
        return {t[0] for t in state["columns"]} - {v[0] for v in state["views"]}

    def count(self, db: DatabaseURL, table: str) -> int:
        """How many rows `table` holds."""
        engine = db.create_engine()
        try:
            with engine.connect() as conn:
                quote = '"' if db.engine == "sqlite" else "`"
                return int(conn.exec_driver_sql(f"SELECT count(*) FROM {quote}{table}{quote}").scalar())
        finally:
            engine.dispose()


def _wipe_mysql(db: DatabaseURL) -> None:
    admin = sa.create_engine(f"mysql+pymysql://{MYSQL_ADMIN_URL.split('://', 1)[1]}", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{db.database}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{db.database}` CHARACTER SET utf8mb4")
    finally:
        admin.dispose()


@pytest.fixture
def mysql_engine() -> Iterator[tuple[Engine, DatabaseURL, DatabaseURL]]:
    with mysql_database() as source, mysql_database() as target:
        yield (Engine(run_mysql, mysql_state, _wipe_mysql),
               parse_url("default", source), parse_url("target", target))


@pytest.fixture
def sqlite_engine(tmp_path) -> tuple[Engine, DatabaseURL, DatabaseURL]:
    return (Engine(run_sqlite, sqlite_state, lambda db: db.sqlite_path.unlink()),
            parse_url("default", f"sqlite:///{tmp_path / 'source.sqlite3'}"),
            parse_url("target", f"sqlite:///{tmp_path / 'target.sqlite3'}"))


def detect_file(engine: Engine, source: DatabaseURL, a_sql: str, b_sql: str, schema_dir: Path
                ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The user's path: database at a, baseline, rebuilt as b, detect writes the file."""
    engine.run(source, a_sql)
    state_a = engine.state(source)
    assert detect_migrations(source, schema_dir).baseline
    engine.wipe(source)
    engine.run(source, b_sql)
    state_b = engine.state(source)
    result = detect_migrations(source, schema_dir)
    assert result.file, result
    return Path(result.file), state_a, state_b


def check_case(engine: Engine, source: DatabaseURL, target: DatabaseURL, case: tuple[str, str, str],
               schema_dir: Path) -> Path:
    a_sql, b_sql, data = case
    path, state_a, state_b = detect_file(engine, source, a_sql, b_sql, schema_dir)
    engine.run(target, a_sql)
    engine.run(target, data)
    kept = [t for t in engine.tables(state_a) if t in engine.tables(state_b)]
    counts = {t: engine.count(target, t) for t in kept}
    apply_migration(target, path, allow_destructive=True, lock_timeout=5)
    assert engine.state(target) == state_b
    assert {t: engine.count(target, t) for t in kept} == counts, "rows were lost"
    apply_migration(target, path, allow_destructive=True, lock_timeout=5, reverse=True)
    assert engine.state(target) == state_a
    return path


@pytest.mark.parametrize("case", sorted(MYSQL_CASES))
def test_mariadb_a_plus_migration_is_b_and_reverse_is_a(mysql_engine, tmp_path, case):
    engine, source, target = mysql_engine
    path = check_case(engine, source, target, MYSQL_CASES[case], tmp_path / "migrations")
    assert source.database not in path.read_text()


@pytest.mark.parametrize("case", sorted(SQLITE_CASES))
def test_sqlite_a_plus_migration_is_b_and_reverse_is_a(sqlite_engine, tmp_path, case):
    engine, source, target = sqlite_engine
    check_case(engine, source, target, SQLITE_CASES[case], tmp_path / "migrations")


def migrated(engine: Engine, source: DatabaseURL, target: DatabaseURL, case: tuple[str, str, str],
             schema_dir: Path) -> None:
    """`target` at a with the case's rows, then migrated with the file detected on `source`."""
    path, _, _ = detect_file(engine, source, case[0], case[1], schema_dir)
    engine.run(target, case[0])
    engine.run(target, case[2])
    apply_migration(target, path, allow_destructive=True, lock_timeout=5)


def test_sqlite_rebuild_keeps_the_autoincrement_counter_and_the_trigger_works(sqlite_engine, tmp_path):
    engine, source, target = sqlite_engine
    migrated(engine, source, target, SQLITE_CASES["4 rebuild keeps indexes, triggers and views"], tmp_path)
    engine.run(target, "insert into r (a) values (9)")
    conn = sqlite3.connect(target.sqlite_path)
    assert conn.execute("SELECT id, a, g, h FROM r ORDER BY id").fetchall() == [(1, 1, 2, 2), (3, 9, 10, 18)]
    assert conn.execute("SELECT count(*) FROM log").fetchone() == (6,)  # the trigger fired, before and after
    assert conn.execute("SELECT x FROM rv2 ORDER BY x").fetchall() == [(1,), (9,)]
    conn.close()


def test_mariadb_collation_and_on_update_survive_a_modify(mysql_engine, tmp_path):
    engine, source, target = mysql_engine
    migrated(engine, source, target, MYSQL_CASES["5 modify keeps collation, charset and on update"], tmp_path)
    engine.run(target, "insert into t (id, code) values (3, 'b'), (4, 'B')")  # still case-sensitive
    assert engine.count(target, "t") == 4


def test_mariadb_view_reads_its_own_database(mysql_engine, tmp_path):
    engine, source, target = mysql_engine
    a_sql, b_sql, _ = MYSQL_CASES["3 views without the database's name"]
    path, _, _ = detect_file(engine, source, a_sql, b_sql, tmp_path / "migrations")
    engine.run(source, "insert into t values (1), (2), (3)")
    engine.run(target, a_sql)
    apply_migration(target, path, lock_timeout=5)
    engine.run(target, "insert into t values (7)")
    assert _rows(target, "SELECT id, n FROM v") == [(7, 1)]


def test_unsupported_change_is_flagged_and_needs_the_flag(sqlite_engine, tmp_path):
    engine, source, target = sqlite_engine
    a_sql = "create virtual table f using fts5 (body)"
    b_sql = "create virtual table f using fts5 (body, title)"
    path, _, _ = detect_file(engine, source, a_sql, b_sql, tmp_path / "migrations")
    assert "-- warning[unsupported]: virtual table f changed" in path.read_text()
    engine.run(target, a_sql)
    with pytest.raises(MigrationError, match="allow-unsupported"):
        apply_migration(target, path, lock_timeout=5)


def test_failing_statement_is_one_line_and_changes_nothing_on_sqlite(sqlite_engine, tmp_path):
    engine, source, target = sqlite_engine
    path, _, _ = detect_file(engine, source, "create table t (x int)", "create table t (x int not null)",
                             tmp_path / "migrations")
    engine.run(target, "create table t (x int); insert into t values (null)")
    with pytest.raises(MigrationError) as failure:
        apply_migration(target, path, lock_timeout=5)
    assert "\n" not in str(failure.value) and "NOT NULL constraint failed" in str(failure.value)
    assert engine.count(target, "t") == 1
    assert _rows(target, "SELECT sql FROM sqlite_master WHERE name = 't'") == [("CREATE TABLE t (x int)",)]


def _rows(db: DatabaseURL, sql: str) -> list[tuple]:
    engine = db.create_engine()
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def test_models_mode_keeps_unsigned_auto_increment_function_defaults_and_numeric_strings(mysql_url, tmp_path):
    """Against models (the per-table comparison): defects 1, 2 and 8 of the issue on that path."""
    from sqlalchemy.dialects import mysql

    from tests.integration.schema_helpers import apply, assert_schema, write_migration

    db = parse_url("default", mysql_url)
    run_mysql(db, "create table t (id int unsigned not null auto_increment primary key, v varchar(10) default '1');"
                  "insert into t (v) values ('x')")
    models = sa.MetaData()
    sa.Table("t", models, sa.Column("id", mysql.INTEGER(unsigned=True), primary_key=True, autoincrement=True),
             sa.Column("v", sa.String(10), server_default="1.00"),
             sa.Column("ts", mysql.DATETIME(fsp=6), server_default=sa.text("current_timestamp(6)")))
    sa.Table("u", models, sa.Column("id", mysql.BIGINT(unsigned=True), primary_key=True, autoincrement=True))
    path, desired = write_migration(db, models, tmp_path)
    text = path.read_text()
    assert "current_timestamp(6)" in text and "DEFAULT 1.00" in text and "AUTO_INCREMENT" in text
    apply(db, path)
    assert_schema(db, desired)
    run_mysql(db, "insert into t (v) values (default); insert into u values ()")
    assert _rows(db, "SELECT v, ts IS NOT NULL FROM t ORDER BY id") == [("x", 1), ("1.00", 1)]
    apply(db, path, reverse=True)
    assert _rows(db, "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                     "AND TABLE_NAME = 'u'") == [(0,)]


def test_a_history_from_before_objects_shows_no_drift(sqlite_engine, tmp_path):
    from dbjobs.schema.history import record_snapshot
    from dbjobs.schema.snapshot import Snapshot, take_snapshot
    from dbjobs.schema.status import probe

    engine, source, _ = sqlite_engine
    engine.run(source, "create table t (x int); create trigger tr after insert on t begin select 1; end")
    live = take_snapshot(source)
    record_snapshot(tmp_path, source.alias, Snapshot(live.engine, live.tables, live.enums, live.sequences, live.views))
    state = probe(source, tmp_path)
    assert state.fingerprint == state.snapshot_fingerprint
    result = detect_migrations(source, tmp_path)  # the next detect records the objects, without a migration
    assert not result.changed and result.snapshot_file
    engine.run(source, "drop trigger tr")
    assert detect_migrations(source, tmp_path).changes == ["drop trigger tr"]
