"""Pure text handling: type/default/check normalization, SQL splitting, the migration file format, lint."""

from __future__ import annotations

from datetime import datetime

import pytest

from dbjobs.errors import MigrationError
from dbjobs.schema.changes import Change
from dbjobs.schema.lint import DATA, DESTRUCTIVE, LOCKING, RENAME, is_widening, lint
from dbjobs.schema.migration_file import MigrationFile, next_migration_name, parse_migration
from dbjobs.schema.normalize import expression_key, normalize_default, normalize_expression, normalize_type
from dbjobs.schema.sqlparse import split_statements


@pytest.mark.parametrize(("engine", "raw", "expected"), [
    ("postgresql", "character varying(50)", "varchar(50)"),
    ("postgresql", "VARCHAR(50)", "varchar(50)"),
    ("postgresql", "timestamp with time zone", "timestamptz"),
    ("postgresql", "TIMESTAMP WITHOUT TIME ZONE", "timestamp"),
    ("postgresql", "BOOL", "boolean"),
    ("postgresql", "numeric(10, 2)", "numeric(10,2)"),
    ("postgresql", "FLOAT", "double precision"),
    ("mysql", "tinyint(1)", "boolean"),
    ("mysql", "BOOL", "boolean"),
    ("mysql", "int(11)", "int"),
    ("mysql", "INTEGER", "int"),
    ("mysql", "bigint(20) unsigned", "bigint unsigned"),
    ("mysql", "ENUM('A','b')", "enum('A','b')"),
    ("sqlite", "VARCHAR(20)", "varchar(20)"),
])
def test_type_aliases_normalize_to_one_spelling(engine: str, raw: str, expected: str) -> None:
    assert normalize_type(engine, raw) == expected


@pytest.mark.parametrize(("engine", "raw", "expected"), [
    ("postgresql", "'abc'::character varying", "'abc'"),
    ("postgresql", "'-1'::integer", "-1"),
    ("postgresql", "now()", "current_timestamp"),
    ("postgresql", "CURRENT_TIMESTAMP", "current_timestamp"),
    ("mysql", "current_timestamp()", "current_timestamp"),
    ("mysql", "NULL", None),
    ("mysql", "true", "1"),
    ("mysql", "0.00", "0"),
    ("sqlite", "('x')", "'x'"),
    ("sqlite", None, None),
])
def test_defaults_normalize(engine: str, raw: str | None, expected: str | None) -> None:
    assert normalize_default(engine, raw) == expected


def test_checks_compare_without_engine_parentheses_casts_and_quotes() -> None:
    pg = normalize_expression("postgresql", "CHECK (((price > (0)::numeric) AND (qty < 10)))")
    mysql = normalize_expression("mysql", "`price` > 0 and `qty` < 10")
    assert expression_key(pg) == expression_key(mysql) == expression_key("price > 0 AND qty < 10")


def test_statements_split_outside_quotes_and_comments() -> None:
    sql = "-- note; here\nINSERT INTO a VALUES ('x;y', \"q;\");\nCREATE TABLE `b;` (id int); -- tail\n"
    assert split_statements(sql) == ["INSERT INTO a VALUES ('x;y', \"q;\")", "CREATE TABLE `b;` (id int)"]


def test_migration_file_round_trips_and_checksums_statements_only() -> None:
    from dbjobs.schema.lint import LintWarning

    migration = MigrationFile("0001_20260101T000000_x", "sqlite", "a" * 64, "b" * 64,
                              [LintWarning(DESTRUCTIVE, "drops column t.x and its data")],
                              ["ALTER TABLE t DROP COLUMN x"], ["ALTER TABLE t ADD COLUMN x INTEGER"],
                              ("c" * 64, "d" * 64))
    parsed = parse_migration(migration.to_text(), migration.name)
    assert parsed == migration
    edited = parse_migration(migration.to_text().replace("-- Statements", "-- reviewed by me\n-- Statements"), "n")
    assert edited.checksum == migration.checksum
    assert parse_migration(migration.to_text().replace("DROP COLUMN x", "DROP COLUMN y"), "n").checksum \
        != migration.checksum
    assert parsed.destructive


def test_a_sqlite_rebuild_is_not_destructive_but_a_plain_drop_is() -> None:
    rebuild = MigrationFile("n", "sqlite", None, None, [], [
        'CREATE TABLE "_dbjobs_new_t" (id INTEGER)', 'INSERT INTO "_dbjobs_new_t" (id) SELECT id FROM "t"',
        'DROP TABLE "t"', 'ALTER TABLE "_dbjobs_new_t" RENAME TO "t"'])
    assert not rebuild.destructive
    assert MigrationFile("n", "sqlite", None, None, [], ["DROP TABLE t"]).destructive
    assert not MigrationFile("n", "sqlite", None, None, [], ["ALTER TABLE t DROP CONSTRAINT ck"]).destructive


