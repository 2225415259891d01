"""The pure diff: property tests (diff(a, a) is empty; applying diff(a, b) to a gives b; the
inverse brings b back to a) and examples for ordering and rename detection."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbjobs.schema.builder import empty_table
from dbjobs.schema.changes import apply_changes, invert
from dbjobs.schema.diff import comparable, diff
from dbjobs.schema.snapshot import Snapshot

TYPES = ["integer", "bigint", "varchar(20)", "text", "boolean", "numeric(10,2)"]
COLUMN_NAMES = ["id", "a", "b", "c", "select", "Mixed"]
TABLE_NAMES = ["t1", "t2", "order", "T4"]


@st.composite
def tables(draw) -> dict:  # type: ignore[no-untyped-def]
    names = draw(st.lists(st.sampled_from(TABLE_NAMES), unique=True, max_size=4))
    result = {}
    for name in names:
        columns = ["id", *draw(st.lists(st.sampled_from(COLUMN_NAMES[1:]), unique=True, max_size=4))]
        table = empty_table()
        table["columns"] = [{"name": c, "type": "integer" if c == "id" else draw(st.sampled_from(TYPES)),
                             "nullable": c != "id" and draw(st.booleans()),
                             "default": draw(st.sampled_from([None, "0", "'x'"])) if c != "id" else None,
                             "autoincrement": c == "id", "comment": draw(st.sampled_from([None, "note"]))}
                            for c in columns]
        table["primary_key"] = {"name": None, "columns": ["id"]}
        others = columns[1:]
        if others and draw(st.booleans()):
            table["uniques"].append({"name": None, "columns": [draw(st.sampled_from(others))]})
            if draw(st.booleans()):
                table["uniques"].append(dict(table["uniques"][0]))
        if others and draw(st.booleans()):
            table["indexes"].append({"name": f"ix_{name}", "columns": [draw(st.sampled_from(others))],
                                     "unique": draw(st.booleans()), "where": None})
        if draw(st.booleans()):
            table["checks"].append({"name": None, "sqltext": draw(st.sampled_from(["id > 0", "id < 1000"]))})
        table["comment"] = draw(st.sampled_from([None, "a table"]))
        result[name] = table
    for table in result.values():
        refs = draw(st.lists(st.sampled_from(sorted(result)), unique=True, max_size=2))
        fk_columns = [c["name"] for c in table["columns"] if c["type"] == "integer" and c["name"] != "id"]
        for ref, column in zip(refs, fk_columns, strict=False):
            table["foreign_keys"].append({"name": None, "columns": [column], "ref_table": ref, "ref_columns": ["id"],
                                          "on_delete": draw(st.sampled_from([None, "CASCADE"])), "on_update": None})
    return result


@st.composite
def snapshots(draw) -> Snapshot:  # type: ignore[no-untyped-def]
    enums = draw(st.dictionaries(st.sampled_from(["mood", "state"]),
                                 st.lists(st.sampled_from(["a", "b", "c"]), unique=True, min_size=1), max_size=2))
    views = draw(st.dictionaries(st.sampled_from(["v1", "v2"]), st.sampled_from(["SELECT 1", "SELECT 2"]), max_size=2))
    return Snapshot("postgresql", draw(tables()), enums, {}, views)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_diff_of_a_snapshot_with_itself_is_empty(a: Snapshot) -> None:
    assert diff(a, a) == []


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), snapshots())
def test_applying_the_diff_gives_the_target_and_its_inverse_gives_the_source(a: Snapshot, b: Snapshot) -> None:
    changes = diff(a, b)
    assert comparable(apply_changes(a, changes)) == comparable(b)
    assert comparable(apply_changes(b, invert(changes))) == comparable(a)
    assert (changes == []) == (comparable(a) == comparable(b))


def _table(*columns: str, fks: list | None = None) -> dict:
    table = empty_table()
    table["columns"] = [{"name": c, "type": "integer", "nullable": c != "id", "default": None,
                         "autoincrement": c == "id", "comment": None} for c in columns]
    table["primary_key"] = {"name": None, "columns": ["id"]}
    table["foreign_keys"] = fks or []
    return table


def _fk(column: str, ref: str) -> dict:
    return {"name": None, "columns": [column], "ref_table": ref, "ref_columns": ["id"], "on_delete": None,
            "on_update": None}


def test_created_tables_come_parents_first_and_dropped_tables_children_first() -> None:
    empty = Snapshot("postgresql")
    full = Snapshot("postgresql", {"child": _table("id", "parent_id", fks=[_fk("parent_id", "parent")]),
                                   "parent": _table("id")})
    assert [(c.kind, c.name) for c in diff(empty, full)] == [("create_table", "parent"), ("create_table", "child")]
    assert [(c.kind, c.name) for c in diff(full, empty)] == [("drop_table", "child"), ("drop_table", "parent")]


def test_a_foreign_key_cycle_is_split_into_a_separate_add_fk() -> None:
    cycle = Snapshot("postgresql", {"a": _table("id", "b_id", fks=[_fk("b_id", "b")]),
                                    "b": _table("id", "a_id", fks=[_fk("a_id", "a")])})
    kinds = [c.kind for c in diff(Snapshot("postgresql"), cycle)]
    assert kinds == ["create_table", "create_table", "add_fk"]
    assert [c.kind for c in diff(cycle, Snapshot("postgresql"))] == ["drop_fk", "drop_table", "drop_table"]


def test_a_column_of_the_same_shape_dropped_and_added_is_a_rename() -> None:
    a = Snapshot("sqlite", {"t": _table("id", "old")})
    b = Snapshot("sqlite", {"t": _table("id", "new")})
    changes = diff(a, b)
    assert [(c.kind, c.before["name"], c.after["name"]) for c in changes] == [("rename_column", "old", "new")]


def test_ambiguous_renames_stay_drop_and_add() -> None:
    a = Snapshot("sqlite", {"t": _table("id", "x", "y")})
    b = Snapshot("sqlite", {"t": _table("id", "p", "q")})
    assert sorted(c.kind for c in diff(a, b)) == ["add_column", "add_column", "drop_column", "drop_column"]


def test_a_table_of_the_same_shape_is_renamed() -> None:
    a = Snapshot("sqlite", {"old": _table("id", "v")})
    b = Snapshot("sqlite", {"new": _table("id", "v")})
    assert [(c.kind, c.before, c.after) for c in diff(a, b)] == [("rename_table", "old", "new")]


def test_constraint_names_do_not_count() -> None:
    a = Snapshot("postgresql", {"t": _table("id", "p", fks=[_fk("p", "t")])})
    named = _table("id", "p", fks=[{**_fk("p", "t"), "name": "t_p_fkey"}])
    assert diff(a, Snapshot("postgresql", {"t": named})) == []


def test_diff_of_a_thousand_tables_is_fast() -> None:
    tables = {f"t{i:04d}": _table("id", "a", "b", fks=[_fk("a", f"t{i - 1:04d}")] if i else []) for i in range(1000)}
    other = {**tables, "t0500": _table("id", "a", "c")}
    a, b = Snapshot("postgresql", tables), Snapshot("postgresql", other)
    start = time.perf_counter()
    diff(a, b)
    assert time.perf_counter() - start < 1.0


def test_an_added_constraint_never_reuses_the_name_of_a_kept_one() -> None:
    old = _table("id", "a")
    old["uniques"] = [{"name": "ix_t_a", "columns": ["a"]}]
    new = _table("id", "a")
    new["uniques"] = [{"name": None, "columns": ["a"]}]
    new["indexes"] = [{"name": "ix_t_a", "columns": ["a"], "unique": False, "where": None}]
    changes = diff(Snapshot("mysql", {"t": old}), Snapshot("mysql", {"t": new}))
    assert [(c.kind, c.after["name"]) for c in changes] == [("add_index", "ix_t_a_2")]
