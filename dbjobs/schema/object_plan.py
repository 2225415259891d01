"""The shape of a snapshot-to-snapshot migration on MySQL/MariaDB and SQLite: ordered steps, each with
its statements, and what must be reviewed (data lost, changes that could not be migrated, locks).

The engines' planners (`mysql_plan`, `sqlite_plan`) build one of the same steps as PostgreSQL's;
`detect` turns it into a migration file the same way for every engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbjobs.schema.pg_diff import Step
from dbjobs.schema.sqlparse import without_comments

Objects = dict[str, dict[str, Any]]
PHASES = ("drop", "alter", "create")


@dataclass
class Plan:
    """The ordered steps from one schema to another, and what the reviewer must know about them."""

    steps: list[Step] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    destructive: list[str] = field(default_factory=list)
    locking: list[str] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        """Every statement, in order."""
        return [s for step in self.steps for s in step.statements]

    def add(self, action: str, obj_id: str, kind: str, statements: list[str],
            details: list[str] | None = None) -> None:
        """Append a step (a step without statements is left out)."""
        if statements:
            self.steps.append(Step(action, obj_id, kind, list(statements), list(details or [])))


def changed(before: Objects, after: Objects, kind: str) -> tuple[list[str], list[str], list[str]]:
    """Ids of one kind that are only in `before` (gone), only in `after` (new), or in both but different
    (`--` comments in their SQL aside)."""
    olds = {i for i, o in before.items() if o["kind"] == kind}
    news = {i for i, o in after.items() if o["kind"] == kind}
    return (sorted(olds - news), sorted(news - olds),
            sorted(i for i in olds & news if before[i] != after[i] and comparable(before[i]) != comparable(after[i])))


def comparable(value: Any) -> Any:
    """An object with the SQL texts in it compared without their comments."""
    if isinstance(value, str):
        return without_comments(value)
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def dependency_order(ids: list[str], deps: dict[str, set[str]]) -> list[str]:
    """`ids` with each after the ids it depends on (ties and cycles in name order)."""
    pending, done, ordered = sorted(ids), set(), []
    while pending:
        ready = [i for i in pending if not (deps.get(i, set()) & (set(pending) - {i}))] or pending[:1]
        for i in ready:
            ordered.append(i)
            done.add(i)
        pending = [i for i in pending if i not in done]
    return ordered
