"""Pure PostgreSQL schema diff: two object maps (from `catalog.pg_objects`) → ordered statements.

Every object is either unchanged, created, dropped, altered in place (tables, enums, sequences,
extensions) or re-created (everything else, and tables whose partitioning changes). Re-creating
an object re-creates what depends on it (a view on a view, the triggers and grants of a view,
the views over a table whose columns change type), so nothing is lost on the way.

Order comes from the dependency edges the catalog recorded: an object is dropped after
everything that depends on it and created after everything it depends on (keys before the
foreign keys that use them, tables before their views, a sequence before the default that
calls it). Among steps the graph leaves free, drops come first, then alterations, then creations.
Objects this diff does not handle are never dropped or re-created silently: they become
`unsupported` findings, which the migration file carries as warnings that need a flag to apply.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from dbjobs.schema import pg_ddl
from dbjobs.schema.catalog.pg_objects import Objects, qn

ALTERABLE = {"table", "enum", "sequence", "extension"}
KIND_ORDER = ["schema", "extension", "collation", "enum", "sequence", "function", "table", "owned", "constraint",
              "index", "view", "matview", "trigger", "policy", "grant", "unsupported"]
PHASE = {"drop": 0, "alter": 1, "create": 2}
RETYPING = ("type", "collation", "generated")


@dataclass
class Step:
    """One action on one object, with its statements."""

    action: str
    obj_id: str
    kind: str
    statements: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """`create view v`, `drop constraint t.t_pkey` (objects of `public` unqualified)."""
        return f"{self.action} {self.kind} {display(self.obj_id)}"

    def descriptions(self) -> list[str]:
        """What the step does, one line per column for an altered table."""
        return self.details or [self.describe()]


def display(obj_id: str) -> str:
    """An object id for people: without its kind prefix, `public.` left out."""
    name = obj_id.split(":", 1)[1]
    return name.removeprefix("public.")


@dataclass
class Plan:
    """The ordered steps from one schema to another, and what could not be migrated."""

    steps: list[Step]
    unsupported: list[str]
    destructive: list[str]

    @property
    def statements(self) -> list[str]:
        body = [s for step in self.steps for s in step.statements]
        if any(step.kind == "function" and step.action == "create" for step in self.steps):
            # function bodies may name tables created later in the same migration
            body.insert(0, "SET LOCAL check_function_bodies = off")
        return body


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "deps"}


def _enum_names(objects: Objects) -> set[str]:
    """How format_type spells each enum (bare in public, qualified elsewhere), quotes removed."""
    names = set()
    for obj in objects.values():
        if obj["kind"] == "enum":
            names |= {obj["name"], f"{obj['schema']}.{obj['name']}"}
    return names


def _enum_spelling(enum: dict[str, Any]) -> set[str]:
    return {enum["name"], f"{enum['schema']}.{enum['name']}"} if enum["schema"] == "public" else \
        {f"{enum['schema']}.{enum['name']}"}


def _base_type(type_: str) -> str:
    return type_.replace('"', "").removesuffix("[]")


def plan(before: Objects, after: Objects) -> Plan:
    """The steps that carry a database holding `before` to `after`."""
    dropped = set(before) - set(after)
    created = set(after) - set(before)
    altered: set[str] = set()
    recreated: set[str] = set()
    for obj_id in set(before) & set(after):
        old, new = before[obj_id], after[obj_id]
        if _comparable(old) == _comparable(new):
            continue
        if old["kind"] == new["kind"] in ALTERABLE and not _needs_rebuild(old, new):
            altered.add(obj_id)
        else:
            recreated.add(obj_id)
    _close_over_dependents(before, after, altered, recreated)
    unsupported = sorted(_unsupported_changes(before, after, dropped | created | recreated))
    for obj_id in list(dropped | created | recreated):
        if (before.get(obj_id) or after[obj_id])["kind"] == "unsupported":
            dropped.discard(obj_id)
            created.discard(obj_id)
            recreated.discard(obj_id)
    steps = [Step("drop", i, before[i]["kind"]) for i in dropped | recreated]
    steps += [Step("alter", i, after[i]["kind"]) for i in altered]
    steps += [Step("create", i, after[i]["kind"]) for i in created | recreated]
    ordered = _order(steps, before, after)
    enums_before = _enum_names(before)
    for step in ordered:
        step.statements = _statements(step, before, after, enums_before)
        if step.action == "alter" and step.kind == "table":
            step.details = _column_details(before[step.obj_id], after[step.obj_id])
    ordered = [s for s in ordered if s.statements]
    return Plan(ordered, unsupported, _destructive(before, after, dropped, recreated, altered))


def _needs_rebuild(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if old["kind"] != "table":
        return False
    if old["partition_by"] != new["partition_by"]:
        return True
    # a table cannot become a partition with ATTACH unless it was a plain table; inheritance ↔ partition: rebuild
    return bool(new.get("partition_of")) and bool(old.get("inherits"))


def _dependents(objects: Objects) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for obj_id, obj in objects.items():
        for dep in obj["deps"]:
            found.setdefault(dep, set()).add(obj_id)
    return found


def _close_over_dependents(before: Objects, after: Objects, altered: set[str], recreated: set[str]) -> None:
    """Re-create what stands on a re-created object, a rebuilt enum, or a table whose columns change type.

    Tables are never re-created for a dependency: their columns are altered in place (an enum
    rebuild casts them), so only what depends on the changing columns is re-created."""
    dependents = _dependents(before)
    seeds = set(recreated)
    for obj_id in altered:
        old, new = before[obj_id], after[obj_id]
        if old["kind"] == "enum" and not pg_ddl._is_subsequence(old["values"], new["values"]):
            seeds.add(obj_id)
            seeds |= {t for t in dependents.get(obj_id, ()) if before[t]["kind"] == "table"}
        if old["kind"] == "table" and _columns_retyped(old, new):
            seeds.add(obj_id)
    queue = list(seeds)
    while queue:
        current = queue.pop()
        for dependent in dependents.get(current, ()):
            if dependent in recreated or dependent not in after:
                continue
            kind = before[dependent]["kind"]
            standing = current not in recreated and kind not in ("view", "matview", "function")
            if kind in ("table", "sequence") or standing:
                continue
            recreated.add(dependent)
            altered.discard(dependent)
            queue.append(dependent)


def _columns_retyped(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a view over the table must be re-created: a column dropped or changing type or generation."""
    new_cols = {c["name"]: c for c in new["columns"]}
    for column in old["columns"]:
        other = new_cols.get(column["name"])
        if other is None or any(column[k] != other[k] for k in RETYPING):
            return True
    return False


