"""The parallel loads (dbjobs/engines/pg_load.py) restore exactly what one plain pg_restore does.

A database with every kind of entry a dump holds (tables big and small, an empty one, large
objects, sequences, identity, a view and a materialized view with data, foreign keys, a
trigger, comments, grants, a partitioned table) is dumped to a pipe, as a backup is, and loaded
by the streamed load in small chunks with tiny groups (so tables share loaders, big ones are
followed while they arrive, and headers split across chunks), and by `pg_restore` into another
database. Their full dumps (schema and data, as plain SQL) must be the same. The same dump
written as a backup is, cut into a frame per data block (dbjobs/frames.py), is loaded frame by
frame, each decompressed by its own loader, and must give the same database too. A damaged
archive, a failing entry and a frame index that lies must fail the load, and leave no process behind.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbjobs import frames
from dbjobs.engines import pg_load
from dbjobs.engines.pg_archive import BlockCuts, block_header, read_toc
from dbjobs.engines.pg_load import StreamingLoad
from dbjobs.engines.pg_swap import LoadedCounts
from dbjobs.engines.postgres import PostgresConnector
from dbjobs.errors import BackupInvalidError, RestoreError
from dbjobs.frames import Frame, FrameReader, parse_index
from dbjobs.pipeline import write_compressed
from dbjobs.progress import no_progress
from tests.backup_support import build_sample, connect, db
from tests.conftest import pg_database

pytestmark = pytest.mark.postgres
RICH = [
    "CREATE TABLE big (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL)",
    "INSERT INTO big (body) SELECT repeat(md5(i::text), 20) FROM generate_series(1, 3000) i",
    "CREATE TABLE empty_one (id serial PRIMARY KEY, ref integer REFERENCES customers (id))",
    "CREATE TABLE docs (id integer PRIMARY KEY, body oid)",
    "INSERT INTO docs SELECT i, lo_from_bytea(0, decode(repeat('00', 4000) || '0100', 'hex')) "
    "FROM generate_series(1, 3) i",
    "CREATE SEQUENCE counter START 7",
    "SELECT setval('counter', 42)",
    "CREATE VIEW rich_customers AS SELECT id, name FROM customers WHERE balance > 0",
    "CREATE MATERIALIZED VIEW order_sums AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY 1",
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.body := NEW.body; RETURN NEW; END $$",
    "CREATE TRIGGER big_touch BEFORE UPDATE ON big FOR EACH ROW EXECUTE FUNCTION touch()",
    "COMMENT ON TABLE big IS 'a big one'",
    "CREATE INDEX big_body ON big (left(body, 8))",
    "CREATE TABLE measures (at date NOT NULL, v integer) PARTITION BY RANGE (at)",
    "CREATE TABLE measures_2026 PARTITION OF measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "INSERT INTO measures SELECT date '2026-01-01' + i % 300, i FROM generate_series(1, 500) i",
    "GRANT SELECT ON big TO PUBLIC",
]


def _env(url: str) -> dict[str, str]:
    parsed = db(url)
    return {"PGHOST": parsed.url.host or "", "PGPORT": str(parsed.url.port or 5432),
            "PGUSER": parsed.url.username or "", "PGDATABASE": parsed.database}


def _dump(url: str, *options: str) -> bytes:
    return subprocess.run(["pg_dump", *options], env={**os.environ, **_env(url)}, capture_output=True,
                          check=True).stdout


def _sql(url: str) -> list[bytes]:
    """The database as plain SQL, its name and pg_dump's random `\\restrict` key left out."""
    lines = _dump(url, "-Fp").replace(db(url).database.encode(), b"DB").splitlines()
    return [line for line in lines if not line.startswith((b"\\restrict", b"\\unrestrict"))]


def _chunks(raw: bytes, size: int) -> Iterator[bytes]:
    return (raw[i:i + size] for i in range(0, len(raw), size))


@pytest.fixture
def rich(pg_url: str) -> str:
    build_sample(pg_url)
    with connect(pg_url) as conn:
        for statement in RICH:
            conn.execute(sa.text(statement))
    return pg_url


