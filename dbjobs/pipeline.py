"""The streaming pipeline: dump bytes -> zstd -> [age] -> SHA-256 -> temporary file -> fsync -> rename.

One pass, fixed-size buffers: memory stays flat however large the database. A file appears
under its final name only when complete and synced, so a crash leaves at most a hidden
`.partial` file that nothing lists or restores. With recipients, the compressed stream is
encrypted in the same pass (`dbjobs.crypto`): both the compressed plaintext and the stored
ciphertext are hashed on the way, so storage integrity is checked without the key and a
restore checks both.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import zstandard

from dbjobs.crypto import Discard, Writer, decrypted, decrypting, encrypting
from dbjobs.engines.base import CHUNK, Sink
from dbjobs.errors import BackupInvalidError, DbjobsError
from dbjobs.frames import Cuts, FramedWriter
from dbjobs.progress import Progress, ProgressCallback
from dbjobs.recipients import Sealed

T = TypeVar("T")
PARTIAL_SUFFIX = ".partial"
DEFAULT_LEVEL = 1  # measured: as fast as raw pg_dump -Z0 and smaller than pg_dump -Fc (gzip); 3 is ~40% slower


@dataclass(frozen=True)
class Written:
    """What the pipeline wrote: stored size and digest, the raw dump size, and the compressed stream's.

    Unencrypted, the stored bytes are the compressed stream; encrypted, they are its ciphertext.
    """

    size: int
    raw_size: int
    sha256: str
    compressed_size: int
    compressed_sha256: str
    frames: list[list[int]] = field(default_factory=list)  # [raw offset, stored offset, tag] (`dbjobs.frames`)


class HashingFile:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f: Writer) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)


def private_dir(path: Path) -> Path:
    """Create a backup directory readable by its owner only (existing ones are left as they are)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def fsync_dir(path: Path) -> None:
    """Persist a rename: without it a crash can forget that the file has its final name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_path(path: Path) -> Path:
    """The hidden name a file is written under until it is complete: never listed, never restored."""
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_file(path: Path, *, exclusive: bool = False) -> Iterator[BinaryIO]:
    """A private (0600) file written under its hidden partial name, renamed to `path` only once synced.

    Any exception inside the block removes the partial file, so `path` either appears complete
    or not at all. The writer holds an flock on the partial file, which the kernel drops when the
    writer dies: that is how cleanup tells a killed job's leftover from a file being written
    (`inuse.in_use`). `exclusive` refuses a partial name a live writer holds, and takes over one a
    dead writer left (a job redelivered after kill -9 in the same second writes the same name).
    """
    tmp = partial_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while writing: cleanup leaves a live writer's file alone
    except BlockingIOError:
        if exclusive:
            os.close(fd)
            raise FileExistsError(errno.EEXIST, "another live process is writing this file", str(tmp)) from None
    os.ftruncate(fd, 0)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file (a manifest) under a temporary name, sync it, then rename it into place."""
    with atomic_file(path) as f:
        f.write(data)


@contextmanager
def _compressed_into(stored: HashingFile, recipients: Sequence[str]) -> Iterator[HashingFile]:
    """Where the compressed stream goes: the stored file itself, or `age` encrypting into it."""
    if not recipients:
        yield stored
        return
    with encrypting(stored, recipients) as age:
        yield HashingFile(age)


def write_compressed(
    path: Path, produce: Callable[[Sink], T], *, level: int = DEFAULT_LEVEL, threads: int = 0,
    progress: ProgressCallback, total: int | None, phase: str = "dump", recipients: Sequence[str] = (),
    cuts: Cuts | None = None,
) -> tuple[Written, T]:
    """Run `produce(sink)` and store what it pushes into `sink` as a zstd file at `path`, atomically.

    With `recipients` the file is the age encryption of that zstd stream, written in the same pass.
    With `cuts` the stream is written as a frame per unit the engine names, and `Written.frames` is
    their index (`dbjobs.frames`); only for an unencrypted file, whose stored offsets it gives.
    """
    assert not (cuts and recipients), "an index of frames gives offsets in the stored file: unencrypted only"
    raw = 0
    with atomic_file(path, exclusive=True) as f:
        stored = HashingFile(f)
        with _compressed_into(stored, recipients) as hashing:
            compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=threads)
            with compressor.stream_writer(hashing, size=-1, closefd=False, write_size=CHUNK) as zst:
                framed = FramedWriter(zst, cuts, lambda: hashing.size) if cuts else None
                write = framed.write if framed else zst.write

                def sink(chunk: bytes | memoryview) -> None:
                    nonlocal raw
                    write(chunk)
                    before, raw = raw, raw + len(chunk)
                    if raw >> 20 != before >> 20:  # every MiB: callers throttle what they pass on
                        progress(Progress(phase, raw, estimate(raw, total)))

                result = produce(sink)
                if framed:
                    framed.close()
        progress(Progress(phase, raw, raw))
    written = Written(size=stored.size, raw_size=raw, sha256=stored.hash.hexdigest(),
                      compressed_size=hashing.size, compressed_sha256=hashing.hash.hexdigest(),
                      frames=framed.index if framed else [])
    return written, result


