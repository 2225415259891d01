"""PostgreSQL restore over a full copy of itself, side by side with plain pg_restore, in one run.

    python bench/bench_restore.py --scale 50 [--jobs N] [--repeat 3]

Builds the benchmark database of bench_backup.py (pgbench at SCALE plus 40,000 events per scale
unit: ~1.3 GB at scale 50) as `dbjobs_pgswap_src`, then measures:

  backup   raw `pg_dump -Fc -Z0 > file` (the anchor) vs our backup (`pg_dump -Fc -Z0` -> zstd -> SHA-256)
  layouts  what `pg_restore -jN` gets from each candidate archive layout, into an empty database,
           against one `pg_restore --single-transaction`: a custom archive pg_dump wrote to a file
           (data offsets known; not streamable), the same written to a pipe (no offsets: what a
           streamed backup holds) and a directory archive unpacked from `pg_dump -Ft` (streamable,
           but pg_dump stages each table in a temporary file); plus each dump's time
  restore  over a full copy of the database (`CREATE DATABASE ... TEMPLATE src`, reset before
           each run): `pg_restore --clean --if-exists --single-transaction` of the -Z0 dump (the
           anchor, which keeps no safety copy) vs our restore, which verifies the checksum, loads
           a shadow with N pg_restore sessions, each decompressing its own frames of the backup
           (dbjobs/frames.py, dbjobs/engines/pg_load.py), checks it against the manifest and
           swaps it in, keeping the old database as the pre-restore copy. Also our peak RSS and the swap window (how
           long the target refused connections).

Each figure is the median of --repeat runs of ours and of its anchor, interleaved (A B, B A, ...)
so that the load other processes put on the machine falls on both alike; every run is printed
with the load average (1 min) at its start.

Our backup and restore run in a child process reporting its own time and peak RSS (the tools
are separate processes, not counted). Every database it creates is named `dbjobs_pgswap_*` and
dropped at the end. Wall-clock timings on whatever else the machine is doing: ratios, taken in
the same run, are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_backup import PG, PG_URL, Row, best, build_pg, run, scratch_database, size_mib, sql  # noqa: E402

PREFIX = "dbjobs_pgswap_"


def child(spec: dict[str, object]) -> dict[str, float]:
    """One of our jobs in a fresh interpreter, reporting its own time and peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(spec: dict[str, object]) -> None:
    """The child side: our backup, or our restore (timed in-process: no interpreter start-up)."""
    from dbjobs.backup import run_backup
    from dbjobs.catalog import find_backup
    from dbjobs.dburl import parse_url
    from dbjobs.restore import run_restore
    from dbjobs.storage.local import LocalStorage
    from dbjobs.swap import Retention

    directory = Path(str(spec["dir"]))
    start = time.perf_counter()
    extra: dict[str, object] = {}
    if spec["job"] == "backup":
        result = run_backup(parse_url("bench", str(spec["url"])), directory)
        extra = {"size": result.backup.manifest.size, "id": result.backup.manifest.id,
                 "frames": len(result.backup.manifest.extra.get("frames", ())) + 1}  # type: ignore[arg-type]
    else:
        backup = find_backup([LocalStorage(directory)], str(spec["backup"]))
        done = run_restore(backup, parse_url("target", str(spec["url"])), directory, confirmed=True,
                           strategy=str(spec["strategy"]), jobs=int(spec["jobs"]), retention=Retention(keep=1))
        extra = done.to_dict()
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**extra, "seconds": seconds, "rss_mib": rss}))


