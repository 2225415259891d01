"""The manifest: the self-description written beside every backup, last, when the file is complete.

Pure data and validation, no I/O beyond parsing: a backup is only a backup when its manifest
parses, names its file, and the file's size and SHA-256 match what the manifest says.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime

import orjson

from dbjobs.errors import BackupInvalidError
from dbjobs.recipients import encryption_problem

FORMAT = "dbjobs-backup/1"
MANIFEST_SUFFIX = ".manifest.json"
DUMP_SUFFIX = ".dump.zst"
ENGINES = ("postgresql", "mysql", "sqlite")
ID_TAIL = len("-20260101T000000Z-abcdef")  # what follows the alias in an id
ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}-\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_backup_id(alias: str, when: datetime, token: str) -> str:
    """`<alias>-<UTC time>-<6 hex>`: sorts by time per database and never collides across workers."""
    return f"{alias}-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}-{token[:6]}"


def request_token(request_id: str) -> str:
    """The id token of the backup a request takes: derived from the request so its re-run can find it cheaply."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:6]


def is_backup_id(text: str) -> bool:
    """True for a well-formed id; anything else (paths, `../`) is never used to build a file name."""
    return bool(ID_RE.match(text))


@dataclass(frozen=True)
class Manifest:
    """Everything needed to list, verify and restore a backup without opening it."""

    id: str
    database: str
    engine: str
    server_version: str
    started_at: str
    finished_at: str
    file: str
    size: int
    raw_size: int
    sha256: str
    compression: str
    compression_level: int
    tools: dict[str, str]
    schema_fingerprint: str | None
    row_counts: dict[str, int]
    dbjobs_version: str
    kind: str = "full"
    note: str = ""
    format: str = FORMAT
    extra: dict[str, object] = field(default_factory=dict)
    # age encryption: scheme, recipients (public keys), size and SHA-256 of the compressed plaintext.
    # `size` and `sha256` above are always of the stored bytes, so verifying storage needs no key.
    encryption: dict[str, object] | None = None

    @property
    def encrypted(self) -> bool:
        """Whether the stored file is age ciphertext (restoring it needs DBJOBS_AGE_IDENTITY_FILE)."""
        return self.encryption is not None

    @property
    def manifest_name(self) -> str:
        """The manifest's file name beside the backup."""
        return self.id + MANIFEST_SUFFIX

    @property
    def finished(self) -> datetime:
        """When the backup completed: the age retention and status reason about."""
        return datetime.fromisoformat(self.finished_at)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (no secret can be in it: nothing here comes from a URL but the alias)."""
        return asdict(self)

    def to_json(self) -> str:
        """Stable, readable JSON, diff-friendly for people who inspect backups by hand."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


_REQUIRED: dict[str, tuple[type, ...]] = {
    "id": (str,), "database": (str,), "engine": (str,), "server_version": (str,), "started_at": (str,),
    "finished_at": (str,), "file": (str,), "size": (int,), "raw_size": (int,), "sha256": (str,),
    "compression": (str,), "compression_level": (int,), "tools": (dict,), "schema_fingerprint": (str, type(None)),
    "row_counts": (dict,), "dbjobs_version": (str,),
}
_ALLOWED = frozenset(itertools.product(*_REQUIRED.values()))
_KNOWN = frozenset(Manifest.__dataclass_fields__)
_DEFAULTS = {f.name: f.default for f in fields(Manifest) if f.default is not MISSING}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_manifest(text: str | bytes, source: str) -> Manifest:
    """Parse and validate a manifest; any defect is a BackupInvalidError naming `source`."""
    try:
        data = orjson.loads(text)  # 4x the stdlib's speed: listing parses every manifest
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        raise BackupInvalidError(f"{source}: manifest is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BackupInvalidError(f"{source}: not a dbjobs manifest (expected format {FORMAT})")
    if tuple(map(type, map(data.get, _REQUIRED))) not in _ALLOWED:  # exact types: JSON true is not a size
        bad = next(key for key, kinds in _REQUIRED.items() if type(data.get(key)) not in kinds)
        raise BackupInvalidError(f"{source}: manifest field {bad!r} is missing or malformed")
    if not is_backup_id(data["id"]) or data["file"] != data["id"] + DUMP_SUFFIX:
        raise BackupInvalidError(f"{source}: manifest names an unexpected file {data['file']!r}")
    if data["id"][:-ID_TAIL] != data["database"]:
        raise BackupInvalidError(f"{source}: manifest database {data['database']!r} is not the alias in its id")
    if data["engine"] not in ENGINES:
        raise BackupInvalidError(f"{source}: manifest engine {data['engine']!r} is not one of {', '.join(ENGINES)}")
    if min(data["size"], data["raw_size"]) < 0 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in data["row_counts"].values()):
        raise BackupInvalidError(f"{source}: manifest sizes or row counts are not counts")
    if not _SHA256.fullmatch(data["sha256"]) or data["compression"] != "zstd":
        raise BackupInvalidError(f"{source}: manifest checksum or compression is malformed")
    problem = encryption_problem(data.get("encryption"))
    if problem:
        raise BackupInvalidError(f"{source}: manifest {problem}")
    for key in ("started_at", "finished_at"):
        try:
            aware = datetime.fromisoformat(data[key]).tzinfo is not None
        except ValueError:
            aware = False
        if not aware:
            raise BackupInvalidError(f"{source}: manifest time {data[key]!r} is not an ISO time with a time zone")
    return _build(data)


def _build(data: dict[str, object]) -> Manifest:
    """A Manifest from validated data, filling the instance directly.

    The frozen dataclass `__init__` sets 20 fields one `object.__setattr__` at a time: half the
    cost of parsing a manifest, a fifth of listing 10,000 backups. The result is the same object.
    """
    manifest = object.__new__(Manifest)
    manifest.__dict__.update(_DEFAULTS)
    manifest.__dict__["extra"] = {}
    manifest.__dict__.update(data if data.keys() <= _KNOWN else {k: v for k, v in data.items() if k in _KNOWN})
    return manifest
