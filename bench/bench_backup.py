"""Backup and restore speed, size and memory, side by side with the engines' own tools, in one run.

    python bench/bench_backup.py --scale 50 [--double] [--repeat 3]

Builds a PostgreSQL database with `pgbench -i -s SCALE` plus an `events` table (uuid,
timestamptz, jsonb, md5 text; 40,000 rows per scale unit, 2M at scale 50), a MariaDB and an
SQLite database with the same shape, then times, best of --repeat:

  PostgreSQL  raw `pg_dump -Fc -Z0 > file`, `pg_dump -Fc` (gzip), our backup; our restore into a
              fresh database vs `pg_restore --single-transaction -d` of the -Z0 dump
  MariaDB     raw `mariadb-dump --single-transaction > file` vs our backup
  SQLite      `sqlite3 src ".backup dst"` vs our backup

Our backup and restore run in a child process that reports its own peak RSS (the pipeline's
memory; the dump tools are separate processes and not counted). `--double` repeats the
PostgreSQL backup at 2 x SCALE to show memory stays flat. Every database it creates is dropped
at the end. Timings are wall-clock on whatever else the machine is doing: run it on a quiet box.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres", "PGOPTIONS": "-c client_min_messages=warning"}
PG_URL = "postgresql://postgres@127.0.0.1:5432/{}"
MYSQL = ["--host=127.0.0.1", "--port=3306", "--user=root"]
MYSQL_URL = "mysql://root@127.0.0.1:3306/{}"
EVENTS_PER_SCALE = 40_000
ACCOUNTS_PER_SCALE = 100_000
MIB = 1 << 20


@dataclass
class Row:
    """One line of the report: our figure, the anchor's, and the target ratio."""

    what: str
    ours: float
    anchor: float
    target: float
    unit: str

    @property
    def ratio(self) -> float:
        """Ours divided by the anchor (lower is better for every figure here)."""
        return self.ours / self.anchor if self.anchor else float("inf")

    def render(self) -> str:
        """A table line with a verdict against the target."""
        verdict = "ok" if self.ratio <= self.target else "MISSED"
        return (f"{self.what:<44} {self.ours:>10.2f} {self.anchor:>10.2f} {self.unit:<4} "
                f"{self.ratio:>6.2f}x  <= {self.target:<5} {verdict}")


def run(argv: list[str], *, stdout: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a tool, its stdout into `stdout` if given; fail loudly (this is a benchmark, not the product)."""
    full_env = {**os.environ, **(env or {})}
    with open(stdout or os.devnull, "wb") as f:
        done = subprocess.run(argv, env=full_env, stdout=f, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}")


def best(repeat: int, action: Callable[[], None], before: Callable[[], None] = lambda: None) -> float:
    """The fastest of `repeat` timed runs of `action` (each after an untimed `before`)."""
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def child(spec: dict[str, object]) -> dict[str, float]:
    """Run one of our jobs in a fresh interpreter; it reports its own time and peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_child(repeat: int, spec: dict[str, object], before: Callable[[], None] = lambda: None) -> dict[str, float]:
    """The fastest of `repeat` child runs (peak RSS is the largest seen)."""
    runs = []
    for _ in range(repeat):
        before()
        runs.append(child(spec))
    fastest = min(runs, key=lambda r: r["seconds"])
    return {**fastest, "rss_mib": max(r["rss_mib"] for r in runs)}


def our_backup(opts: argparse.Namespace, url: str, directory: Path) -> dict[str, float]:
    """Our backup of `url` into an emptied `directory`, best of --repeat."""
    spec = {"job": "backup", "level": opts.level, "alias": "bench", "url": url, "dir": str(directory)}
    return best_child(opts.repeat, spec, fresh_dir(directory))


def child_main(spec: dict[str, object]) -> None:
    """The child side: our backup or restore, timed in-process (no interpreter start-up in the figure)."""
    from dbjobs.backup import run_backup
    from dbjobs.catalog import find_backup
    from dbjobs.dburl import parse_url
    from dbjobs.pipeline import DEFAULT_LEVEL
    from dbjobs.restore import run_restore
    from dbjobs.storage.local import LocalStorage

    db = parse_url(str(spec["alias"]), str(spec["url"]))
    start = time.perf_counter()
    if spec["job"] == "backup":
        result = run_backup(db, Path(str(spec["dir"])), level=int(spec.get("level") or DEFAULT_LEVEL))
        size = result.backup.manifest.size
    else:
        backup = find_backup([LocalStorage(Path(str(spec["dir"])))], str(spec["backup"]))
        run_restore(backup, db, Path(str(spec["dir"])) / "safety", confirmed=True)
        size = backup.manifest.size
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss, "size": size}))


def sql(engine: str, database: str, statement: str) -> None:
    """One statement through the engine's command-line client."""
    if engine == "postgresql":
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", statement], env=PG)
    else:
        run(["mariadb", *MYSQL, "--database", database, "-e", statement])


