"""Data-dependent warnings come from the data: the database is asked whether a new unique,
NOT NULL, check or foreign key would fail on the rows it holds now."""

from __future__ import annotations

import sqlalchemy as sa

from dbjobs.schema.diff import diff
from dbjobs.schema.lint import DATA, lint
from dbjobs.schema.models import snapshot_of_metadata
from dbjobs.schema.probe import probe_data
from dbjobs.schema.snapshot import take_snapshot
from tests.integration.schema_helpers import create, database


def _models(strict: bool) -> sa.MetaData:
    md = sa.MetaData()
    sa.Table("p", md, sa.Column("id", sa.Integer, primary_key=True))
    extra = [sa.UniqueConstraint("name", name="uq_t_name"), sa.CheckConstraint("qty >= 0", name="ck_t_qty"),
             sa.ForeignKeyConstraint(["p_id"], ["p.id"], name="fk_t_p")] if strict else []
    sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(20)),
             sa.Column("qty", sa.Integer, nullable=not strict), sa.Column("p_id", sa.Integer), *extra)
    return md


def _data_warnings(db) -> list[str]:  # type: ignore[no-untyped-def]
    changes = diff(take_snapshot(db), snapshot_of_metadata(_models(True), db.engine))
    return sorted(w.message for w in lint(changes, db.engine, probe_data(db, changes)) if w.category == DATA)


def test_bad_data_makes_definite_warnings(db_url: str) -> None:
    db = database(db_url)
    create(db, _models(False), {"p": [{"id": 1}], "t": [{"id": 1, "name": "a", "qty": None, "p_id": 1},
                                                        {"id": 2, "name": "a", "qty": -1, "p_id": 9}]})
    warnings = _data_warnings(db)
    assert len(warnings) == 4 and all("will fail" in w for w in warnings)


def test_clean_data_makes_no_data_warnings(db_url: str) -> None:
    db = database(db_url)
    create(db, _models(False), {"p": [{"id": 1}], "t": [{"id": 1, "name": "a", "qty": 1, "p_id": 1},
                                                        {"id": 2, "name": "b", "qty": 2, "p_id": None}]})
    assert _data_warnings(db) == []
