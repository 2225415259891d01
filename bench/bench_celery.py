"""Celery overhead of dbjobs, beside its anchors, measured in one run.

(a) `python cli.py backup --wait` of a small SQLite database through Redis and an idle worker,
    wall time including the CLI's start, beside `python cli.py --help` and a bare Celery round
    trip of a no-op task (targets: backup --wait <= 1.0 s, --help <= 0.5 s).
(b) 200 small backups (over 4 aliases) submitted at once to one worker with 2 processes: all
    complete, none lost or duplicated; jobs/s and per-job overhead beside 200 no-op tasks.

Starts its own redis-server on a free port (never touches the one on 6379). Run: `python bench/bench_celery.py`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.celery_support import Proc, celery_env, flushed_redis, make_sqlite, manifests  # noqa: E402

BROKER_DB = 14
ALIASES = ["default", "a1", "a2", "a3"]
JOBS = 200


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of one process, start to exit."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def median_of(n: int, run) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of `n` runs."""
    return statistics.median(run() for _ in range(n))


def worker(env: dict[str, str], base: Path, concurrency: int) -> Proc:
    """A prefork worker that also knows the bench's no-op task."""
    proc = Proc([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool=prefork", "-c",
                 str(concurrency), "--loglevel=INFO", "--without-mingle", "--without-gossip",
                 "--include", "bench.noop_task", "-n", f"bench{concurrency}@%h"], env, base / "worker.log", base)
    time.sleep(0.5)
    from workers.app import app

    app.send_task("bench.noop").get(timeout=60)  # ready, and its process has imported everything
    return proc


def burst(app, name: str, kwargs_list: list[dict]) -> tuple[float, list]:  # type: ignore[no-untyped-def]
    """Submit all at once, wait for all; seconds from the first submit to the last result."""
    started = time.perf_counter()
    results = [app.send_task(name, kwargs=kw) for kw in kwargs_list]
    values = [r.get(timeout=600) for r in results]
    return time.perf_counter() - started, list(zip(results, values, strict=True))


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="dbjobs-bench-"))
    broker = flushed_redis(BROKER_DB)
    for alias in ALIASES:
        make_sqlite(base / f"{alias}.sqlite3", rows=200)
    env = celery_env(base, broker, DBJOBS_DATABASE_URL=f"sqlite:///{base / 'default.sqlite3'}",
                     DBJOBS_DATABASES=";".join(f"{a}=sqlite:///{base / a}.sqlite3" for a in ALIASES[1:]))
    os.environ.update(env)
    from workers.app import app

    python, cli = sys.executable, str(ROOT / "cli.py")
    help_s = median_of(5, lambda: timed([python, cli, "--help"], env, base))

    w = worker(env, base, 1)
    try:
        noop_s = median_of(20, lambda: timed_call(lambda: app.send_task("bench.noop").get(timeout=30)))
        backup_s = median_of(5, lambda: timed([python, cli, "backup", "--wait"], env, base))
    finally:
        w.stop()

    w = worker(env, base, 2)
    try:
        noop_burst, _ = burst(app, "bench.noop", [{}] * JOBS)
        kwargs = [{"database": ALIASES[i % len(ALIASES)], "output_dir": str(base / "burst")} for i in range(JOBS)]
        backup_burst, done = burst(app, "dbjobs.backup", kwargs)
    finally:
        w.stop()
    request_ids = [m["extra"]["request_id"] for m in manifests(base / "burst")]
    complete = {r.id for r, _ in done} == set(request_ids) and len({v["id"] for _, v in done}) == JOBS
    duplicated = len(request_ids) - len(set(request_ids))
    library_s = in_process_backup_seconds(base)
    runtimes = task_runtimes(w.text())
    noop_run, backup_run = statistics.mean(runtimes["bench.noop"]), statistics.mean(runtimes["dbjobs.backup"])
    noop_dispatch = noop_burst * 2 / JOBS - noop_run
    backup_dispatch = backup_burst * 2 / JOBS - backup_run

    print(json.dumps({"backup_wait_s": backup_s, "help_s": help_s, "noop_roundtrip_s": noop_s}))
    print("(a) one request, median wall time (same run)")
    print(f"    python cli.py backup --wait  {backup_s:7.3f} s   target <= 1.0 s")
    print(f"    python cli.py --help         {help_s:7.3f} s   target <= 0.5 s")
    print(f"    Celery no-op round trip      {noop_s * 1000:7.1f} ms  (in-process, anchor)")
    print(f"(b) {JOBS} jobs at once, worker -c 2")
    print(f"    no-op tasks      {noop_burst:6.2f} s  {JOBS / noop_burst:7.1f} jobs/s")
    print(f"    small backups    {backup_burst:6.2f} s  {JOBS / backup_burst:7.1f} jobs/s")
    print(f"    per job and process, dispatch (wall minus the task's own runtime): "
          f"backup {backup_dispatch * 1000:.1f} ms vs no-op {noop_dispatch * 1000:.1f} ms")
    print(f"    backup task runtime {backup_run * 1000:.1f} ms in the worker (lock, settings, progress, job) vs "
          f"{library_s * 1000:.1f} ms for the job alone in-process, sequential")
    print(f"    all {JOBS} complete, each exactly once: {complete}; duplicated: {duplicated}; "
          f"backups written: {len(request_ids)}")
    flushed_redis(BROKER_DB)
    subprocess.run(["rm", "-rf", str(base)], check=False)


def task_runtimes(log: str) -> dict[str, list[float]]:
    """Each task's own runtime, as the worker logs it (`Task NAME[ID] succeeded in Xs`)."""
    found: dict[str, list[float]] = {}
    for name, seconds in re.findall(r"Task (\S+)\[[^\]]+\] succeeded in ([\d.]+)s", log):
        found.setdefault(name, []).append(float(seconds))
    return found


def in_process_backup_seconds(base: Path) -> float:
    """Median time of the same small backup through `run_job` in this process: the job without Celery."""
    from dbjobs.jobs import run_job
    from dbjobs.settings import load_settings

    settings = load_settings(dotenv=None)
    out = str(base / "in-process")
    return median_of(20, lambda: timed_call(lambda: run_job("dbjobs.backup", settings, {"output_dir": out})))


def timed_call(fn) -> float:  # type: ignore[no-untyped-def]
    """Wall time of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