@contextmanager
def scratch_database(engine: str, name: str) -> Iterator[str]:
    """A PostgreSQL or MariaDB database that is dropped however the benchmark ends."""
    if engine == "postgresql":
        admin, drop, create = "postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    else:
        admin, drop = "mysql", f"DROP DATABASE IF EXISTS `{name}`"
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    sql(engine, admin, drop)
    sql(engine, admin, create)
    try:
        yield name
    finally:
        sql(engine, admin, drop)


def build_pg(name: str, scale: int) -> None:
    """pgbench's tables at `scale` plus the events table."""
    run(["pgbench", "-i", "-q", "-s", str(scale), name], env=PG)
    sql("postgresql", name, "CREATE TABLE events (id uuid PRIMARY KEY, at timestamptz NOT NULL, payload jsonb, "
        "digest text)")
    sql("postgresql", name, "INSERT INTO events SELECT gen_random_uuid(), now() - i * interval '1 second', "
        "jsonb_build_object('i', i, 'name', md5(i::text), 'tags', jsonb_build_array('a', 'b', i % 7)), "
        f"md5(i::text) FROM generate_series(1, {scale * EVENTS_PER_SCALE}) i")
    sql("postgresql", name, "VACUUM ANALYZE")


def build_mysql(name: str, scale: int) -> None:
    """pgbench-like accounts plus the events table, generated server-side from MariaDB's sequence engine."""
    sql("mysql", name, "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT NOT NULL, abalance INT NOT NULL, "
        "filler CHAR(84)) ENGINE=InnoDB")
    sql("mysql", name, f"INSERT INTO accounts SELECT seq, 1 + seq DIV {ACCOUNTS_PER_SCALE}, 0, '' "
        f"FROM seq_1_to_{scale * ACCOUNTS_PER_SCALE}")
    sql("mysql", name, "CREATE TABLE events (id CHAR(36) PRIMARY KEY, at DATETIME(6) NOT NULL, payload JSON, "
        "digest CHAR(32)) ENGINE=InnoDB")
    sql("mysql", name, "INSERT INTO events SELECT UUID(), NOW(6) - INTERVAL seq SECOND, "
        "JSON_OBJECT('i', seq, 'name', MD5(seq), 'tags', JSON_ARRAY('a', 'b', seq % 7)), MD5(seq) "
        f"FROM seq_1_to_{scale * EVENTS_PER_SCALE}")


def build_sqlite(path: Path, scale: int) -> None:
    """The same two tables in an SQLite file."""
    with sqlite3.connect(path) as conn:
        conn.executescript(f"""
            CREATE TABLE accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL,
                                   filler TEXT);
            CREATE TABLE events (id TEXT PRIMARY KEY, at TEXT NOT NULL, payload TEXT, digest TEXT);
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {scale * ACCOUNTS_PER_SCALE})
            INSERT INTO accounts SELECT i, 1 + i / {ACCOUNTS_PER_SCALE}, 0, printf('%84s', '') FROM s;
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {scale * EVENTS_PER_SCALE})
            INSERT INTO events SELECT lower(hex(randomblob(16))), datetime('now', '-' || i || ' seconds'),
                json_object('i', i, 'name', hex(randomblob(16)), 'tags', json_array('a', 'b', i % 7)),
                lower(hex(randomblob(16))) FROM s;
        """)
    conn.close()


def fresh_dir(path: Path) -> Callable[[], None]:
    """A `before` hook that empties a directory so each run writes into a clean one."""
    def reset() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    return reset


def size_mib(path: Path) -> float:
    """A file's size in MiB."""
    return path.stat().st_size / MIB


def recreate_pg(name: str) -> Callable[[], None]:
    """A `before` hook that gives each restore run an empty database."""
    def reset() -> None:
        sql("postgresql", "postgres", f'DROP DATABASE "{name}" WITH (FORCE)')
        sql("postgresql", "postgres", f'CREATE DATABASE "{name}"')
    return reset


