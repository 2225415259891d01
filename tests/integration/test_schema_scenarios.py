"""Each change scenario on PostgreSQL, MariaDB and SQLite: generate A → B, apply it to a database
at A holding rows, check it reflects exactly as B with the rows kept, then apply the reverse
and check A again."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.integration.schema_helpers import apply, assert_schema, create, database, rows, write_migration

Build = Callable[[sa.MetaData], None]


def base(md: sa.MetaData, *extra: sa.Column | sa.Constraint | sa.Index, name_type: sa.types.TypeEngine | None = None,
         qty_nullable: bool = True, qty_default: str | None = None, note: str = "note",
         qty_type: type[sa.types.TypeEngine] = sa.Integer, note_comment: str | None = None,
         comment: str | None = None) -> sa.Table:
    return sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", name_type or sa.String(20), nullable=False),
                    sa.Column("qty", qty_type, nullable=qty_nullable,
                              server_default=sa.text(qty_default) if qty_default else None),
                    sa.Column(note, sa.String(50), comment=note_comment), *extra, comment=comment)


def child(md: sa.MetaData, ondelete: str | None = None, fk: bool = True, name: str = "u") -> sa.Table:
    ref = [sa.ForeignKey("t.id", ondelete=ondelete)] if fk else []
    return sa.Table(name, md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("t_id", sa.Integer, *ref))


SCENARIOS: dict[str, tuple[Build, Build]] = {
    "add table": (lambda md: base(md), lambda md: (base(md), child(md))),
    "drop table": (lambda md: (base(md), child(md)), lambda md: base(md)),
    "add nullable column": (lambda md: base(md), lambda md: base(md, sa.Column("extra", sa.Text))),
    "add not null column with default": (
        lambda md: base(md),
        lambda md: base(md, sa.Column("flag", sa.Integer, nullable=False, server_default=sa.text("7")))),
    "drop column": (lambda md: base(md, sa.Column("extra", sa.Text)), lambda md: base(md)),
    "widen type": (lambda md: base(md), lambda md: base(md, name_type=sa.String(100))),
    "nullability": (lambda md: base(md), lambda md: base(md, qty_nullable=False)),
    "default": (lambda md: base(md), lambda md: base(md, qty_default="5")),
    "rename column": (lambda md: base(md), lambda md: base(md, note="memo")),
    "add index": (lambda md: base(md), lambda md: base(md, sa.Index("ix_t_name", "name"))),
    "drop index": (lambda md: base(md, sa.Index("ix_t_name", "name")), lambda md: base(md)),
    "unique": (lambda md: base(md), lambda md: base(md, sa.UniqueConstraint("name", name="uq_t_name"))),
    "foreign key on delete": (lambda md: (base(md), child(md, fk=False)),
                              lambda md: (base(md), child(md, ondelete="CASCADE"))),
    "check constraint": (lambda md: base(md), lambda md: base(md, sa.CheckConstraint("qty >= 0", name="ck_t_qty"))),
    "drop check constraint": (lambda md: base(md, sa.CheckConstraint("qty >= 0", name="ck_t_qty")),
                              lambda md: base(md)),
    "drop foreign key": (lambda md: (base(md), child(md, ondelete="SET NULL")),
                         lambda md: (base(md), child(md, fk=False))),
    "unique index": (lambda md: base(md), lambda md: base(md, sa.Index("ux_t_name", "name", unique=True))),
    "widen integer to bigint": (lambda md: base(md), lambda md: base(md, qty_type=sa.BigInteger)),
    "drop not null and default": (lambda md: base(md, qty_nullable=False, qty_default="3"), lambda md: base(md)),
    "rename table": (lambda md: (base(md), child(md, fk=False)),
                     lambda md: (base(md), child(md, fk=False, name="u_renamed"))),
    "comment": (lambda md: base(md), lambda md: base(md, note_comment="shown to users", comment="things")),
}
ROWS = {"t": [{"id": i, "name": f"n{i}", "qty": i, "note": f"x{i}"} for i in (1, 2, 3)]}


def metadata(build: Build) -> sa.MetaData:
    md = sa.MetaData()
    build(md)
    return md


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_forward_and_back(scenario: str, db_url: str, tmp_path) -> None:
    db = database(db_url)
    build_a, build_b = SCENARIOS[scenario]
    md_a, md_b = metadata(build_a), metadata(build_b)
    create(db, md_a, {"t": [{k: v for k, v in r.items()} for r in ROWS["t"]]})
    path, expected_b = write_migration(db, md_b, tmp_path)
    forward = apply(db, path)
    assert forward["status"] == "applied" and not [n for n in forward["notes"] if "generated from" in n]
    assert_schema(db, expected_b)
    assert rows(db, "SELECT id, name, qty FROM t ORDER BY id") == [(1, "n1", 1), (2, "n2", 2), (3, "n3", 3)]
    if scenario == "rename column":
        assert rows(db, "SELECT memo FROM t ORDER BY id") == [("x1",), ("x2",), ("x3",)]
    reverse = apply(db, path, reverse=True)
    assert reverse["status"] == "reverted" and not [n for n in reverse["notes"] if "generated from" in n]
    from dbjobs.schema.models import snapshot_of_metadata

    assert_schema(db, snapshot_of_metadata(md_a, db.engine))
    assert rows(db, "SELECT id, name, qty FROM t ORDER BY id") == [(1, "n1", 1), (2, "n2", 2), (3, "n3", 3)]


def test_postgres_enum_value_added_and_removed(pg_url: str, tmp_path) -> None:
    db = database(pg_url)

    def build(values: tuple[str, ...]) -> sa.MetaData:
        md = sa.MetaData()
        sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("mood", sa.Enum(*values, name="mood")))
        return md

    md_a, md_b = build(("sad", "ok")), build(("sad", "ok", "happy"))
    create(db, md_a, {"t": [{"id": 1, "mood": "ok"}, {"id": 2, "mood": "sad"}]})
    path, expected = write_migration(db, md_b, tmp_path)
    assert "ADD VALUE 'happy'" in path.read_text()
    apply(db, path)
    assert_schema(db, expected)
    apply(db, path, reverse=True)
    from dbjobs.schema.models import snapshot_of_metadata

    assert_schema(db, snapshot_of_metadata(md_a, "postgresql"))
    assert rows(db, "SELECT id, mood::text FROM t ORDER BY id") == [(1, "ok"), (2, "sad")]


def test_reserved_words_and_mixed_case_names_are_quoted(db_url: str, tmp_path) -> None:
    from dbjobs.schema.models import dialect_for, snapshot_of_metadata

    db = database(db_url)
    select = dialect_for(db.engine).identifier_preparer.quote("select")

    def build(changed: bool) -> sa.MetaData:
        md = sa.MetaData()
        extra = [sa.Column("group", sa.String(10), server_default="g"), sa.Index("ix_order_user", "user"),
                 sa.CheckConstraint(f"{select} >= 0", name="ck_order_select")] if changed else []
        sa.Table("order", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("user", sa.String(20)),
                 sa.Column("select", sa.Integer, nullable=not changed), sa.Column("Mixed", sa.Integer), *extra)
        return md

    create(db, build(False), {"order": [{"id": 1, "user": "u", "select": 1, "Mixed": 2}]})
    path, expected = write_migration(db, build(True), tmp_path)
    apply(db, path)
    assert_schema(db, expected)
    apply(db, path, reverse=True)
    assert_schema(db, snapshot_of_metadata(build(False), db.engine))
    engine = db.create_engine()
    with engine.connect() as conn:
        assert conn.execute(sa.select(build(False).tables["order"])).all() == [(1, "u", 1, 2)]
    engine.dispose()
