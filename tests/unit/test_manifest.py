"""Manifest parsing: a well-formed manifest round-trips; every defect is a BackupInvalidError."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbjobs.errors import BackupInvalidError
from dbjobs.manifest import Manifest, is_backup_id, new_backup_id, parse_manifest

BACKUP_ID = "main-20260102T030405Z-a1b2c3"


def manifest(**changes: object) -> Manifest:
    fields: dict[str, object] = dict(
        id=BACKUP_ID, database="main", engine="postgresql", server_version="15.20",
        started_at="2026-01-02T03:04:05+00:00", finished_at="2026-01-02T03:04:09.5+00:00",
        file=BACKUP_ID + ".dump.zst", size=123, raw_size=456, sha256="ab" * 32, compression="zstd",
        compression_level=3, tools={"pg_dump": "pg_dump (PostgreSQL) 15.20"}, schema_fingerprint=None,
        row_counts={"public.t": 7}, dbjobs_version="0.1.0")
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_round_trip() -> None:
    original = manifest(note="before upgrade", kind="safety")
    assert parse_manifest(original.to_json(), "x") == original
    assert original.finished == datetime(2026, 1, 2, 3, 4, 9, 500000, tzinfo=UTC)
    assert original.manifest_name == BACKUP_ID + ".manifest.json"


def test_unknown_fields_from_newer_versions_are_ignored() -> None:
    data = manifest().to_dict() | {"added_later": 1}
    assert parse_manifest(json.dumps(data), "x") == manifest()


def _damaged(**changes: object) -> str:
    data = manifest().to_dict()
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    ("[]", "not a dbjobs manifest"),
    (_damaged(format="dbjobs-backup/2"), "not a dbjobs manifest"),
    (_damaged(size=KeyError), "'size' is missing or malformed"),
    (_damaged(size="123"), "'size' is missing or malformed"),
    (_damaged(size=True), "'size' is missing or malformed"),
    (_damaged(row_counts=[1]), "'row_counts' is missing or malformed"),
    (_damaged(schema_fingerprint=5), "'schema_fingerprint' is missing or malformed"),
    (_damaged(id="../../etc/passwd", file="../../etc/passwd.dump.zst"), "unexpected file"),
    (_damaged(file="other-20260102T030405Z-a1b2c3.dump.zst"), "unexpected file"),
    (_damaged(sha256="AB" * 32), "checksum or compression is malformed"),
    (_damaged(sha256="ab" * 31), "checksum or compression is malformed"),
    (_damaged(compression="gzip"), "checksum or compression is malformed"),
    (_damaged(finished_at="yesterday"), "is not an ISO time with a time zone"),
    (_damaged(started_at="2026-01-02T03:04:05"), "is not an ISO time with a time zone"),
])
def test_defects_are_refused_naming_the_source(text: str | bytes, message: str) -> None:
    with pytest.raises(BackupInvalidError) as err:
        parse_manifest(text, "some.manifest.json")
    assert str(err.value).startswith("some.manifest.json: ") and message in str(err.value)


def test_new_ids_are_valid_and_sort_by_time() -> None:
    early = new_backup_id("main", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "a1b2c3d4")
    late = new_backup_id("main", datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), "000000")
    assert early == BACKUP_ID and is_backup_id(late) and early < late


@given(st.text())
def test_no_path_is_a_backup_id(text: str) -> None:
    if is_backup_id(text):
        assert "/" not in text and "." not in text and "\\" not in text and "\n" not in text
