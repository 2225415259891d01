"""age encryption of backups, streamed through Debian's `age` tool like the dump tools.

No cryptography is written here: `age` (age-encryption.org/v1, X25519 recipients,
ChaCha20-Poly1305 in 64 KiB authenticated chunks) does it in its own process, so it runs on
the second core beside zstd and the dump tool, and the private key is read by `age` alone,
never by this process. Measured against pyrage's `encrypt_io` on 1 GiB: the same memory
(about 18 MB), the tool as fast as writing the plaintext, pyrage 1.3x slower; decryption
likewise.

Each stream here is one pass with fixed-size buffers: what we write goes into the tool's
stdin while a thread copies its stdout onward, so memory stays flat at any size.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from dbjobs.engines.base import CHUNK, StderrTail, require_tool, tool_version
from dbjobs.errors import BackupError, BackupInvalidError, ConfigError, DbjobsError
from dbjobs.recipients import ENCRYPT_TO, IDENTITY_FILE, Sealed, short

HINT = "age (Debian/Ubuntu: apt-get install age)"


class Writer(Protocol):
    """Anything bytes can be written to (a file, a HashingFile)."""

    def write(self, data: bytes | memoryview, /) -> object: ...


class Discard:
    """A Writer that keeps nothing: what matters is what passed through on the way (a hash, a count)."""

    def write(self, data: bytes | memoryview, /) -> int:
        return len(data)


def age_version() -> str:
    """The `age` tool's version, recorded in the manifest like the dump tools' (and a check that it exists)."""
    return tool_version(require_tool("age", install_hint=HINT))


def _copy(source: IO[bytes], out: Writer, failed: list[BaseException], on_failure: Callable[[], None]) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while n := source.readinto(buf):  # type: ignore[attr-defined]
            out.write(view[:n])
    except BaseException as exc:  # re-raised by the caller's thread
        failed.append(exc)
        on_failure()


@contextmanager
def _filter(args: Sequence[str], out: Writer, failure: Callable[[str], DbjobsError]) -> Iterator[IO[bytes]]:
    """Run `age ARGS` with what the block writes as its stdin and its stdout copied into `out`.

    The block's writes raise BrokenPipeError once `age` has given up; the exit status and
    `age`'s own message then decide the error (`failure(tail)`), so a refusal reads as one line.
    """
    err = StderrTail()
    proc = subprocess.Popen([require_tool("age", install_hint=HINT), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err.file)
    assert proc.stdin is not None and proc.stdout is not None
    failed: list[BaseException] = []
    copier = threading.Thread(target=_copy, args=(proc.stdout, out, failed, proc.kill), name="dbjobs-age", daemon=True)
    copier.start()
    broken = False
    try:
        try:
            yield proc.stdin
        except BrokenPipeError:
            broken = True
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    except BaseException:
        proc.kill()
        copier.join()
        proc.wait()
        raise
    copier.join()
    code = proc.wait()
    if failed:
        raise failed[0]
    if code != 0 or broken:
        raise failure(err.tail())


def _said(tail: str) -> str:
    """What `age` said, without its closing "report unexpected or unhelpful errors" line."""
    lines = [part.removeprefix("age: ").removeprefix("error: ") for part in tail.split(" | ")]
    return "; ".join(line for line in lines if "report unexpected" not in line) or "no error output"


def encrypting(out: Writer, recipients: Sequence[str]) -> contextlib.AbstractContextManager[IO[bytes]]:
    """A stream whose bytes reach `out` encrypted to every one of `recipients` (any one identity opens it)."""
    args = ["--encrypt", *(arg for r in recipients for arg in ("--recipient", r))]
    return _filter(args, out, lambda tail: BackupError(f"age could not encrypt the backup ({_said(tail)}); check "
                                                       f"{ENCRYPT_TO}; nothing was kept"))


def check_recipients(recipients: Sequence[str]) -> None:
    """Have `age` accept the recipients before a dump starts: a key with a bad checksum fails here, in one line."""
    with encrypting(Discard(), recipients):
        pass


def _refusal(sealed: Sealed, tail: str) -> DbjobsError:
    """`age`'s refusal to decrypt as the user's error: the wrong key, or bytes that are not what was stored."""
    to = ", ".join(map(short, sealed.recipients))
    if "no identity matched" in tail:
        return ConfigError(f"the identity in {IDENTITY_FILE} is not one of the recipients of backup "
                           f"{sealed.backup_id} ({to}), or the file's header was altered; nothing was changed")
    if str(sealed.identity_file) in tail:  # age names the identity file when it cannot use it
        return ConfigError(f"{IDENTITY_FILE} does not hold an age identity (it should be a file written by "
                           f"`dbjobs keygen` or `age-keygen`); nothing was changed")
    return BackupInvalidError(f"{sealed.backup_id}: cannot decrypt and authenticate ({_said(tail)}): "
                              "the file is corrupt or was tampered with; nothing was changed")


def decrypting(out: Writer, sealed: Sealed) -> contextlib.AbstractContextManager[IO[bytes]]:
    """A stream of ciphertext in, authenticated compressed plaintext into `out`; a bad key or byte is refused."""
    return _filter(["--decrypt", "--identity", str(sealed.identity_file)], out, lambda tail: _refusal(sealed, tail))


@contextmanager
def decrypted(source: BinaryIO, sealed: Sealed) -> Iterator[IO[bytes]]:
    """The compressed plaintext of the open encrypted file `source` (read from its start), as a stream.

    `age` reads the file itself and emits only chunks it has authenticated; its exit status is
    checked when the stream is done, so a cut or altered file raises rather than ending early.
    """
    source.seek(0)
    err = StderrTail()
    proc = subprocess.Popen([require_tool("age", install_hint=HINT), "--decrypt", "--identity",
                             str(sealed.identity_file)], stdin=source, stdout=subprocess.PIPE, stderr=err.file)
    assert proc.stdout is not None
    try:
        yield proc.stdout
        trailing = len(proc.stdout.read(CHUNK))  # nothing may follow the compressed stream
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    code = proc.wait()
    if code != 0:
        raise _refusal(sealed, err.tail())
    if trailing:
        raise BackupInvalidError(f"{sealed.backup_id}: data follows the compressed dump; nothing was changed")


def keygen(path: Path) -> str:
    """Write a new age key pair to `path` (mode 0600, never over an existing file); return its public key."""
    if path.exists():
        raise ConfigError(f"{path} already exists; keygen never overwrites a key (choose another file)")
    tool = require_tool("age-keygen", install_hint=HINT)
    made = subprocess.run([tool, "-o", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise ConfigError(f"age-keygen could not write {path}: {made.stderr.strip().splitlines()[0]}")
    public = subprocess.run([tool, "-y", str(path)], capture_output=True, text=True, check=True)
    return public.stdout.strip()
