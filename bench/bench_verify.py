"""Benchmarks of issue 12, each printed beside its anchor from the same run.

- `verify` of one large backup (incompressible bytes, as a compressed dump is) against `sha256sum` of the
  same file: re-hashing should cost what hashing costs (target <= 1.2x)
- `list-backups --limit 10` over 10,000 backups with remembered checksum states against the same listing
  without them: the checksum column reads only the rows shown (target <= 1.1x)
- a metrics scrape over 10,000 backups against listing them: one catalog pass (target <= 1.5x)

Run: python bench/bench_verify.py [--mib 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest

from dbjobs.catalog import list_backups
from dbjobs.jobs import run_job
from dbjobs.metrics import registry
from dbjobs.settings import load_settings
from dbjobs.storage import LocalStorage
from dbjobs.verify import verify_backups
from tests.support.backups import make_backup

MIB = 1 << 20


def best(run: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by the rest of a busy machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def row(what: str, ours: float, anchor_name: str, anchor: float, target: float) -> None:
    ratio = ours / anchor if anchor else float("inf")
    print(f"{what:<44} {ours:8.3f} s   {anchor_name:<28} {anchor:8.3f} s   {ratio:5.2f}x  (target <= {target}x)")


def bench_rehash(root: Path, mib: int) -> None:
    directory = root / "big"
    payload = os.urandom(MIB)
    manifest = make_backup(directory, "app", datetime.now(UTC), payload)
    with open(directory / manifest.file, "ab") as f:  # grow it to `mib` MiB, then describe it truthfully
        for _ in range(mib - 1):
            f.write(payload)
    digest = hashlib.sha256()
    with open(directory / manifest.file, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    fixed = dataclasses.replace(manifest, size=mib * MIB, sha256=digest.hexdigest())
    (directory / fixed.manifest_name).write_text(fixed.to_json())
    storages = [LocalStorage(directory)]
    ours = best(lambda: verify_backups(storages, directory))
    anchor = best(lambda: subprocess.run(["sha256sum", str(directory / fixed.file)], check=True,
                                         capture_output=True))
    row(f"verify of a {mib} MiB backup", ours, "sha256sum", anchor, 1.2)


def bench_listing(root: Path, count: int = 10_000) -> None:
    directory = root / "many"
    now = datetime.now(UTC)
    made = [make_backup(directory, f"db{i % 4}", now - timedelta(minutes=i)) for i in range(count)]
    settings = load_settings({"DBJOBS_BACKUP_DIR": str(directory)}, dotenv=None)
    verify_backups([LocalStorage(directory)], directory)  # every backup now has a remembered checksum state
    plain = best(lambda: list_backups([LocalStorage(directory)]), repeat=5)
    listed = best(lambda: run_job("dbjobs.list_backups", settings, {"limit": 10}), repeat=5)
    row(f"list-backups --limit 10 of {count} (checked)", listed, "catalog listing alone", plain, 1.1)
    aliases = sorted({m.database for m in made})
    scrape = best(lambda: generate_latest(registry([LocalStorage(directory)], directory, aliases)), repeat=5)
    row(f"metrics scrape over {count} backups", scrape, "catalog listing alone", plain, 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512, help="size of the backup verify re-hashes (default 512)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dbjobs_ops_bench_") as tmp:
        bench_rehash(Path(tmp), args.mib)
        bench_listing(Path(tmp))


if __name__ == "__main__":
    main()
