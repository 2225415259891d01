"""Who a backup is encrypted to: age X25519 recipients from DBJOBS_ENCRYPT_TO, and what a manifest says.

Pure parsing and validation, no cryptography: the keys are handed to the `age` tool
(`dbjobs.crypto`), which does all of it. Recipients are public keys, so they are safe to
record in manifests and show in listings; the identity (the private key) that opens a backup
is only ever a path, read by `age` itself on the host that restores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dbjobs.errors import ConfigError

ENCRYPT_TO = "DBJOBS_ENCRYPT_TO"
IDENTITY_FILE = "DBJOBS_AGE_IDENTITY_FILE"
SCHEME = "age"
# An age X25519 recipient: "age1" and 58 bech32 characters (the tool checks the checksum itself).
RECIPIENT = re.compile(r"age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AgeKeys:
    """The encryption settings of one process: recipients new backups go to, and the identity that restores.

    A worker that only takes backups has recipients and no identity: it can write backups it can never read.
    """

    recipients: tuple[str, ...] = ()
    identity_file: Path | None = None


NO_KEYS = AgeKeys()


@dataclass(frozen=True)
class Sealed:
    """How to open one encrypted backup: the identity, and what its compressed plaintext must be."""

    backup_id: str
    identity_file: Path
    recipients: tuple[str, ...]
    compressed_size: int
    compressed_sha256: str


def _recipient(text: str, where: str) -> str:
    if not RECIPIENT.fullmatch(text):
        shown = text if text.startswith("age1") else text[:12] + "..."
        raise ConfigError(f"{ENCRYPT_TO}: {where} {shown!r} is not an age X25519 recipient (age1 followed by 58 "
                          "characters, as `dbjobs keygen` or `age-keygen -y` prints)")
    return text


def _from_file(path: Path) -> list[str]:
    """The recipients in an age recipients file: one a line, `#` comments and blank lines ignored."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"{ENCRYPT_TO}: cannot read recipients file {path}: {reason}") from None
    found = [_recipient(line.strip(), f"{path} line {n}")
             for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise ConfigError(f"{ENCRYPT_TO}: recipients file {path} lists no recipient")
    return found


def parse_recipients(value: str) -> tuple[str, ...]:
    """DBJOBS_ENCRYPT_TO: age1 keys and/or paths of recipients files, separated by commas or whitespace.

    Duplicates are dropped, order kept; an empty value means backups are not encrypted.
    """
    keys: list[str] = []
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        keys.extend([_recipient(item, "recipient")] if item.startswith("age1") else _from_file(Path(item)))
    return tuple(dict.fromkeys(keys))


def load_keys(env: Mapping[str, str]) -> AgeKeys:
    """The encryption settings from the environment; a malformed recipient is a ConfigError naming the variable."""
    identity = env.get(IDENTITY_FILE, "").strip()
    return AgeKeys(parse_recipients(env.get(ENCRYPT_TO, "")), Path(identity) if identity else None)


def encryption_record(recipients: tuple[str, ...], compressed_size: int, compressed_sha256: str) -> dict[str, object]:
    """The manifest's `encryption` field: scheme, recipients (public keys), and the compressed plaintext's checksum."""
    return {"scheme": SCHEME, "recipients": list(recipients), "compressed_size": compressed_size,
            "compressed_sha256": compressed_sha256}


def encryption_problem(record: object) -> str | None:
    """Why a manifest's `encryption` field is malformed, or None if it is well formed (or absent)."""
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("scheme") != SCHEME:
        return f"encryption is not an {SCHEME} record"
    recipients = record.get("recipients")
    if not isinstance(recipients, list) or not recipients or not all(
            isinstance(r, str) and RECIPIENT.fullmatch(r) for r in recipients):
        return "encryption recipients are missing or malformed"
    size, digest = record.get("compressed_size"), record.get("compressed_sha256")
    if type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return "encryption checksum of the compressed plaintext is missing or malformed"
    return None


def short(recipient: str) -> str:
    """A recipient as people compare them by eye: its first and last characters."""
    return f"{recipient[:10]}...{recipient[-6:]}"


def sealed(backup_id: str, record: dict[str, object] | None, identity_file: Path | None) -> Sealed | None:
    """How to open a backup whose manifest has `record` (None: it is not encrypted).

    Raises a ConfigError naming DBJOBS_AGE_IDENTITY_FILE when the backup is encrypted and this
    host has no identity: checked before anything is read, downloaded or touched.
    """
    if record is None:
        return None
    recipients = tuple(record["recipients"])  # type: ignore[call-overload]
    to = ", ".join(map(short, recipients))
    if identity_file is None:
        raise ConfigError(f"backup {backup_id} is encrypted (age, to {to}); set {IDENTITY_FILE} to the identity "
                          "file of one of those recipients on the host that restores; nothing was changed")
    if not identity_file.is_file():
        raise ConfigError(f"{IDENTITY_FILE} names no readable file on this host; backup {backup_id} is encrypted "
                          f"to {to}; nothing was changed")
    return Sealed(backup_id, identity_file, recipients, int(record["compressed_size"]),  # type: ignore[call-overload]
                  str(record["compressed_sha256"]))