@pytest.mark.parametrize("text", ["", "CREATE TABLE a (id int);", "-- +dbjobs reverse\n-- +dbjobs forward\n",
                                  "-- engine: db2\n-- +dbjobs forward\n-- +dbjobs reverse\n"])
def test_malformed_migration_files_are_refused(text: str) -> None:
    with pytest.raises(MigrationError):
        parse_migration(text, "bad")


def test_migration_names_are_numbered_after_the_last_file(tmp_path) -> None:
    (tmp_path / "0007_20260101T000000_old.sql").write_text("")
    name = next_migration_name(tmp_path, "Add column users.email!", datetime(2026, 11, 27, 21, 5, 9))
    assert name == "0008_20261127T210509_add_column_users_email"


def _col(name: str, type_: str = "integer", nullable: bool = True, default: str | None = None) -> dict:
    return {"name": name, "type": type_, "nullable": nullable, "default": default, "autoincrement": False,
            "comment": None}


def test_lint_categories() -> None:
    changes = [
        Change("drop_column", "t", _col("x"), None),
        Change("alter_column", "t", _col("n", "varchar(50)"), _col("n", "varchar(10)")),
        Change("add_column", "t", None, _col("req", nullable=False)),
        Change("rename_column", "t", _col("a"), _col("b")),
        Change("add_index", "t", None, {"name": "ix", "columns": ["a"], "unique": False, "where": None}),
    ]
    categories = [w.category for w in lint(changes, "postgresql")]
    assert categories.count(DESTRUCTIVE) == 2 and DATA in categories and RENAME in categories
    assert LOCKING in categories
    assert DATA not in [w.category for w in lint(changes, "postgresql", {2: False})]
    assert any("will fail" in w.message for w in lint(changes, "postgresql", {2: True}))


@pytest.mark.parametrize(("old", "new", "widening"), [
    ("varchar(20)", "varchar(100)", True), ("varchar(100)", "varchar(20)", False), ("integer", "bigint", True),
    ("bigint", "integer", False), ("varchar(20)", "text", True), ("numeric(10,2)", "numeric(12,2)", True),
    ("numeric(10,2)", "numeric(10,3)", False), ("text", "integer", False),
])
def test_widening(old: str, new: str, widening: bool) -> None:
    assert is_widening(old, new) is widening


def test_models_that_an_engine_cannot_express_are_a_config_error() -> None:
    import sqlalchemy as sa

    from dbjobs.errors import ConfigError
    from dbjobs.schema.models import snapshot_of_metadata

    md = sa.MetaData()
    sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String()))
    with pytest.raises(ConfigError, match="model table 't' cannot be expressed in mysql"):
        snapshot_of_metadata(md, "mysql")
    orphan = sa.MetaData()
    sa.Table("c", orphan, sa.Column("p_id", sa.ForeignKey("missing.id")))
    with pytest.raises(ConfigError, match="model table 'c'"):
        snapshot_of_metadata(orphan, "postgresql")


def test_bad_models_specs_are_config_errors() -> None:
    from dbjobs.errors import ConfigError
    from dbjobs.schema.snapshot import snapshot_from_models

    for spec, message in [("nocolon", "module:attribute"), ("no_such_module_x:md", "cannot import"),
                          ("json:nothing", "has no attribute"), ("json:dumps", "neither a MetaData")]:
        with pytest.raises(ConfigError, match=message):
            snapshot_from_models(spec, "sqlite")


@pytest.mark.parametrize(("default", "extra", "expected"), [
    ("abc", "", "'abc'"), ("it's", "", "'it''s'"), ("0", "", "0"), ("-1.5", "", "-1.5"),
    ("CURRENT_TIMESTAMP", "DEFAULT_GENERATED", "CURRENT_TIMESTAMP"), ("\x02", "", None),
])
def test_mysql8_literal_defaults_are_quoted_like_mariadb(default: str, extra: str, expected: str | None) -> None:
    from dbjobs.schema.catalog.mysql import mysql8_default

    assert mysql8_default(default, extra) == expected


def test_compound_statements_round_trip_through_a_file():
    from dbjobs.schema.sqlparse import terminated

    body = "CREATE TRIGGER t1 BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.v = 1; SET NEW.w = ';'; END"
    commented = "CREATE INDEX i ON t (a) -- why"
    script = "\n".join(terminated(s) for s in ["SELECT 1", body, commented, "SELECT 2"])
    assert split_statements(script) == ["SELECT 1", body, "CREATE INDEX i ON t (a)", "SELECT 2"]