def copy_of(source: str, name: str) -> None:
    """`name` as a fresh full copy of `source` (file-level copy, so resetting a target is cheap)."""
    sql("postgresql", "postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    sql("postgresql", "postgres", f'CREATE DATABASE "{name}" TEMPLATE "{source}"')


def drop_derived(name: str) -> None:
    """Drop the shadow / pre-restore copies our restore made of `name`."""
    out = subprocess.run(["psql", "-X", "-At", "-d", "postgres", "-c",
                          f"SELECT datname FROM pg_database WHERE starts_with(datname, '{name}__')"],
                         env={**os.environ, **PG}, capture_output=True, text=True, check=True)
    for derived in out.stdout.split():
        sql("postgresql", "postgres", f'DROP DATABASE IF EXISTS "{derived}" WITH (FORCE)')


def bench_layouts(src: str, work: Path, jobs: int, repeat: int, rows: list[Row], t_raw: float) -> None:
    """pg_restore -jN from each archive layout into an empty database, and each layout's dump time."""
    piped, tar_file, unpacked = work / "piped.dump", work / "dump.tar", work / "unpacked"
    t_piped = best(repeat, lambda: run(["sh", "-c", f'pg_dump -Fc -Z0 -d "{src}" | cat > "{piped}"'], env=PG))
    t_tar = best(repeat, lambda: run(["sh", "-c", f'pg_dump -Ft -d "{src}" | cat > "{tar_file}"'], env=PG))
    rows.append(Row("layout dump: custom -Z0 to a pipe", t_piped, t_raw, 1.1, "s"))
    rows.append(Row("layout dump: tar (directory archive) to a pipe", t_tar, t_raw, 1.1, "s"))
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir()
    run(["tar", "-xf", str(tar_file), "-C", str(unpacked)])
    with scratch_database("postgresql", PREFIX + "layout") as empty:
        def fresh() -> None:
            sql("postgresql", "postgres", f'DROP DATABASE "{empty}" WITH (FORCE)')
            sql("postgresql", "postgres", f'CREATE DATABASE "{empty}"')

        j = ["-j", str(jobs), "-d", empty]
        t_one = best(repeat, lambda: run(["pg_restore", "--single-transaction", "-d", empty,
                                          str(work / "raw.dump")], env=PG), fresh)
        t_offsets = best(repeat, lambda: run(["pg_restore", *j, str(work / "raw.dump")], env=PG), fresh)
        t_no_offsets = best(repeat, lambda: run(["pg_restore", *j, str(piped)], env=PG), fresh)
        t_dir = best(repeat, lambda: run(["pg_restore", "-Fd", *j, str(unpacked)], env=PG), fresh)
    for what, seconds in ((f"layout load -j{jobs}: custom, offsets (pg_dump -f)", t_offsets),
                          (f"layout load -j{jobs}: custom, no offsets (pipe)", t_no_offsets),
                          (f"layout load -j{jobs}: directory from pg_dump -Ft", t_dir)):
        rows.append(Row(what, seconds, t_one, 1.0, "s"))
    shutil.rmtree(unpacked, ignore_errors=True)
    for f in (piped, tar_file):
        f.unlink(missing_ok=True)


def interleaved(rounds: int, runs: dict[str, tuple[Callable[[], None], Callable[[], dict[str, object]]]],
                ) -> dict[str, list[dict[str, object]]]:
    """Each of `runs` (name: untimed reset, timed run returning its result with `seconds`) once per round,
    the order rotating every round; each result also holds the load average at its start."""
    names = list(runs)
    results: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            reset, action = runs[name]
            reset()
            load = os.getloadavg()[0]
            result = {**action(), "load": load}
            results[name].append(result)
            print(f"  round {r + 1} {name:<8} {float(result['seconds']):7.2f} s  load {load:.1f}", file=sys.stderr)
    return results


def timed(action: Callable[[], None]) -> Callable[[], dict[str, object]]:
    """`action` as a run of `interleaved`: its wall time."""
    def run_it() -> dict[str, object]:
        start = time.perf_counter()
        action()
        return {"seconds": time.perf_counter() - start}
    return run_it


def median_of(results: list[dict[str, object]], key: str = "seconds") -> float:
    """The median of `key` over runs."""
    return statistics.median(float(r[key]) for r in results)  # type: ignore[arg-type]


def loads(*results: list[dict[str, object]]) -> str:
    """The range of load averages the runs started at."""
    values = [float(r["load"]) for runs in results for r in runs]  # type: ignore[arg-type]
    return f"{min(values):.1f}-{max(values):.1f}"


def main() -> None:
    """Parse options, build the database, run every figure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50: ~1.3 GB with events)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="pg_restore jobs (default: cores)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per figure, median kept (default 3)")
    parser.add_argument("--skip-layouts", action="store_true", help="skip the archive layout comparison")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dbjobs-bench-restore-") as tmp, \
            scratch_database("postgresql", PREFIX + f"src_{args.scale}") as src:
        work = Path(tmp)
        print(f"building the scale-{args.scale} database ...", file=sys.stderr)
        build_pg(src, args.scale)
        raw, ours_dir = work / "raw.dump", work / "ours"
        print("backup ...", file=sys.stderr)
        backups = interleaved(args.repeat, {
            "pg_dump": (lambda: None, timed(lambda: run(["pg_dump", "-Fc", "-Z0", "-d", src], stdout=raw, env=PG))),
            "dbjobs": (lambda: shutil.rmtree(ours_dir, ignore_errors=True),
                       lambda: child({"job": "backup", "url": PG_URL.format(src), "dir": str(ours_dir)})),
        })
        t_raw = median_of(backups["pg_dump"])
        ours = backups["dbjobs"][-1]  # the backup left in ours_dir
        rows.append(Row("backup time vs pg_dump -Fc -Z0 > file", median_of(backups["dbjobs"]), t_raw, 1.1, "s"))
        rows.append(Row("backup peak RSS", max(float(b["rss_mib"]) for b in backups["dbjobs"]), 150, 1.0, "MiB"))
        load_notes = [f"backup runs started at load {loads(*backups.values())}"]
        print(f"  raw dump {size_mib(raw):.0f} MiB, our backup {ours['size'] / (1 << 20):.0f} MiB in "
              f"{ours['frames']} zstd frames", file=sys.stderr)
        if not args.skip_layouts:
            print("archive layouts ...", file=sys.stderr)
            bench_layouts(src, work, args.jobs, args.repeat, rows, t_raw)
        target = PREFIX + f"target_{args.scale}"

        def reset() -> None:
            """A fresh full copy, and every write of making it on disk: the copy's writeback must not land on
            the run that follows (it made runs of either side swing by a third)."""
            drop_derived(target)
            copy_of(src, target)
            sql("postgresql", "postgres", "CHECKPOINT")
            os.sync()
            time.sleep(2)

        try:
            print("restore over a full copy ...", file=sys.stderr)
            restores = interleaved(args.repeat, {
                "anchor": (reset, timed(lambda: run(["pg_restore", "--clean", "--if-exists", "--single-transaction",
                                                     "-d", target, str(raw)], env=PG))),
                "dbjobs": (reset, lambda: child({"job": "restore", "url": PG_URL.format(target), "dir": str(ours_dir),
                                                 "backup": ours["id"], "strategy": "swap", "jobs": args.jobs})),
            })
            t_anchor = median_of(restores["anchor"])
            rows.append(Row("restore over full copy vs pg_restore --clean -1", median_of(restores["dbjobs"]),
                            t_anchor, 0.8, "s"))
            rows.append(Row("restore peak RSS", max(float(r["rss_mib"]) for r in restores["dbjobs"]), 150, 1.0, "MiB"))
            rows.append(Row("swap window (target unavailable)", median_of(restores["dbjobs"], "swap_seconds") * 1000,
                            t_anchor * 1000, float("inf"), "ms"))
            load_notes.append(f"restore runs started at load {loads(*restores.values())}")
        finally:
            drop_derived(target)
            sql("postgresql", "postgres", f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    print(f"\nscale {args.scale}, {args.jobs} restore jobs, medians of {args.repeat} interleaved runs; "
          + "; ".join(load_notes))
    print(f"{'figure':<44} {'ours':>10} {'anchor':>10} {'':<4} {'ratio':>7}  target")
    for row in rows:
        print(row.render())


if __name__ == "__main__":
    main()
