"""The manifest parser's fast paths reject exactly what the field-by-field checks reject."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dbjobs.errors import BackupInvalidError
from dbjobs.manifest import Manifest, parse_manifest
from tests.support.backups import fake_manifest

GOOD = fake_manifest("app", datetime(2026, 11, 27, tzinfo=UTC), b"dump", "abcdef")


def test_round_trip_is_an_equal_manifest_with_its_own_extra():
    parsed = parse_manifest(GOOD.to_json(), "x")
    assert parsed == GOOD and isinstance(parsed, Manifest)
    assert parsed.extra == {} and parsed.extra is not parse_manifest(GOOD.to_json(), "x").extra
    assert parse_manifest(json.dumps({**GOOD.to_dict(), "future_field": 1}), "x") == GOOD


@pytest.mark.parametrize(("field", "value"), [
    ("size", True), ("size", "4"), ("size", 4.0), ("tools", []), ("schema_fingerprint", 3),
    ("row_counts", None), ("id", None), ("sha256", "abc"), ("finished_at", "yesterday"),
])
def test_malformed_fields_are_named(field, value):
    data = {**GOOD.to_dict(), field: value}
    with pytest.raises(BackupInvalidError, match="manifest"):
        parse_manifest(json.dumps(data), "x")


def test_missing_field_is_named():
    data = GOOD.to_dict()
    del data["raw_size"]
    with pytest.raises(BackupInvalidError, match="field 'raw_size' is missing or malformed"):
        parse_manifest(json.dumps(data), "x")
    assert parse_manifest(json.dumps({**GOOD.to_dict(), "schema_fingerprint": "f" * 64}), "x").schema_fingerprint
