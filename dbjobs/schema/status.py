"""The schema part of `status` (`dbjobs.status.schema_probe` loads `probe` from here): the live
fingerprint, the newest snapshot's, and the migration files not yet applied."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dbjobs.dburl import DatabaseURL
from dbjobs.schema.history import latest_snapshot
from dbjobs.schema.snapshot import Snapshot, take_snapshot

if TYPE_CHECKING:
    from dbjobs.status import SchemaState


def probe(db: DatabaseURL, schema_dir: Path) -> SchemaState:
    """What `status` reports about a database's schema: drift since the last snapshot and pending files."""
    from dbjobs.migrate import pending_migrations
    from dbjobs.status import SchemaState

    newest = latest_snapshot(schema_dir, db.alias)
    live = take_snapshot(db, newest.scope if newest else None)  # in the schemas the history covers
    if newest is not None and not newest.objects:  # a history from before snapshots held every object
        live = Snapshot(live.engine, live.tables, live.enums, live.sequences, live.views, {}, live.scope)
    return SchemaState(live.fingerprint, newest.fingerprint if newest else None,
                       pending_migrations(db, schema_dir))
