"""The schema part of `status` (`dbjobs.status.schema_probe` loads `probe` from here): the live
fingerprint, the newest snapshot's, and the migration files not yet applied."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dbjobs.dburl import DatabaseURL
from dbjobs.schema.history import latest_snapshot
from dbjobs.schema.snapshot import take_snapshot

if TYPE_CHECKING:
    from dbjobs.status import SchemaState


def probe(db: DatabaseURL, schema_dir: Path) -> SchemaState:
    """What `status` reports about a database's schema: drift since the last snapshot and pending files."""
    from dbjobs.migrate import pending_migrations
    from dbjobs.status import SchemaState

    newest = latest_snapshot(schema_dir, db.alias)
    live = take_snapshot(db, newest.scope if newest else None)  # in the schemas the history covers
    return SchemaState(live.fingerprint, newest.fingerprint if newest else None,
                       pending_migrations(db, schema_dir))
