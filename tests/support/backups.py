"""Backups made without a database: a dump of given bytes and a valid manifest, at any time in the past.

Cleanup, listing and storage tests (and the benchmark) need thousands of backups with chosen
timestamps; a real dump would only add minutes.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

from dbjobs.manifest import DUMP_SUFFIX, Manifest, new_backup_id


def fake_manifest(database: str, finished: datetime, payload: bytes, token: str, kind: str = "full") -> Manifest:
    """A manifest that truthfully describes `payload`."""
    backup_id = new_backup_id(database, finished, token)
    return Manifest(
        id=backup_id, database=database, engine="sqlite", server_version="3.40.1",
        started_at=finished.isoformat(), finished_at=finished.isoformat(), file=backup_id + DUMP_SUFFIX,
        size=len(payload), raw_size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), compression="zstd",
        compression_level=3, tools={}, schema_fingerprint=None, row_counts={}, dbjobs_version="test", kind=kind,
    )


def make_backup(directory: Path, database: str, finished: datetime, payload: bytes = b"dump",
                token: str | None = None, kind: str = "full") -> Manifest:
    """Write `<id>.dump.zst` and its manifest into `directory`."""
    manifest = fake_manifest(database, finished, payload, token or os.urandom(3).hex(), kind)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / manifest.file).write_bytes(payload)
    (directory / manifest.manifest_name).write_text(manifest.to_json())
    return manifest
