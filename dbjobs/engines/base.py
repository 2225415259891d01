"""The connector protocol and the subprocess plumbing the tool-based engines share.

A connector streams: `dump` pushes raw dump bytes into a sink as the tool produces them and
`restore` feeds chunks to the tool's stdin, so no dump is ever held in memory or staged in a
temporary file. Client tools receive passwords through their environment or an option file,
never their argument list (which any local user can read in `ps`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import BackupError, DatabaseUnavailableError, RestoreError, ToolMissingError

if TYPE_CHECKING:
    from dbjobs.frames import Cuts, FrameReader
    from dbjobs.swap import SwapSite

CHUNK = 1 << 20
Sink = Callable[[bytes | memoryview], object]


@dataclass(frozen=True)
class Staging:
    """Where a restore may stage an image (the backup directory, never beside the live database) and
    what the image must hold before it is copied in: the manifest's raw size and row counts."""

    directory: Path
    backup_id: str
    raw_size: int
    row_counts: dict[str, int]
    exact_counts: bool = True
    # Called once the image is checked, just before it is copied in: the job's fence (a job whose lock was lost
    # while it staged or checked the image stops here, before it changes the database).
    before_copy: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class ShadowLoad:
    """What a swap restore loads into the shadow, and how it checks the result against the manifest."""

    chunks: Callable[[], Iterable[bytes]]  # the raw dump, streamed
    name: str  # the backup's id, for messages
    work_dir: Path  # where an archive may be unpacked for a parallel load (emptied first, removed after)
    jobs: int  # parallel load jobs
    same_database: bool  # restoring into the alias it was taken from: keep owners and grants
    check: Callable[[DatabaseURL], None]  # raises RestoreError when the loaded shadow differs from the manifest
    # exact row counts the load already took, of tables it had finished (the check counts the others)
    counted: dict[str, int] = field(default_factory=dict)
    # the backup's frames, where its manifest indexes them (`dbjobs.frames`): loaders then decompress their own
    # parts at once, instead of one pass through `chunks`
    frames: FrameReader | None = None
    progress: Callable[[int], None] = lambda _: None  # told the raw bytes loaded so far when `frames` are read


def loads_nothing(_: DatabaseURL) -> None:
    """The load and check of a swap site built for `restore --undo`, which swaps a copy back and loads nothing."""
    raise AssertionError("an undo loads nothing")


class Connector(ABC):
    """What backup and restore need from an engine; each engine implements it once."""

    engine: ClassVar[str]
    swaps: ClassVar[bool] = False  # has a swap restore (see `swap_blocker`, `swap_site`)
    # zstd worker threads. 0 compresses in the reading thread: right when the dump tool and the
    # server already keep the cores busy (measured: threads only added contention for pg_dump).
    compress_threads: ClassVar[int] = 0
    # False after a dump whose row counts were not taken on the dump's own snapshot (see MySQL's)
    counts_exact: bool = True

    def __init__(self, db: DatabaseURL) -> None:
        self.db = db

    @abstractmethod
    def tool_versions(self) -> dict[str, str]:
        """Versions of the client tools used, after checking they exist and fit the server."""

    @abstractmethod
    def server_version(self) -> str:
        """The server's version string, recorded in the manifest."""

    @abstractmethod
    def size_bytes(self) -> int:
        """The database's size on disk: the progress total while dumping."""

    @abstractmethod
    def dump(self, sink: Sink) -> dict[str, int]:
        """Stream a consistent dump into `sink`; return exact row counts from the same snapshot."""

    @abstractmethod
    def restore(self, chunks: Iterable[bytes], *, same_database: bool, staging: Staging | None = None) -> None:
        """Replace the database's contents with the (checked) dump in `chunks`, all or nothing.

        `staging` says where an engine that restores from a file image may stage it, and what the
        image must hold (engines that stream into their server ignore it).
        """

    def frame_cuts(self) -> Cuts | None:
        """Where the backup's zstd stream should start new frames, so a restore can decompress its parts apart and
        at once (`dbjobs.frames`); None: one frame (an engine whose restore reads the dump in one pass)."""
        return None

    def exists(self) -> bool:
        """Whether there is a database to save before a restore (a new SQLite file has none)."""
        return True

    def row_counts(self, jobs: int = 1, skip: Collection[str] = ()) -> dict[str, int]:
        """Exact rows per table, named as in the manifest (`jobs` tables counted at once where it helps), but for
        the tables in `skip` (counted already)."""
        raise NotImplementedError(f"{self.engine} does not count rows outside a dump")

    def swap_blocker(self) -> str | None:
        """Why this database cannot be restored by swap (see dbjobs/swap.py), or None when it can."""
        return f"{self.engine} restores in place"

    def swap_site(self, load: ShadowLoad | None) -> SwapSite:
        """The swap steps for this database; `load` None for an undo, which loads nothing."""
        raise NotImplementedError(f"{self.engine} has no swap restore")

    def connect_check(self) -> None:
        """Fail fast, with a clear message, when the server cannot be reached."""
        self.server_version()

    def exclusive(self, holder: str, *, wait: float) -> contextlib.AbstractContextManager[None]:
        """Hold the database's own lock while a job changes it (restore, migration), so two such jobs never
        interleave even when Redis forgets its lock; `holder` is `<job> <task id>`. See `dbjobs.engines.dblock`."""
        from dbjobs.engines.dblock import hold

        return hold(self.db, holder, wait=wait)


