"""Benchmarks for issue 5, each printed beside its target or anchor from the same run.

- cleanup over 10,000 backups in a directory (target <= 1 s)
- listing 10,000 backups (target <= 0.5 s)
- uploading a 100 MB backup to the Supabase test server (its own process, as a real server would be,
  adding 20 ms to every request) through the resumable path, against one plain HTTP PUT of the same
  bytes to the same server (target >= 80% of its throughput; the real server measured 1.65x the
  plain time with 6 MiB chunks, shown here too)

Backups are tiny but valid (manifest + file); no real dumps. Run: python bench/bench_ops.py [upload]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbjobs.catalog import list_backups
from dbjobs.jobs import run_job
from dbjobs.progress import no_progress
from dbjobs.settings import load_settings
from dbjobs.storage import LocalStorage, SupabaseStorage
from tests.support.backups import fake_manifest
from tests.support.fake_supabase import FakeSupabase

ROOT = Path(__file__).resolve().parent.parent
COUNT = 10_000
MB = 1 << 20
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]  # as SupabaseStorage's own client: no Nagle stalls


def populate(directory: Path, count: int) -> None:
    """`count` backups of 4 databases, one every 15 minutes going back ~104 days."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    for i in range(count):
        m = fake_manifest(f"db{i % 4}", now - timedelta(minutes=15 * i), b"dump", f"{i:06x}")
        (directory / m.file).write_bytes(b"dump")
        (directory / m.manifest_name).write_text(m.to_json())


def timed(fn) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_listing_and_cleanup(root: Path) -> None:
    """Listing and cleanup of 10,000 tiny valid backups, against their targets."""
    directory = root / "backups"
    populate(directory, COUNT)
    settings = load_settings({"DBJOBS_BACKUP_DIR": str(directory)}, dotenv=None)
    listing = [timed(lambda: list_backups([LocalStorage(directory)])) for _ in range(5)]
    job = [timed(lambda: run_job("dbjobs.list_backups", settings, {})) for _ in range(3)]
    found = list_backups([LocalStorage(directory)])[0]
    print(f"listing {len(found)} backups: median {statistics.median(listing):.3f} s "
          f"(list-backups job {statistics.median(job):.3f} s)   target <= 0.500 s")
    dry = timed(lambda: run_job("dbjobs.cleanup", settings, {"keep_days": 30, "min_keep": 5, "dry_run": True}))
    result: dict = {}
    real = timed(lambda: result.update(run_job("dbjobs.cleanup", settings, {"keep_days": 30, "min_keep": 5})))
    print(f"cleanup over {COUNT} backups: {real:.3f} s, deleted {len(result['deleted'])}, kept {len(result['kept'])} "
          f"(dry run {dry:.3f} s)   target <= 1.000 s")


def bench_upload(root: Path, rounds: int = 15, latency: float = 0.02) -> None:
    """A whole `put` of a 100 MB backup (dump, object check, manifest) against one plain PUT of the same bytes
    to the same server, which adds `latency` to every request as a real network and server do. Interleaved:
    each round times the anchor, the default chunks and the 6 MiB chunks of earlier releases."""
    payload = os.urandom(100 * MB)
    source = root / "src"
    source.mkdir()
    m = fake_manifest("big", datetime.now(UTC), payload, "abcdef")
    dump = source / m.file
    dump.write_bytes(payload)
    server = subprocess.Popen([sys.executable, "-m", "tests.support.fake_supabase", str(root / "supabase"),
                               str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        stores = {"default": SupabaseStorage(url, FakeSupabase.KEY, "backups"),
                  "6 MiB": SupabaseStorage(url, FakeSupabase.KEY, "backups", chunk_size=6 * MB)}
        times: dict[str, list[float]] = {"plain": [], **{name: [] for name in stores}}
        with httpx.Client(timeout=120, transport=httpx.HTTPTransport(socket_options=NODELAY)) as http:
            def plain() -> None:
                with open(dump, "rb") as f:
                    http.put(f"{url}/plain/anchor", content=f, headers={"Content-Length": str(len(payload))})

            runs = {"plain": plain, **{name: partial(s.put, dump, m, no_progress) for name, s in stores.items()}}
            for i in range(rounds):  # the order turns every round, so no variant always runs on a warm cache
                order = list(runs)[i % len(runs):] + list(runs)[:i % len(runs)]
                for name in order:
                    times[name].append(timed(runs[name]))
    finally:
        server.communicate("")
    assert (root / "supabase" / "backups" / m.file).stat().st_size == len(payload)
    size = len(payload) / MB
    plain = times["plain"]
    print(f"upload 100 MB with {latency * 1000:.0f} ms a request, {rounds} interleaved rounds: one plain PUT median "
          f"{size / statistics.median(plain):.0f} MB/s")
    for name, store in stores.items():
        paired = statistics.median(p / t for p, t in zip(plain, times[name], strict=True))
        print(f"  put, {name} chunks ({store.chunk_size // MB} MiB): median {size / statistics.median(times[name]):.0f}"
              f" MB/s; median of per-round ratios (plain time / put time) {100 * paired:.0f}%   target >= 80%")


def main() -> None:
    """Run every benchmark in a scratch directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dbjobs-bench-") as tmp:
        if sys.argv[1:] != ["upload"]:
            bench_listing_and_cleanup(Path(tmp))
        bench_upload(Path(tmp))


if __name__ == "__main__":
    main()
