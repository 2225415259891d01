"""Load a streamed `pg_dump -Fc` archive into the shadow database while it is still being decompressed.

`pg_restore -j` needs the whole archive in a seekable file before it starts, so a restore used to
decompress the backup first (seconds for a GB) and only then load. Here the load starts as soon
as the table of contents has arrived, in three steps that restore every entry exactly once:

1. **pre-data** (`pg_restore -l --section=pre-data`: tables, types, functions ...), fed only the
   table of contents through a pipe: these entries read no data.
2. **data**: each table's data block, found in the stream as it passes (pg_archive.BlockFinder),
   is loaded by a `pg_restore -L <its entries>` fed the table of contents and then the block's
   bytes, `jobs` of them at once, followed in the same session by the indexes and primary-key or
   unique constraints that need nothing but that table (`own_indexes`), as `pg_restore -j` does.
   pg_restore reads a pipe sequentially and meets each listed block right where it expects it.
   A block is loaded while it is still arriving: its bytes are followed in the archive file as
   the decompression writes them (`GrowingFile`). Small blocks in a row are loaded by one
   pg_restore (`GROUP_BYTES`), so a thousand tiny tables cost a few processes, not a thousand;
   a big block starts on its own as soon as it proves big.
3. **the rest** (foreign keys, other indexes, triggers, sequence values, ACLs, comments: everything
   not in 1 or 2) by one `pg_restore -j jobs -L <the rest>` from the complete file. These entries
   read no data, so the file needs no data offsets.

Every step runs with `--exit-on-error` and must exit 0; the first failure stops the loaders still
waiting for bytes and fails the restore (the shadow is dropped, the target untouched). A data
block the finder did not meet (an archive laid out otherwise) is left to step 3, where pg_restore
scans the file for it. A block start found wrongly (bytes of a large object that look like a
header) cannot pass unnoticed: pg_restore checks each block's header and reads each chunk's
length, so a block cut short or entered in its middle fails the load.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path

from dbjobs.engines.base import FileSpan, run_restore
from dbjobs.engines.pg_archive import SECTION_POST_DATA, BlockFinder, Toc, read_toc
from dbjobs.errors import BackupInvalidError, RestoreError
from dbjobs.frames import FrameReader

# Small tables in a row share one pg_restore until they hold this much data (a process and a connection cost
# ~30 ms); a table bigger than this starts on its own once this much of it has arrived.
GROUP_BYTES = 32 << 20
SPAN = 16 << 20  # bytes of the work file a loader sends at a time
PROGRESS_EVERY = 0.5  # seconds between progress reports of a framed load


class Stopped(RestoreError):
    """Another step failed: this one was stopped (its own error is not the one to report)."""


class GrowingFile:
    """The archive file as the decompression writes it; readers wait for bytes not yet written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.size = 0
        self.complete = False
        self.stopped = False
        self._changed = threading.Condition()

    def append(self, chunk: bytes | memoryview) -> None:
        """Write the next chunk at the end and wake the readers."""
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]
        with self._changed:
            self.size += len(chunk)
            self._changed.notify_all()

    def finish(self, *, stopped: bool = False) -> None:
        """No more bytes will come (`stopped`: because the restore failed; readers stop too)."""
        with self._changed:
            self.complete, self.stopped = True, stopped
            self._changed.notify_all()

    def read(self, start: int, end: Callable[[], int | None]) -> Iterator[FileSpan]:
        """The bytes from `start` up to `end()` (the end of the file while None), waiting for them as they come,
        as spans of the file (sent to pg_restore without passing through Python).

        A reader may get a few bytes past `end()` (written before that end was known): pg_restore stops
        reading after its last listed block, so they are never used.
        """
        pos = start
        while True:
            with self._changed:
                while True:
                    self._go_on()
                    stop = end()
                    limit = self.size if stop is None else min(stop, self.size)
                    if pos < limit:
                        break
                    if (stop is not None and pos >= stop) or self.complete:
                        return
                    self._changed.wait()
            while pos < limit:  # in pieces, so a load stopped meanwhile sends at most one more
                self._go_on()
                length = min(SPAN, limit - pos)
                yield FileSpan(self.fd, pos, length)
                pos += length

    def _go_on(self) -> None:
        if self.stopped:
            raise Stopped("stopped: another step of the load failed")

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class _Blocks:
    """The data blocks met so far, in archive order, and which of them are handed to a loader."""

    order: list[int] = field(default_factory=list)  # dump ids
    start: dict[int, int] = field(default_factory=dict)
    handed: int = 0  # order[:handed] belong to a submitted group

    def end(self, i: int) -> int | None:
        """Where block `order[i]` ends: where the next one starts (None: not known yet)."""
        return self.start[self.order[i + 1]] if i + 1 < len(self.order) else None


