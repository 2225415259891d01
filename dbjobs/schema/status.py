"""The schema part of `status`: the newest snapshot, whether the live schema still matches it,
and which migration files are pending or were edited after being applied."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dbjobs.dburl import DatabaseURL
from dbjobs.schema.history import latest_snapshot_file
from dbjobs.schema.snapshot import take_snapshot


@dataclass
class SchemaStatus:
    """What an operator wants to know about a database's schema at a glance."""

    database: str
    fingerprint: str
    snapshot_file: str | None
    matches_snapshot: bool | None
    pending: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the status report."""
        return asdict(self)


def schema_status(db: DatabaseURL, schema_dir: Path) -> SchemaStatus:
    """The live fingerprint against the newest snapshot, and the pending and drifted migration files."""
    from dbjobs.migrate import drifted_migrations, pending_migrations

    live = take_snapshot(db)
    newest = latest_snapshot_file(schema_dir, db.alias)
    matches = None if newest is None else newest[1].fingerprint == live.fingerprint
    return SchemaStatus(db.alias, live.fingerprint, str(newest[0]) if newest else None, matches,
                        pending_migrations(db, schema_dir), drifted_migrations(db, schema_dir))