def require_tool(*names: str, install_hint: str) -> str:
    """The first of `names` on PATH, or a ToolMissingError saying what to install."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ToolMissingError(f"{' or '.join(names)} not found on PATH; install {install_hint}")


def tool_version(path: str) -> str:
    """`tool --version`, first line: recorded so a restore can tell what wrote a backup.

    Cached per file and modification time: a worker asks on every backup (a restore asks twice,
    for its safety backup), and an upgraded tool is noticed.
    """
    return _tool_version(path, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _tool_version(path: str, _mtime: int) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def counting_while(count: Callable[[], dict[str, int]], dump: Callable[[], None]) -> dict[str, int]:
    """Run `count` in a thread while `dump` runs here, so exact row counts cost no wall time.

    Both must succeed: a count that failed is re-raised rather than leaving a manifest with
    tables missing from its row counts.
    """
    counts: dict[str, int] = {}
    failed: list[BaseException] = []

    def run() -> None:
        try:
            counts.update(count())
        except BaseException as exc:  # re-raised in the calling thread
            failed.append(exc)

    counter = threading.Thread(target=run, name="dbjobs-row-counts")
    counter.start()
    try:
        dump()
    finally:
        counter.join()
    if failed:
        raise failed[0]
    return counts


def major_version(text: str) -> int:
    """The first number in a version string ('pg_dump (PostgreSQL) 15.20' -> 15)."""
    match = re.search(r"(\d+)", text.split(")")[-1] if ")" in text else text)
    return int(match.group(1)) if match else 0


def unavailable(db: DatabaseURL, exc: OperationalError) -> DatabaseUnavailableError:
    """A connection failure as a one-line user error (the driver's text without the URL)."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
    return DatabaseUnavailableError(f"database {db.alias!r} ({db.redacted()}) is unreachable: {reason}")


class StderrTail:
    """Collects a tool's stderr in a temp file, so a chatty tool can never fill a pipe and hang."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115  (closed with the object)

    def tail(self, lines: int = 3) -> str:
        self.file.seek(0)
        text = self.file.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        text = [line for line in text if line.strip().strip("-")]  # the mariadb client frames errors in dashes
        return " | ".join(line.strip() for line in text[-lines:]) or "no error output"


def run_dump(argv: Sequence[str], env: Mapping[str, str], sink: Sink, what: str, *,
             pass_fds: Sequence[int] = ()) -> None:
    """Run a dump tool and push its stdout into `sink` chunk by chunk; raise BackupError on failure.

    `pass_fds` are inherited by the tool (an option file it reads as `/dev/fd/N`).
    """
    err = StderrTail()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err.file, env={**os.environ, **env},
                          pass_fds=pass_fds) as proc:
        assert proc.stdout is not None
        with contextlib.suppress(OSError, AttributeError):  # Linux: a 1 MiB pipe, so the tool blocks (and we wake) less
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while n := proc.stdout.readinto(buf):
                sink(view[:n])
        except BaseException:
            proc.kill()
            raise
        code = proc.wait()
    if code != 0:
        raise BackupError(f"{what} failed (exit {code}): {err.tail()}")


@dataclass(frozen=True)
class FileSpan:
    """`length` bytes at `offset` of the open file `fd`, to be fed to a tool as they are.

    `run_restore` sends a span with sendfile(2): the kernel moves the bytes from the page cache
    into the tool's pipe, instead of a read into Python and a write out of it (measured: a
    third of the CPU for 845 MiB, on a machine whose cores the load itself needs).
    """

    fd: int
    offset: int
    length: int

    def send(self, out: int) -> None:
        """Write the span to the pipe or file `out` (blocking until it has taken all of it)."""
        offset, end = self.offset, self.offset + self.length
        while offset < end:
            sent = os.sendfile(out, self.fd, offset, end - offset)
            if sent == 0:
                raise RestoreError(f"the work file ended at {offset} bytes, before the {end} it was said to hold")
            offset += sent


def run_restore(
    stages: Sequence[Sequence[str]], env: Mapping[str, str], chunks: Iterable[bytes | memoryview | FileSpan],
    what: str, *, pass_fds: Sequence[int] = (),
) -> None:
    """Feed `chunks` into a pipeline of tools (each one's stdout into the next one's stdin).

    Raise RestoreError with the failing tool's last error lines. Feeding runs in a thread so a
    tool that dies early is noticed instead of blocking a write forever.
    """
    full_env = {**os.environ, **env}
    procs: list[tuple[subprocess.Popen[bytes], StderrTail]] = []
    stdin: int | IO[bytes] = subprocess.PIPE
    for i, argv in enumerate(stages):
        err = StderrTail()
        last = i == len(stages) - 1
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                                stderr=err.file, env=full_env, pass_fds=pass_fds)
        if procs:
            procs[-1][0].stdout.close()  # type: ignore[union-attr]  # only the next stage holds it now
        procs.append((proc, err))
        stdin = proc.stdout  # type: ignore[assignment]
    head = procs[0][0]
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for chunk in chunks:
                if isinstance(chunk, FileSpan):
                    head.stdin.flush()  # type: ignore[union-attr]  # what was written before goes first
                    chunk.send(head.stdin.fileno())  # type: ignore[union-attr]
                else:
                    head.stdin.write(chunk)  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        except BaseException as exc:  # reported after the tools are stopped
            failure.append(exc)
            for proc, _ in procs:
                proc.kill()
        finally:
            with contextlib.suppress(BrokenPipeError):
                head.stdin.close()  # type: ignore[union-attr]

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    feeder.join()
    codes = [proc.wait() for proc, _ in procs]
    if failure:
        raise failure[0]
    for (proc, err), code in reversed(list(zip(procs, codes, strict=True))):
        if code != 0:
            raise RestoreError(f"{what} failed ({os.path.basename(str(proc.args[0]))} exit {code}): {err.tail()}")


class ServerConnector(Connector):
    """A connector for a database server reached over the network (PostgreSQL, MySQL)."""

    version_sql: ClassVar[str]
    size_sql: ClassVar[str]

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection of its own (no pool left behind); a connection failure is a one-line user error."""
        engine = self.db.create_engine(poolclass=NullPool)
        try:
            with engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise unavailable(self.db, exc) from None
        finally:
            engine.dispose()

    def _scalar(self, sql: str) -> object:
        with self.connection() as conn:
            return conn.execute(text(sql)).scalar()

    def server_version(self) -> str:
        return str(self._scalar(self.version_sql))

    def size_bytes(self) -> int:
        return int(self._scalar(self.size_sql) or 0)  # type: ignore[call-overload]