def _listing(toc_bytes: bytes, env: dict[str, str], *options: str) -> list[str]:
    """`pg_restore -l` of the table of contents: one line per entry, `<dump id>; ...`."""
    out = subprocess.run(["pg_restore", "-l", *options], input=toc_bytes, capture_output=True, env=env, check=False)
    if out.returncode != 0:
        raise RestoreError(f"pg_restore could not list the archive: {out.stderr.decode(errors='replace').strip()}")
    return [line for line in out.stdout.decode().splitlines() if line and not line.startswith(";")]


def _entry_id(line: str) -> int:
    return int(line.split(";", 1)[0])


def own_indexes(toc: Toc, pre_data: set[int]) -> dict[int, list[int]]:
    """For each `TABLE DATA` entry, the indexes and (primary key, unique) constraints that depend on its table
    and otherwise only on pre-data entries: they can be built as soon as that table is loaded."""
    table_data = {e.deps[0]: dump_id for dump_id, e in toc.entries.items()
                  if e.desc == "TABLE DATA" and len(e.deps) == 1}
    own: dict[int, list[int]] = {}
    for dump_id, e in toc.entries.items():
        if e.section != SECTION_POST_DATA or e.desc not in ("INDEX", "CONSTRAINT"):
            continue
        tables = [dep for dep in e.deps if dep in table_data]
        if len(tables) == 1 and all(dep in pre_data for dep in e.deps if dep != tables[0]):
            own.setdefault(table_data[tables[0]], []).append(dump_id)
    return own


def _list_file(directory: Path, name: str, lines: Iterable[str]) -> Path:
    path = directory / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