def estimate(done: int, total: int | None) -> int | None:
    """The total to show while `done` bytes are through: the caller's estimate until the work outgrows it,
    then a little more than done, so a bar slows near its end instead of passing 100% or jumping to it."""
    if total is None or done < total * 0.95:
        return total
    return int(done / 0.95)


def verify_file(
    path: Path, size: int, sha256: str, progress: ProgressCallback, *, sealed: Sealed | None = None
) -> None:
    """Check a backup's size and SHA-256 before anything is touched; raise BackupInvalidError on mismatch."""
    with open(path, "rb") as f:
        verify_open(f, path.name, size, sha256, progress, sealed=sealed)


def verify_open(
    f: BinaryIO, name: str, size: int, sha256: str, progress: ProgressCallback, *, sealed: Sealed | None = None
) -> None:
    """`verify_file` on a file already open (read from its start): a restore verifies and loads one descriptor.

    An encrypted backup (`sealed`) is also decrypted in the same pass and its compressed
    plaintext checked against the manifest: a wrong identity or an altered byte is refused here.
    """
    actual = os.fstat(f.fileno()).st_size
    if actual != size:
        raise BackupInvalidError(f"{name}: size is {actual} bytes, the manifest says {size} (truncated?)")
    digest = hashlib.sha256()
    plain = HashingFile(Discard())
    refused: DbjobsError | None = None
    f.seek(0)
    try:
        with decrypting(plain, sealed) if sealed else nullcontext() as age:
            while chunk := f.read(CHUNK * 4):
                digest.update(chunk)
                if age is not None:
                    age.write(chunk)
                progress(Progress("verify", f.tell(), size))
    except DbjobsError as exc:  # finish the storage check first: a damaged file is the plainer explanation
        refused = exc
        while chunk := f.read(CHUNK * 4):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise BackupInvalidError(f"{name}: SHA-256 does not match the manifest (the file is corrupt)")
    if refused is not None:
        raise refused
    if sealed and (plain.size, plain.hash.hexdigest()) != (sealed.compressed_size, sealed.compressed_sha256):
        raise BackupInvalidError(f"{name}: the decrypted dump does not match the manifest's checksum of the "
                                 "compressed plaintext (the backup was replaced or the manifest edited)")


def decompressed_chunks(path: Path, progress: ProgressCallback, total: int, *,
                        sealed: Sealed | None = None) -> Iterator[bytes]:
    """Yield the raw dump of a verified backup (decrypted first if `sealed`), reporting the raw bytes fed so
    far (of `total`, the dump's raw size) after every chunk of a MiB: what the client tool has received,
    however well the dump compressed."""
    with open(path, "rb") as f:
        yield from decompressed_open(f, path.name, progress, total, sealed=sealed)


def decompressed_open(f: BinaryIO, name: str, progress: ProgressCallback, total: int, *,
                      sealed: Sealed | None = None) -> Iterator[bytes]:
    """`decompressed_chunks` from an open file, read from its beginning; `age` reads it itself when sealed."""
    f.seek(0)
    with decrypted(f, sealed) if sealed else nullcontext(f) as source:
        reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=CHUNK, closefd=False,
                                                            read_across_frames=True)
        fed = 0
        try:
            while chunk := reader.read(CHUNK):
                yield chunk
                fed += len(chunk)
                progress(Progress("restore", fed, max(total, fed)))  # exact, unless the manifest is wrong
        except zstandard.ZstdError as exc:
            raise BackupInvalidError(f"{name}: cannot decompress ({exc})") from None
    progress(Progress("restore", total, total))