def _load(target: str, raw: bytes, tmp_path: Path, chunk: int, jobs: int = 2,
          loaded: Callable[[list[tuple[str, str]]], None] | None = None) -> None:
    work = tmp_path / f"load-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    StreamingLoad(work, _env(target), ["-d", db(target).database], jobs, "test load",
                  loaded).run(_chunks(raw, chunk), "t")


def test_each_loaded_table_is_counted_once_its_loader_is_done_and_the_check_counts_the_rest(
        rich: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counts taken beside the load, with the check's own for the rest, are the source's exact row
    counts; a partitioned table (its count includes its partitions') is left to the check."""
    monkeypatch.setattr(pg_load, "GROUP_BYTES", 4096)
    raw = _dump(rich, "-Fc", "-Z0")
    source = PostgresConnector(db(rich)).row_counts()
    with pg_database() as target:
        counted: dict[str, int] = {}
        with LoadedCounts(db(target), counted) as counts:
            _load(target, raw, tmp_path, 4096, loaded=counts.loaded)
        rest = PostgresConnector(db(target)).row_counts(skip=counted)
    assert "public.measures" not in counted and "public.measures" in rest  # partitioned: counted at the end
    assert counted["public.measures_2026"] == 500 and counted["public.big"] == 3000
    assert not set(counted) & set(rest) and {**counted, **rest} == source


@pytest.mark.parametrize("chunk", [509, 1 << 20])
def test_the_streamed_load_restores_what_pg_restore_does(rich: str, tmp_path: Path, chunk: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_load, "GROUP_BYTES", 4096)  # tables share loaders and big ones are followed as they come
    raw = _dump(rich, "-Fc", "-Z0")
    with pg_database() as streamed, pg_database() as plain:
        _load(streamed, raw, tmp_path, chunk)
        subprocess.run(["pg_restore", "--exit-on-error", "-d", db(plain).database], input=raw, check=True,
                       env={**os.environ, **_env(plain)})
        ours, theirs = _sql(streamed), _sql(plain)
    text = b"\n".join(ours)
    assert b"a big one" in text and b"lo_open" in text and b"REFRESH MATERIALIZED VIEW" in text
    assert ours == theirs


def test_a_damaged_archive_or_a_failing_entry_fails_the_load(rich: str, tmp_path: Path) -> None:
    raw = _dump(rich, "-Fc", "-Z0")
    with pg_database() as target, pytest.raises(RestoreError, match="test load failed"):
        _load(target, raw[: len(raw) * 2 // 3], tmp_path, 4096)  # cut inside a data block
    with pg_database() as target:
        with connect(target) as conn:
            conn.execute(sa.text("CREATE TABLE big (x integer)"))  # the dump's CREATE TABLE big fails
        with pytest.raises(RestoreError, match=r"test load failed \(pg_restore exit 1\)"):
            _load(target, raw, tmp_path, 4096)
    leftover = subprocess.run(["pgrep", "-P", str(os.getpid()), "pg_restore"], capture_output=True, text=True)
    assert leftover.stdout == ""


def _framed(raw: bytes, path: Path, chunk: int) -> list[Frame]:
    """`raw` written as our backup writes a dump (in chunks of `chunk`), cut at its data blocks: its frames."""
    def produce(sink):  # type: ignore[no-untyped-def]
        for i in range(0, len(raw), chunk):
            sink(memoryview(raw)[i:i + chunk])

    written, _ = write_compressed(path, produce, progress=no_progress, total=None, cuts=BlockCuts())
    parsed = parse_index(written.frames, written.raw_size, written.size)
    assert parsed is not None
    return parsed


def _load_framed(target: str, path: Path, index: list[Frame], tmp_path: Path, reported: list[int]) -> None:
    work = tmp_path / f"load-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    fd = os.open(path, os.O_RDONLY)
    try:
        StreamingLoad(work, _env(target), ["-d", db(target).database], 2, "test load").run_framed(
            FrameReader(fd, index, "t"), reported.append)
    finally:
        os.close(fd)
    assert sorted(os.listdir(work)) == sorted(["toc.dump", "pre-data.list", "rest.list",
                                               *(f"frame-{f.number}.list" for f in index[1:])])  # nothing unpacked


@pytest.mark.parametrize("chunk", [509, 1 << 20])
def test_the_framed_load_restores_what_pg_restore_does(rich: str, tmp_path: Path, chunk: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "MIN_FRAME", 1)  # a frame per data block
    raw = _dump(rich, "-Fc", "-Z0")
    index = _framed(raw, tmp_path / "b.dump.zst", chunk)
    toc = read_toc([raw], "t")[1]
    assert toc is not None and len(index) == 1 + len(toc.unset) > 5  # the header's frame, then one per block
    assert all(raw[f.raw:].startswith(block_header(1, f.tag) if f.tag else b"PGDMP")  # type: ignore[arg-type]
               for f in index if not raw[f.raw:].startswith(block_header(3, f.tag or 0)))  # blobs start type 3
    reported: list[int] = []
    with pg_database() as framed, pg_database() as plain:
        _load_framed(framed, tmp_path / "b.dump.zst", index, tmp_path, reported)
        subprocess.run(["pg_restore", "--exit-on-error", "-d", db(plain).database], input=raw, check=True,
                       env={**os.environ, **_env(plain)})
        assert _sql(framed) == _sql(plain)
    assert reported[-1] == len(raw)


def test_a_frame_index_that_lies_fails_the_load(rich: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame said longer than it is, or one whose block is not the one the index names: refused, and no loader
    is left running."""
    monkeypatch.setattr(frames, "MIN_FRAME", 1)
    raw = _dump(rich, "-Fc", "-Z0")
    path = tmp_path / "b.dump.zst"
    index = _framed(raw, path, 1 << 20)
    last = index[-1]
    longer = [*index[:-2], Frame(index[-2].number, index[-2].raw, index[-2].raw_end + 1, index[-2].stored,
                                 index[-2].stored_end, index[-2].tag),
              Frame(last.number, last.raw + 1, last.raw_end, last.stored, last.stored_end, last.tag)]
    swapped = [index[0], index[2], index[1], *index[3:]]  # tags out of table-of-contents order
    for wrong, error in ((longer, BackupInvalidError), (swapped, BackupInvalidError)):
        with pg_database() as target, pytest.raises(error):
            _load_framed(target, path, wrong, tmp_path, [])
    leftover = subprocess.run(["pgrep", "-P", str(os.getpid()), "pg_restore"], capture_output=True, text=True)
    assert leftover.stdout == ""


class FenceStop(Exception):
    """What the job's fence raises from a progress report when the job lost its lock."""


def test_a_framed_load_stopped_by_its_progress_report_stops_every_loader(
        rich: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence stops a job from its progress report: the framed load reports from its own thread while the
    loaders work, so that stop must end them all, started or not, and raise the fence's own error."""
    monkeypatch.setattr(frames, "MIN_FRAME", 1)
    monkeypatch.setattr(pg_load, "PROGRESS_EVERY", 0.001)
    raw = _dump(rich, "-Fc", "-Z0")
    path = tmp_path / "b.dump.zst"
    index = _framed(raw, path, 1 << 20)

    def fence(_: int) -> None:
        raise FenceStop("lost the lock")

    work = tmp_path / "stopped"
    work.mkdir()
    fd = os.open(path, os.O_RDONLY)
    try:
        with pg_database() as target, pytest.raises(FenceStop):
            StreamingLoad(work, _env(target), ["-d", db(target).database], 1, "test load").run_framed(
                FrameReader(fd, index, "t"), fence)
    finally:
        os.close(fd)
    leftover = subprocess.run(["pgrep", "-P", str(os.getpid()), "pg_restore"], capture_output=True, text=True)
    assert leftover.stdout == ""
    began = [name for name in os.listdir(work) if name.startswith("frame-")]
    assert len(index) > 5 and len(began) <= 1  # the one loader may have begun its first frame, no other began