class StreamingLoad:
    """One streamed load into one shadow database (see the module docstring)."""

    def __init__(self, directory: Path, env: dict[str, str], restore_args: Sequence[str], jobs: int,
                 what: str, loaded: Callable[[list[tuple[str, str]]], None] | None = None) -> None:
        self.directory = directory
        self.loaded = loaded  # told (schema, table) of the tables each loader has finished, indexes included
        self.env = {**os.environ, **env}
        self.args = list(restore_args)  # connection and ownership options, shared by every pg_restore
        self.jobs = max(1, jobs)
        self.what = what
        self.path = directory / "archive.dump"
        self.lines: dict[int, str] = {}  # dump id -> its `pg_restore -l` line
        self.own: dict[int, list[int]] = {}  # data entry -> the indexes loaded right after it (`own_indexes`)
        self.blocks = _Blocks()
        self.toc = Toc()
        self._lock = threading.Lock()  # guards `blocks` between the decompressing thread and the loaders

    def _pg_restore(self, list_file: Path | None, source: Iterable[bytes | FileSpan] | Path, *extra: str) -> None:
        """One pg_restore into the shadow: of the entries in `list_file` (all: None), fed `source` or reading it."""
        listed = ["-L", str(list_file)] if list_file else []
        path = [str(source)] if isinstance(source, Path) else []
        run_restore([["pg_restore", "--no-password", "--exit-on-error", *self.args, *extra, *listed, *path]],
                    self.env, () if isinstance(source, Path) else source, self.what)

    def run(self, chunks: Iterable[bytes], name: str) -> None:
        """Write the archive in `chunks` to the work directory and load it, both at once."""
        head, toc, rest = read_toc(chunks, name)
        if toc is None:  # a layout the parser does not know: the whole file first, then pg_restore -j
            with open(self.path, "wb") as out:
                for chunk in _chain(head, rest):
                    out.write(chunk)
            self._pg_restore(None, self.path, "-j", str(self.jobs))
            return
        archive = GrowingFile(self.path)
        try:
            self._streamed(archive, head, toc, rest)
        finally:
            archive.finish(stopped=True)  # a loader still waiting for bytes stops (a no-op after success)
            archive.close()

    def _list(self, toc: Toc, toc_bytes: bytes) -> tuple[list[str], list[str]]:
        """Every entry's and the pre-data entries' `pg_restore -l` lines; notes which indexes follow which table."""
        self.toc = toc
        every = _listing(toc_bytes, self.env)
        self.lines = {_entry_id(line): line for line in every}
        pre = _listing(toc_bytes, self.env, "--section=pre-data")
        self.own = own_indexes(toc, {_entry_id(line) for line in pre})
        return every, pre

    def _rest(self, every: list[str], pre: list[str], loaded: Iterable[int], source: Path) -> None:
        """Step 3: the entries neither pre-data nor loaded with a data block, by `pg_restore -j` from `source`."""
        done = {*pre, *(self.lines[j] for i in loaded for j in self._with_own(i))}
        remaining = [line for line in every if line not in done]
        if remaining:
            self._pg_restore(_list_file(self.directory, "rest.list", remaining), source, "-j", str(self.jobs))

    def _streamed(self, archive: GrowingFile, head: bytes, toc: Toc, rest: Iterator[bytes]) -> None:
        toc_bytes = head[:toc.end]
        every, pre = self._list(toc, toc_bytes)
        finder = BlockFinder(toc)
        steps: list[Future[None]] = []
        with ThreadPoolExecutor(1, thread_name_prefix="dbjobs-pre-data") as first, \
                ThreadPoolExecutor(self.jobs, thread_name_prefix="dbjobs-load") as pool:
            pre_data = first.submit(self._pg_restore, _list_file(self.directory, "pre-data.list", pre), [toc_bytes])
            steps.append(pre_data)

            def hand_over(last: int) -> None:
                """Give blocks order[handed..last] to a loader of their own."""
                first, self.blocks.handed = self.blocks.handed, last + 1
                steps.append(pool.submit(self._group, archive, first, last, toc_bytes, pre_data))

            try:
                for chunk in _chain(head, rest):
                    seen = len(finder.found)
                    archive.append(chunk)
                    finder.feed(chunk)
                    with self._lock:
                        if len(finder.found) > seen:
                            for dump_id, offset in list(finder.found.items())[seen:]:
                                self.blocks.order.append(dump_id)
                                self.blocks.start[dump_id] = offset
                        self._schedule(hand_over, archive.size)
                    for step in steps:
                        if step.done() and step.exception() is not None:
                            raise step.exception()  # type: ignore[misc]
                archive.finish()
                with self._lock:
                    if self.blocks.handed < len(self.blocks.order):
                        hand_over(len(self.blocks.order) - 1)
                for step in as_completed(steps):
                    step.result()
            except BaseException:
                archive.finish(stopped=True)
                raise
        self._rest(every, pre, self.blocks.order, self.path)

    def run_framed(self, frames: FrameReader, progress: Callable[[int], None]) -> None:
        """Load a backup written as a frame per run of data blocks (`dbjobs.frames`): each frame is decompressed
        by its own loader, straight from the backup file, the biggest first, `jobs` at a time.

        Nothing is unpacked: the work directory holds only list files and the table of contents, from
        which step 3 runs (its entries read no data). A frame's blocks are the data entries from the
        one its index names up to the next frame's, in table-of-contents order (the order pg_dump
        writes them); the first frame is the header and table of contents, and the blocks before the
        first cut if the backup found none there.
        """
        head_frame, *parts = frames.frames
        head, toc, rest = read_toc(frames.read(head_frame), frames.name)
        order = [dump_id for dump_id, _, _ in toc.unset] if toc else []
        at = {dump_id: i for i, dump_id in enumerate(order)}
        bounds = [0, *(at.get(part.tag, -1) for part in parts), len(order)]  # type: ignore[arg-type]
        if toc is None or any(b < a for a, b in itertools.pairwise(bounds)) or -1 in bounds:
            raise BackupInvalidError(f"{frames.name}: its index of frames does not fit its table of contents; "
                                     "refused, nothing was changed")
        toc_bytes = head[:toc.end]
        every, pre = self._list(toc, toc_bytes)
        source = self.directory / "toc.dump"
        source.write_bytes(toc_bytes)
        stop = threading.Event()

        def pieces(frame_bytes: Iterable[bytes]) -> Iterator[bytes]:
            for piece in frame_bytes:
                if stop.is_set():
                    raise Stopped("stopped: another step of the load failed")
                yield piece

        units = [(head_frame.raw_size, 0, order[:bounds[1]], _chain(head, rest))]
        units += [(part.raw_size, k, order[bounds[k]:bounds[k + 1]], _chain(toc_bytes, frames.read(part)))
                  for k, part in enumerate(parts, 1)]
        with ThreadPoolExecutor(1, thread_name_prefix="dbjobs-pre-data") as first, \
                ThreadPoolExecutor(self.jobs, thread_name_prefix="dbjobs-load") as pool:
            pre_data = first.submit(self._pg_restore, _list_file(self.directory, "pre-data.list", pre), [toc_bytes])

            def load(k: int, ids: list[int], stream: Iterator[bytes]) -> None:
                pre_data.result()
                if ids:
                    self._load_blocks(f"frame-{k}", ids, pieces(stream))
                else:  # the header's frame alone: read to its end, so its length is checked
                    for _ in stream:
                        pass

            steps = [pre_data, *(pool.submit(load, k, ids, stream)
                                 for _, k, ids, stream in sorted(units, key=lambda u: -u[0]))]
            try:
                while wait(steps, timeout=PROGRESS_EVERY, return_when=FIRST_EXCEPTION).not_done:
                    progress(frames.fed)  # the job's fence may stop the restore here
                    if any(_failed(step) for step in steps):
                        break
            finally:  # no-ops once every step is done
                stop.set()  # loaders still reading stop at their next piece
                for step in steps:
                    step.cancel()  # loaders not started never start
            failed = [step.exception() for step in steps if _failed(step)]
            if failed:
                raise next((exc for exc in failed if not isinstance(exc, Stopped)), failed[0])  # type: ignore[misc]
        progress(frames.fed)
        self._rest(every, pre, order, source)

    def _schedule(self, hand_over: Callable[[int], None], written: int) -> None:
        """Hand over the blocks met so far once they make a group: the complete ones once they are worth
        `GROUP_BYTES`; the newest, still arriving, with the complete ones before it once it alone has grown past it."""
        b = self.blocks
        newest = len(b.order) - 1
        if newest > b.handed and b.start[b.order[newest]] - b.start[b.order[b.handed]] >= GROUP_BYTES:
            hand_over(newest - 1)
        if b.handed <= newest and written - b.start[b.order[newest]] >= GROUP_BYTES:
            hand_over(newest)

    def _group(self, archive: GrowingFile, first: int, last: int, toc_bytes: bytes, pre_data: Future[None]) -> None:
        """Load blocks order[first..last] through a pipe: the table of contents, then their bytes as they arrive."""
        pre_data.result()
        with self._lock:
            ids = self.blocks.order[first:last + 1]
            start = self.blocks.start[ids[0]]

        def end() -> int | None:
            with self._lock:
                return self.blocks.end(last)

        def stream() -> Iterator[bytes | FileSpan]:
            yield toc_bytes
            yield from archive.read(start, end)

        self._load_blocks(f"data-{first}", ids, stream())

    def _load_blocks(self, name: str, ids: Sequence[int], stream: Iterable[bytes | FileSpan]) -> None:
        """One pg_restore of data blocks `ids` and their own indexes, from `stream` (a table of contents, then the
        archive from the first block on); then the tables are told to `loaded`."""
        listed = _list_file(self.directory, f"{name}.list", (self.lines[j] for i in ids for j in self._with_own(i)))
        self._pg_restore(listed, stream)
        if self.loaded is not None:
            entries = [self.toc.entries[i] for i in ids if i in self.lines]
            self.loaded([(e.namespace, e.tag) for e in entries if e.desc == "TABLE DATA"])

    def _with_own(self, data_id: int) -> list[int]:
        """A data entry and the indexes built right after it, those of them pg_restore lists."""
        return [i for i in (data_id, *self.own.get(data_id, ())) if i in self.lines]


def _failed(step: Future[None]) -> bool:
    return step.done() and not step.cancelled() and step.exception() is not None


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest
