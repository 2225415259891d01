"""Key rotation: re-encrypt a backup to the current recipients, where the identity that opens it is at hand.

Only the encryption changes: the compressed dump is copied through `age` twice (decrypt with
the old identity, encrypt to DBJOBS_ENCRYPT_TO) without being decompressed, and its checksum
must come out as the manifest recorded. The result is written as a new backup (same database,
times, row counts; a new id) in every store that held the old one, and only then is the old
one deleted: a rekey stopped at any point leaves the old backup, or both, never neither and
never a manifest that disagrees with its file.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dbjobs.catalog import Backup, ensure_local
from dbjobs.crypto import age_version, check_recipients, decrypted, encrypting
from dbjobs.engines.base import CHUNK
from dbjobs.errors import BackupInvalidError, ConfigError
from dbjobs.manifest import DUMP_SUFFIX, Manifest, new_backup_id
from dbjobs.pipeline import HashingFile, atomic_file, verify_file, write_atomic
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.recipients import ENCRYPT_TO, AgeKeys, encryption_record, sealed
from dbjobs.storage.base import Storage
from dbjobs.storage.local import LocalStorage


@dataclass(frozen=True)
class RekeyResult:
    """The backup that replaced the old one (or the old one itself, when it already had these recipients)."""

    old_id: str
    new_id: str
    recipients: tuple[str, ...]
    locations: list[str]

    def to_dict(self) -> dict[str, object]:
        """JSON result: ids and public keys only."""
        return {"old_id": self.old_id, "backup_id": self.new_id, "recipients": list(self.recipients),
                "changed": self.old_id != self.new_id, "locations": self.locations}


def _reencrypt(backup: Backup, new: Manifest, path: Path, keys: AgeKeys, progress: ProgressCallback) -> Manifest:
    """Copy the compressed dump of `backup` into `path` encrypted to `keys.recipients`; the new manifest."""
    old = backup.manifest
    opened = sealed(old.id, old.encryption, keys.identity_file)
    expected = (opened.compressed_size, opened.compressed_sha256) if opened else (old.size, old.sha256)
    assert backup.path is not None
    with (open(backup.path, "rb") as f, decrypted(f, opened) if opened else nullcontext(f) as source,
          atomic_file(path, exclusive=True) as out):
        stored = HashingFile(out)
        with encrypting(stored, keys.recipients) as age:
            plain = HashingFile(age)
            while chunk := source.read(CHUNK):
                plain.write(chunk)
                progress(Progress("rekey", plain.size, expected[0]))
        if (plain.size, plain.hash.hexdigest()) != expected:
            raise BackupInvalidError(f"{old.id}: the decrypted dump does not match its manifest; nothing was changed")
    return dataclasses.replace(
        new, size=stored.size, sha256=stored.hash.hexdigest(), tools={**old.tools, "age": age_version()},
        encryption=encryption_record(keys.recipients, plain.size, plain.hash.hexdigest()))


def run_rekey(backup: Backup, stores: Sequence[Storage], directory: Path, keys: AgeKeys, *,
              progress: ProgressCallback = no_progress) -> RekeyResult:
    """Re-encrypt `backup` to the current recipients, in every store that holds it, then delete the old copies.

    An unencrypted backup is encrypted the same way. A backup already encrypted to exactly these
    recipients is left as it is.
    """
    old = backup.manifest
    if not keys.recipients:
        raise ConfigError(f"{ENCRYPT_TO} is not set: rekey encrypts to the current recipients, so set them first")
    check_recipients(keys.recipients)
    if old.encryption and set(old.encryption["recipients"]) == set(keys.recipients):  # type: ignore[call-overload]
        return RekeyResult(old.id, old.id, keys.recipients, backup.locations)
    opened = sealed(old.id, old.encryption, keys.identity_file)  # no identity: stop before any download
    local = ensure_local(backup, stores, directory, progress)
    assert local.path is not None
    verify_file(local.path, old.size, old.sha256, progress, sealed=opened)
    new_id = new_backup_id(old.database, datetime.fromisoformat(old.started_at), secrets.token_hex(3))
    path = local.path.with_name(new_id + DUMP_SUFFIX)
    template = dataclasses.replace(old, id=new_id, file=path.name, extra={**old.extra, "rekeyed_from": old.id})
    template.extra.pop("request_id", None)  # the new backup answers no request; the old one did
    template.extra.pop("frames", None)  # offsets in the unencrypted file: the ciphertext has none (dbjobs.frames)
    manifest = _reencrypt(local, template, path, keys, progress)
    try:
        write_atomic(path.with_name(manifest.manifest_name), manifest.to_json().encode())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    here = LocalStorage(path.parent)
    remotes = [s for s in stores if s.where in backup.remotes]
    for remote in remotes:
        remote.put(path, manifest, progress)
    for store in [here, *remotes]:
        store.delete([old.id])
    return RekeyResult(old.id, new_id, keys.recipients, [str(path), *(r.where for r in remotes)])