def bench_postgres(scale: int, opts: argparse.Namespace, work: Path, rows: list[Row], rss: dict[int, float]) -> None:
    """pg_dump/pg_restore anchors and our backup/restore on the same database."""
    with scratch_database("postgresql", f"dbjobs_bench_pg_{scale}") as name:
        build_pg(name, scale)
        raw, gz, ours_dir = work / "pg.Z0.dump", work / "pg.gz.dump", work / f"pg{scale}"
        t_raw = best(opts.repeat, lambda: run(["pg_dump", "-Fc", "-Z0", "-d", name], stdout=raw, env=PG))
        t_gz = best(opts.repeat, lambda: run(["pg_dump", "-Fc", "-d", name], stdout=gz, env=PG))
        ours = our_backup(opts, PG_URL.format(name), ours_dir)
        rss[scale] = ours["rss_mib"]
        rows.append(Row(f"pg backup time (scale {scale}) vs pg_dump -Fc -Z0", ours["seconds"], t_raw, 1.25, "s"))
        rows.append(Row(f"pg backup time (scale {scale}) vs pg_dump -Fc", ours["seconds"], t_gz, float("inf"), "s"))
        rows.append(Row(f"pg backup size (scale {scale}) vs pg_dump -Fc", ours["size"] / MIB, size_mib(gz), 1.0,
                        "MiB"))
        print(f"  pg_dump -Fc -Z0 output {size_mib(raw):.1f} MiB; peak RSS of our backup {ours['rss_mib']:.1f} MiB",
              file=sys.stderr)
        backup_id = next(ours_dir.glob("*.manifest.json")).name.removesuffix(".manifest.json")
        with scratch_database("postgresql", f"dbjobs_bench_pg_{scale}_ours") as target, \
                scratch_database("postgresql", f"dbjobs_bench_pg_{scale}_anchor") as anchor:
            t_anchor = best(opts.repeat, lambda: run(["pg_restore", "--single-transaction", "-d", anchor, str(raw)],
                                                env=PG), recreate_pg(anchor))
            restored = best_child(opts.repeat, {"job": "restore", "alias": "target", "url": PG_URL.format(target),
                                           "dir": str(ours_dir), "backup": backup_id}, recreate_pg(target))
            rows.append(Row(f"pg restore time (scale {scale}) vs pg_restore -1", restored["seconds"], t_anchor,
                            1.15, "s"))
            rows.append(Row(f"pg restore peak RSS (scale {scale})", restored["rss_mib"], 150, 1.0, "MiB"))


def bench_mysql(scale: int, opts: argparse.Namespace, work: Path, rows: list[Row]) -> None:
    """mariadb-dump anchor and our backup on the same database."""
    with scratch_database("mysql", f"dbjobs_bench_my_{scale}") as name:
        build_mysql(name, scale)
        raw, ours_dir = work / "my.sql", work / "my"
        t_raw = best(opts.repeat, lambda: run(["mariadb-dump", *MYSQL, "--single-transaction", name], stdout=raw))
        ours = our_backup(opts, MYSQL_URL.format(name), ours_dir)
        rows.append(Row(f"mariadb backup time (scale {scale}) vs mariadb-dump", ours["seconds"], t_raw, 1.3, "s"))
        print(f"  mariadb-dump output {size_mib(raw):.1f} MiB, ours {ours['size'] / MIB:.1f} MiB", file=sys.stderr)


def bench_sqlite(scale: int, opts: argparse.Namespace, work: Path, rows: list[Row]) -> None:
    """sqlite3 .backup anchor and our backup on the same file."""
    src, dst, ours_dir = work / "src.sqlite3", work / "dst.sqlite3", work / "lite"
    build_sqlite(src, scale)
    t_raw = best(opts.repeat, lambda: run(["sqlite3", str(src), f".backup {dst}"]), lambda: dst.unlink(missing_ok=True))
    ours = our_backup(opts, f"sqlite:///{src}", ours_dir)
    rows.append(Row(f"sqlite backup time (scale {scale}) vs sqlite3 .backup", ours["seconds"], t_raw, 1.5, "s"))
    print(f"  sqlite file {size_mib(src):.1f} MiB, ours {ours['size'] / MIB:.1f} MiB", file=sys.stderr)


def main() -> None:
    """Parse options, run every engine's benchmark, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50: ~750 MiB + 2M events)")
    parser.add_argument("--double", action="store_true", help="also back up PostgreSQL at 2 x SCALE (flat RSS)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure, best kept (default 1)")
    parser.add_argument("--level", type=int, help="zstd level for our backups (default: the pipeline's default)")
    parser.add_argument("--only", choices=["postgresql", "mysql", "sqlite"], action="append",
                        help="run only these engines (repeatable; default all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    engines = args.only or ["postgresql", "mysql", "sqlite"]
    rows: list[Row] = []
    rss: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="dbjobs-bench-") as tmp:
        work = Path(tmp)
        if "postgresql" in engines:
            for scale in [args.scale, 2 * args.scale] if args.double else [args.scale]:
                print(f"PostgreSQL at scale {scale} ...", file=sys.stderr)
                bench_postgres(scale, args, work, rows, rss)
                rows.append(Row(f"pg backup peak RSS (scale {scale})", rss[scale], 150, 1.0, "MiB"))
        if "mysql" in engines:
            print(f"MariaDB at scale {args.scale} ...", file=sys.stderr)
            bench_mysql(args.scale, args, work, rows)
        if "sqlite" in engines:
            print(f"SQLite at scale {args.scale} ...", file=sys.stderr)
            bench_sqlite(args.scale, args, work, rows)
    print(f"\n{'figure':<44} {'ours':>10} {'anchor':>10} {'':<4} {'ratio':>7}  target")
    for row in rows:
        print(row.render())
    if len(rss) == 2:
        low, high = sorted(rss.items())
        flat = high[1] <= low[1] * 1.1 + 5
        print(f"pg backup peak RSS {low[1]:.1f} MiB at scale {low[0]}, {high[1]:.1f} MiB at scale {high[0]}: "
              f"{'flat' if flat else 'GROWS with the database'}")


if __name__ == "__main__":
    main()