def _unsupported_changes(before: Objects, after: Objects, changed: set[str]) -> list[str]:
    found = []
    for obj_id in changed:
        obj = after.get(obj_id) or before[obj_id]
        if obj["kind"] == "unsupported":
            verb = "added" if obj_id not in before else "removed" if obj_id not in after else "changed"
            name = f"{obj['schema']}.{obj['name']}" if obj.get("schema") else obj["name"]
            found.append(f"{obj['what']} {name} {verb}: dbjobs cannot migrate it; write this part by hand")
    return found


def _edges(steps: list[Step], before: Objects, after: Objects) -> dict[int, set[int]]:
    """step index → indexes of the steps that must come after it."""
    index = {(s.action, s.obj_id): i for i, s in enumerate(steps)}
    later: dict[int, set[int]] = {i: set() for i in range(len(steps))}

    def edge(first: tuple[str, str], then: tuple[str, str]) -> None:
        a, b = index.get(first), index.get(then)
        if a is not None and b is not None and a != b:
            later[a].add(b)

    for step in steps:
        me = (step.action, step.obj_id)
        if step.action == "drop":
            for dep in before[step.obj_id]["deps"]:
                edge(me, ("drop", dep))
                edge(me, ("alter", dep))
            edge(me, ("create", step.obj_id))
        elif step.action == "create":
            for dep in after[step.obj_id]["deps"]:
                edge(("create", dep), me)
                edge(("alter", dep), me)
        else:
            for dep in after[step.obj_id]["deps"]:
                edge(("create", dep), me)
                edge(("alter", dep), me)
            for dep in before[step.obj_id]["deps"]:
                edge(me, ("drop", dep))
            if step.kind == "table":  # leave a parent before it changes (its new columns are not the child's)
                old, new = before[step.obj_id], after[step.obj_id]
                for parent in (old.get("partition_of") or []) + (old.get("inherits") or []):
                    if parent not in (new.get("partition_of") or []) + (new.get("inherits") or []):
                        edge(me, ("alter", parent))
    return later


def _order(steps: list[Step], before: Objects, after: Objects) -> list[Step]:
    """Topological order of the steps; ties broken by phase (drop, alter, create), kind and name."""
    later = _edges(steps, before, after)
    waiting = {i: 0 for i in range(len(steps))}
    for targets in later.values():
        for t in targets:
            waiting[t] += 1

    def priority(i: int) -> tuple[Any, ...]:
        step = steps[i]
        rank = KIND_ORDER.index(step.kind) if step.kind in KIND_ORDER else len(KIND_ORDER)
        return (PHASE[step.action], -rank if step.action == "drop" else rank, step.obj_id)

    ready = [(priority(i), i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    ordered: list[int] = []
    done: set[int] = set()
    while len(ordered) < len(steps):
        if not ready:  # a cycle the catalog should not allow: take the first remaining step
            i = min((i for i in waiting if i not in done), key=priority)
        else:
            _, i = heapq.heappop(ready)
            if i in done:
                continue
        done.add(i)
        ordered.append(i)
        for t in later[i]:
            waiting[t] -= 1
            if waiting[t] == 0 and t not in done:
                heapq.heappush(ready, (priority(t), t))
    return [steps[i] for i in ordered]


def _statements(step: Step, before: Objects, after: Objects, enums_before: set[str]) -> list[str]:
    if step.action == "drop":
        return pg_ddl.drop(before, before[step.obj_id])
    if step.action == "create":
        return pg_ddl.create(after, after[step.obj_id])
    old, new = before[step.obj_id], after[step.obj_id]
    kind = new["kind"]
    if kind == "table":
        return pg_ddl.alter_table(before, after, old, new, enums_before)
    if kind == "sequence":
        return pg_ddl.alter_sequence(new)
    if kind == "extension":
        return pg_ddl.alter_extension(old, new)
    return pg_ddl.alter_enum(old, new, _enum_users(before, after, new))


def _column_details(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    table = display(f"rel:{old['schema']}.{old['name']}")
    old_cols = {c["name"]: c for c in old["columns"]}
    new_cols = {c["name"]: c for c in new["columns"]}
    found = [f"add column {table}.{n}" for n in new_cols if n not in old_cols]
    for name, column in new_cols.items():
        before = old_cols.get(name)
        if before is not None and before != column:
            altered = ", ".join(f"{k} {before[k]!r} -> {v!r}" for k, v in column.items() if before[k] != v)
            found.append(f"alter column {table}.{name} ({altered})")
    found += [f"drop column {table}.{n}" for n in old_cols if n not in new_cols]
    rest = {k for k in new if k not in ("columns", "deps") and old.get(k) != new[k]}
    return found + ([f"alter table {table} ({', '.join(sorted(rest))})"] if rest else [])


def _enum_users(before: Objects, after: Objects, enum: dict[str, Any]) -> list[tuple[str, dict, dict]]:  # type: ignore[type-arg]
    """Columns of this enum type on both sides (a rebuild casts them to the new type)."""
    spelling = _enum_spelling(enum)
    users = []
    for obj_id, table in before.items():
        if table["kind"] != "table" or obj_id not in after:
            continue
        new_cols = {c["name"]: c for c in after[obj_id]["columns"]}
        for column in table["columns"]:
            target = new_cols.get(column["name"])
            if column["local"] and _base_type(column["type"]) in spelling and target is not None \
                    and _base_type(target["type"]) in spelling:
                users.append((qn(table["schema"], table["name"]), column, target))
    return users


def _destructive(before: Objects, after: Objects, dropped: set[str], recreated: set[str],
                 altered: set[str]) -> list[str]:
    """What loses data: dropped or re-created tables, dropped columns, removed enum values."""
    found = []
    for obj_id in sorted(dropped | recreated):
        obj = before[obj_id]
        if obj["kind"] == "table":
            verb = "drops" if obj_id in dropped else "re-creates (the rows are lost)"
            found.append(f"{verb} table {obj['schema']}.{obj['name']} and all its rows")
    for obj_id in sorted(altered):
        old, new = before[obj_id], after[obj_id]
        if old["kind"] == "table":
            kept = {c["name"] for c in new["columns"]}
            regenerated = {c["name"] for c in new["columns"] if c["generated"]}
            for column in old["columns"]:
                if column["local"] and (column["name"] not in kept or
                                        (column["name"] in regenerated and not column["generated"])):
                    found.append(f"drops column {old['schema']}.{old['name']}.{column['name']} and its data")
        elif old["kind"] == "enum" and set(old["values"]) - set(new["values"]):
            found.append(f"removes values {sorted(set(old['values']) - set(new['values']))} from enum "
                         f"{old['schema']}.{old['name']}")
    return found
