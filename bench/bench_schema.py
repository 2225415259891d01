"""Benchmark: our detect (snapshot + diff + render) against Alembic's `compare_metadata`, same run.

Builds a schema of N tables (12 columns each, an FK chain, indexes, uniques, checks) in a
scratch database per engine, makes the models differ from it in a few tables, times both
tools, prints a side-by-side table, and drops its databases. "Ours" is the whole
detect-migrations job against the models: snapshot, models, diff, lint, render forward and
reverse, write the migration and the snapshot history.

    python bench/bench_schema.py [--tables 1000] [--engines postgresql,mysql,sqlite] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dbjobs.dburl import DatabaseURL, parse_url
from dbjobs.schema.detect import detect_migrations
from dbjobs.schema.diff import diff
from dbjobs.schema.models import snapshot_of_metadata
from dbjobs.schema.snapshot import take_snapshot

MODELS = sa.MetaData()
ADMIN = {
    "postgresql": os.environ.get("DBJOBS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "mysql": os.environ.get("DBJOBS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql"),
}


def build_metadata(tables: int, changed: int = 0) -> sa.MetaData:
    """N tables of 12 columns chained by FKs; the first `changed` tables get an extra column."""
    md = sa.MetaData()
    for i in range(tables):
        extra = [sa.Column("added", sa.String(30))] if i < changed else []
        fk = [sa.ForeignKey(f"t{i - 1:04d}.id", ondelete="CASCADE")] if i else []
        sa.Table(
            f"t{i:04d}", md,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("prev_id", sa.Integer, *fk, nullable=True),
            sa.Column("code", sa.String(40), nullable=False),
            sa.Column("name", sa.String(100), nullable=False, server_default="x"),
            sa.Column("qty", sa.Integer, nullable=False, server_default="0"),
            sa.Column("price", sa.Numeric(10, 2)),
            sa.Column("active", sa.Boolean, server_default=sa.true()),
            sa.Column("created", sa.DateTime, server_default=sa.func.current_timestamp()),
            sa.Column("note", sa.Text),
            sa.Column("ratio", sa.Float),
            sa.Column("kind", sa.String(20)),
            sa.Column("ref", sa.BigInteger),
            *extra,
            sa.UniqueConstraint("code", name=f"uq_t{i:04d}_code"),
            sa.Index(f"ix_t{i:04d}_name", "name"),
            sa.CheckConstraint("qty >= 0", name=f"ck_t{i:04d}_qty"),
        )
    return md


@contextmanager
def scratch(engine: str) -> Iterator[DatabaseURL]:
    """A fresh database (or SQLite file), dropped afterwards."""
    name = f"dbjobs_bench_{uuid.uuid4().hex[:8]}"
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield parse_url("bench", f"sqlite:///{directory}/bench.sqlite3")
        return
    admin = parse_url("admin", ADMIN[engine])
    admin_engine = admin.create_engine(isolation_level="AUTOCOMMIT")
    quoted = f'"{name}"' if engine == "postgresql" else f"`{name}`"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    try:
        yield admin.with_database(name)
    finally:
        with admin_engine.connect() as conn:
            force = " WITH (FORCE)" if engine == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
        admin_engine.dispose()


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    """Fastest wall time of `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def best_of_alternating(repeat: int, *fns: Callable[[], object]) -> list[tuple[float, object]]:
    """`best_of` for several tools run in turn, so a burst of load on a shared machine falls on all of them
    rather than on whichever ran during it."""
    runs: list[list[float]] = [[] for _ in fns]
    results: list[object] = [None for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            runs[i].append(time.perf_counter() - start)
    return [(min(times), result) for times, result in zip(runs, results, strict=True)]


def bench_engine(engine: str, tables: int, repeat: int) -> dict[str, float | int]:
    """Time both tools on one engine."""
    with scratch(engine) as db:
        sa_engine = db.create_engine()
        start = time.perf_counter()
        build_metadata(tables).create_all(sa_engine)
        build_s = time.perf_counter() - start
        global MODELS
        MODELS = models = build_metadata(tables, changed=5)

        def ours() -> int:
            with tempfile.TemporaryDirectory() as schema_dir:
                return len(detect_migrations(db, Path(schema_dir), f"{__name__}:MODELS").changes)

        def alembic() -> int:
            with sa_engine.connect() as conn:
                return len(compare_metadata(MigrationContext.configure(conn), models))

        (ours_s, our_changes), (alembic_s, alembic_changes) = best_of_alternating(repeat, ours, alembic)
        live, desired = take_snapshot(db), snapshot_of_metadata(models, engine)
        diff_s, _ = best_of(repeat, lambda: diff(live, desired))
        sa_engine.dispose()
    return {"build_s": build_s, "ours_s": ours_s, "alembic_s": alembic_s, "diff_ms": diff_s * 1000,
            "our_changes": int(our_changes), "alembic_changes": int(alembic_changes)}  # type: ignore[arg-type]


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--engines", default="postgresql,mysql,sqlite")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.tables} tables x 12 columns, FK chain, index+unique+check per table; 5 tables changed in models")
    print(f"{'engine':<11} {'detect (ours)':>14} {'alembic compare':>16} {'ratio':>7} {'diff only':>10} "
          f"{'changes ours/alembic':>21} {'build':>8}")
    for engine in args.engines.split(","):
        r = bench_engine(engine, args.tables, args.repeat)
        print(f"{engine:<11} {r['ours_s']:>13.3f}s {r['alembic_s']:>15.3f}s {r['ours_s'] / r['alembic_s']:>7.2f} "
              f"{r['diff_ms']:>8.1f}ms {r['our_changes']:>10}/{r['alembic_changes']:<10} {r['build_s']:>7.1f}s",
              flush=True)


if __name__ == "__main__":
    main()
