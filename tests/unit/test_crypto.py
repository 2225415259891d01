"""age encryption in the pipeline: one pass, both checksums, and every way a restore must refuse.

Real `age` processes and real key files (made by `dbjobs keygen`); the backup stand-in is a
few MB of mixed data, so a broken stream would show, and nothing must be left behind.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import zstandard

from dbjobs.crypto import keygen
from dbjobs.errors import BackupError, BackupInvalidError, ConfigError
from dbjobs.manifest import parse_manifest
from dbjobs.pipeline import decompressed_chunks, verify_file, write_compressed
from dbjobs.progress import no_progress
from dbjobs.recipients import (
    ENCRYPT_TO,
    IDENTITY_FILE,
    Sealed,
    encryption_record,
    load_keys,
    parse_recipients,
    sealed,
)
from tests.unit.test_manifest import manifest

DATA = [os.urandom(700_000), b"compressible " * 300_000, b"", b"tail"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Three key pairs: `ops` and `glass` are the recipients, `other` is nobody's."""
    base = tmp_path_factory.mktemp("keys")
    return {name: (base / name, keygen(base / name)) for name in ("ops", "glass", "other")}


def _seal(tmp_path: Path, keys, *names: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "x.dump.zst"
    recipients = tuple(keys[n][1] for n in names)
    written, _ = write_compressed(path, lambda sink: [sink(c) for c in DATA], progress=no_progress, total=None,
                                  recipients=recipients)
    return path, written, recipients


def _opener(path: Path, written, recipients, identity: Path) -> Sealed:  # type: ignore[no-untyped-def]
    record = encryption_record(recipients, written.compressed_size, written.compressed_sha256)
    return sealed(path.stem, record, identity)  # type: ignore[return-value]


def test_keygen_writes_a_private_key_and_never_overwrites(keys, tmp_path: Path) -> None:
    path, public = keys["ops"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_recipients(public) == (public,)
    assert "AGE-SECRET-KEY-1" in path.read_text() and public in path.read_text()
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        keygen(path)
    assert path.read_bytes() == before


def test_encrypted_round_trip_checks_stored_and_compressed_bytes(keys, tmp_path: Path) -> None:
    path, written, recipients = _seal(tmp_path, keys, "ops")
    stored = path.read_bytes()

    assert stored.startswith(b"age-encryption.org/v1\n")
    assert b"compressible" not in stored and DATA[0][:4096] not in stored
    assert (written.size, written.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert written.compressed_sha256 != written.sha256 and written.raw_size == sum(map(len, DATA))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and os.listdir(tmp_path) == ["x.dump.zst"]

    opener = _opener(path, written, recipients, keys["ops"][0])
    verify_file(path, written.size, written.sha256, no_progress, sealed=opener)
    assert b"".join(decompressed_chunks(path, no_progress, written.size, sealed=opener)) == b"".join(DATA)


def test_each_of_two_recipients_restores_alone(keys, tmp_path: Path) -> None:
    path, written, recipients = _seal(tmp_path, keys, "ops", "glass")
    for name in ("ops", "glass"):
        opener = _opener(path, written, recipients, keys[name][0])
        verify_file(path, written.size, written.sha256, no_progress, sealed=opener)
        assert b"".join(decompressed_chunks(path, no_progress, written.size, sealed=opener)) == b"".join(DATA)


def test_wrong_or_missing_identity_is_one_line_naming_the_variable(keys, tmp_path: Path) -> None:
    path, written, recipients = _seal(tmp_path, keys, "ops", "glass")
    record = encryption_record(recipients, written.compressed_size, written.compressed_sha256)

    with pytest.raises(ConfigError, match=f"set {IDENTITY_FILE}") as missing:
        sealed("x", record, None)
    with pytest.raises(ConfigError, match=f"{IDENTITY_FILE} names no readable file"):
        sealed("x", record, tmp_path / "absent")
    with pytest.raises(ConfigError, match=f"identity in {IDENTITY_FILE} is not one of the recipients") as wrong:
        verify_file(path, written.size, written.sha256, no_progress,
                    sealed=_opener(path, written, recipients, keys["other"][0]))
    not_a_key = tmp_path / "public.txt"
    not_a_key.write_text(recipients[0] + "\n")
    with pytest.raises(ConfigError, match=f"{IDENTITY_FILE} does not hold an age identity") as bad:
        verify_file(path, written.size, written.sha256, no_progress,
                    sealed=_opener(path, written, recipients, not_a_key))
    for error in (missing, wrong, bad):
        assert "\n" not in str(error.value) and "AGE-SECRET" not in str(error.value)
        assert str(keys["ops"][0]) not in str(error.value)


@pytest.mark.parametrize("where", ["header", "payload", "last byte"])
def test_tampered_ciphertext_is_refused_even_with_a_matching_storage_checksum(keys, tmp_path: Path,
                                                                              where: str) -> None:
    """An attacker who can write the bucket can also rewrite the manifest's SHA-256: age's authentication still
    refuses the altered file, in the verification pass, before anything would be touched."""
    path, written, recipients = _seal(tmp_path, keys, "ops")
    data = bytearray(path.read_bytes())
    offset = {"header": 40, "payload": len(data) // 2, "last byte": len(data) - 1}[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    opener = _opener(path, written, recipients, keys["ops"][0])

    with pytest.raises(BackupInvalidError, match="SHA-256 does not match"):
        verify_file(path, written.size, written.sha256, no_progress, sealed=opener)
    # Byte 40 is in the base64 of the file's random X25519 share: the flipped bit makes it another share (no
    # identity matches) or no base64 at all (the header does not parse), by the luck of that encryption
    refusal = ("not one of the recipients.*header was altered|cannot decrypt and auth.*tampered"
               if where == "header" else "cannot decrypt and auth")
    with pytest.raises((BackupInvalidError, ConfigError), match=refusal) as refused:
        verify_file(path, written.size, hashlib.sha256(data).hexdigest(), no_progress, sealed=opener)
    assert "\n" not in str(refused.value) and "report unexpected" not in str(refused.value)
    with pytest.raises((BackupInvalidError, ConfigError), match=refusal):
        b"".join(decompressed_chunks(path, no_progress, written.size, sealed=opener))


def test_a_truncated_file_is_refused_by_authentication(keys, tmp_path: Path) -> None:
    path, written, recipients = _seal(tmp_path, keys, "ops")
    data = path.read_bytes()[: 64 * 1024 * 3 + 300]  # whole authenticated chunks, the final one missing
    path.write_bytes(data)
    opener = _opener(path, written, recipients, keys["ops"][0])
    with pytest.raises(BackupInvalidError, match="cannot decrypt and authenticate"):
        verify_file(path, len(data), hashlib.sha256(data).hexdigest(), no_progress, sealed=opener)
    with pytest.raises(BackupInvalidError):
        b"".join(decompressed_chunks(path, no_progress, len(data), sealed=opener))


def test_a_substituted_backup_is_caught_by_the_compressed_checksum(keys, tmp_path: Path) -> None:
    """Anyone may encrypt to a public key: a whole new file (and storage checksum) still differs in its plaintext."""
    path, written, recipients = _seal(tmp_path, keys, "ops")
    opener = _opener(path, written, recipients, keys["ops"][0])
    other = tmp_path / "other.dump.zst"
    forged, _ = write_compressed(other, lambda sink: sink(b"DROP TABLE users;"), progress=no_progress, total=None,
                                 recipients=recipients)
    with pytest.raises(BackupInvalidError, match="checksum of the compressed plaintext"):
        verify_file(other, forged.size, forged.sha256, no_progress, sealed=opener)


def test_a_bad_recipient_stops_the_backup_and_leaves_nothing(tmp_path: Path) -> None:
    valid_format_bad_checksum = "age1" + "q" * 58
    with pytest.raises(BackupError, match=f"age could not encrypt.*{ENCRYPT_TO}"):
        write_compressed(tmp_path / "x.dump.zst", lambda sink: sink(b"x" * 3_000_000), progress=no_progress,
                         total=None, recipients=(valid_format_bad_checksum,))
    assert os.listdir(tmp_path) == []


def test_recipients_come_from_keys_and_files(keys, tmp_path: Path) -> None:
    ops, glass = keys["ops"][1], keys["glass"][1]
    listing = tmp_path / "recipients.txt"
    listing.write_text(f"# the ops team\n{glass}\n\n  # break-glass\n{ops}\n")

    assert parse_recipients(f"{ops}, {glass}") == (ops, glass)
    assert parse_recipients(f"{ops}\n{listing}") == (ops, glass)
    assert parse_recipients("  ") == ()
    assert load_keys({ENCRYPT_TO: str(listing), IDENTITY_FILE: " /run/secrets/age "}).identity_file == Path(
        "/run/secrets/age")
    for value, message in [("age1notakey", "not an age X25519 recipient"),
                           ("ssh-ed25519", "cannot read recipients file"),
                           (str(tmp_path / "missing.txt"), "cannot read recipients file")]:
        with pytest.raises(ConfigError, match=f"{ENCRYPT_TO}.*{message}"):
            parse_recipients(value)
    listing.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="lists no recipient"):
        parse_recipients(str(listing))


def test_manifest_records_encryption_and_refuses_a_malformed_record(keys) -> None:
    record = encryption_record((keys["ops"][1],), 10, "cd" * 32)
    encrypted = manifest(encryption=record)
    assert parse_manifest(encrypted.to_json(), "x") == encrypted and encrypted.encrypted
    assert not parse_manifest(manifest().to_json(), "x").encrypted
    for bad in [{**record, "scheme": "gpg"}, {**record, "recipients": []}, {**record, "recipients": ["age1x"]},
                {**record, "compressed_sha256": "zz"}, {**record, "compressed_size": True}, "age"]:
        with pytest.raises(BackupInvalidError, match="manifest encryption"):
            parse_manifest(manifest(encryption=bad).to_json(), "x")  # type: ignore[arg-type]


def test_unencrypted_backups_are_plain_zstd_as_before(tmp_path: Path) -> None:
    path = tmp_path / "x.dump.zst"
    written, _ = write_compressed(path, lambda sink: sink(b"plain"), progress=no_progress, total=None)
    assert (written.compressed_size, written.compressed_sha256) == (written.size, written.sha256)
    assert zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read() == b"plain"
