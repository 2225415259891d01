"""Benchmark: dbjobs' PostgreSQL schema migrations on migra's fixture corpus, migra's own
expected.sql on the same pipeline as the anchor.

For each case `<dir>/<case>/{a.sql,b.sql,expected.sql}`:

1. a database is built from a.sql and `detect_migrations` records its baseline snapshot;
2. the same database is rebuilt from b.sql and `detect_migrations` writes a migration file;
3. forward: a fresh database built from a.sql gets the file's forward section; it passes when
   the comparator finds no difference from the b database;
4. reverse: that database then gets the file's reverse section; it passes when it equals a
   fresh a database;
5. anchor: a fresh a database runs migra's expected.sql and is compared with b the same way.

The comparator is migra itself (a separate virtualenv: `pip install migra psycopg2-binary`),
run with the options the case is meant for; empty output means identical. The corpus is not
part of this repository: fetch github:djrobstep/migra and pass its tests/FIXTURES directory.

    python bench/bench_migra_corpus.py /tmp/migra/tests/FIXTURES --migra /tmp/venv/bin/migra [--case NAME ...]
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dbjobs.dburl import DatabaseURL, parse_url
from dbjobs.errors import DbjobsError
from dbjobs.migrate import LEDGER_DDL, LEDGER_PROGRESS, LEDGER_TIME_TYPE, apply_migration
from dbjobs.schema.builder import LEDGER_TABLE
from dbjobs.schema.detect import detect_migrations

ADMIN_URL = os.environ.get("DBJOBS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_ROLE = "schemainspect_test_role"  # the role migra's fixtures grant to
# The options each case is written for (migra's own test suite runs them so); every other case
# compares with privileges and ignores extension versions.
SCHEMA_OPTIONS = {"singleschema": {"schemas": ["goodschema"]}, "excludeschema": {"exclude_schemas": ["excludedschema"]}}
VERSIONED = {"extversions"}
NO_PRIVILEGES = {"singleschema", "excludeschema", "singleschema_ext", "extversions"}


@dataclass
class Outcome:
    """One side of one case: passed, or why not (the first line of the error or the difference)."""

    ok: bool
    why: str = ""

    def cell(self) -> str:
        return "pass" if self.ok else "FAIL"


@dataclass
class CaseResult:
    name: str
    forward: Outcome
    reverse: Outcome
    anchor: Outcome
    detect_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class Server:
    """Scratch databases on the PostgreSQL server, prefixed `dbjobs_schema_`, all dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin = parse_url("admin", admin_url)
        self.created: list[str] = []

    def psql(self, database: str, *args: str) -> subprocess.CompletedProcess[str]:
        url = self.admin.url
        env = {**os.environ, "PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432),
               "PGUSER": url.username or "postgres", "PGDATABASE": database}
        if url.password:
            env["PGPASSWORD"] = url.password
        return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *args], env=env, text=True,
                              capture_output=True, check=False)

    def sql(self, statement: str) -> None:
        self.sql_in(self.admin.database, statement)

    def sql_in(self, database: str, statement: str) -> None:
        done = self.psql(database, "-c", statement)
        if done.returncode:
            raise RuntimeError(done.stderr.strip())

    def fresh(self, script: Path | None, tag: str) -> DatabaseURL:
        """A new database, built from `script` (None: empty)."""
        name = f"dbjobs_schema_{tag}_{uuid.uuid4().hex[:8]}"
        self.sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        if script is not None:
            self.load(name, script)
        return DatabaseURL("bench", self.admin.url.set(database=name))

    def load(self, name: str, script: Path) -> None:
        done = self.psql(name, "-f", str(script))
        if done.returncode:
            raise RuntimeError(f"{script.name}: {done.stderr.strip().splitlines()[-1]}")

    def rebuild(self, db: DatabaseURL, script: Path) -> None:
        """Drop and re-create the database under the same name, built from `script`."""
        self.sql(f'DROP DATABASE "{db.database}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{db.database}"')
        self.load(db.database, script)

    def ensure_role(self) -> None:
        exists = self.psql(self.admin.database, "-Atc", f"SELECT 1 FROM pg_roles WHERE rolname = '{TEST_ROLE}'")
        if exists.stdout.strip() != "1":
            self.sql(f"CREATE ROLE {TEST_ROLE}")

    def drop_all(self) -> None:
        for name in self.created:
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@contextmanager
def server(admin_url: str) -> Iterator[Server]:
    srv = Server(admin_url)
    try:
        yield srv
    finally:
        srv.drop_all()


def compare(srv: Server, migra: str, case: str, left: DatabaseURL, right: DatabaseURL) -> Outcome:
    """migra's diff of the two databases with the case's options: empty output means identical."""
    flags = ["--unsafe"]
    if case not in VERSIONED:
        flags.append("--ignore-extension-versions")
    if case not in NO_PRIVILEGES:
        flags.append("--with-privileges")
    options = SCHEMA_OPTIONS.get(case, {})
    flags += [f for s in options.get("schemas", []) for f in ("--schema", s)]
    flags += [f for s in options.get("exclude_schemas", []) for f in ("--exclude_schema", s)]

    # The ledger apply-migration and detect keep is bookkeeping, not schema: the same shape on both sides.
    ledger = [LEDGER_DDL.format(t=LEDGER_TABLE, time=LEDGER_TIME_TYPE["postgresql"])]
    ledger += [f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN IF NOT EXISTS {c} {t}" for c, t in LEDGER_PROGRESS.items()]
    for db in (left, right):
        srv.sql_in(db.database, "; ".join(ledger))

    def url(db: DatabaseURL) -> str:
        return db.url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)

    done = subprocess.run([migra, *flags, url(left), url(right)], text=True, capture_output=True, check=False)
    if done.returncode not in (0, 2):
        return Outcome(False, "comparator failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    statements = [line for line in done.stdout.splitlines() if line.strip()]
    return Outcome(not statements, "differs: " + "; ".join(statements)[:160] if statements else "")


def supported(function, **kwargs):  # type: ignore[no-untyped-def]
    """The keyword arguments `function` accepts (older dbjobs lacks the schema filters)."""
    names = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def run_case(srv: Server, migra: str, case_dir: Path) -> CaseResult:
    case = case_dir.name
    a_sql, b_sql, expected = case_dir / "a.sql", case_dir / "b.sql", case_dir / "expected.sql"
    options = SCHEMA_OPTIONS.get(case, {})
    result = CaseResult(case, Outcome(False, "not run"), Outcome(False, "not run"), Outcome(False, "not run"))
    reference_a = srv.fresh(a_sql, "a")
    anchor = srv.fresh(a_sql, "m")
    live = srv.fresh(a_sql, "x")
    target = srv.fresh(a_sql, "y")
    schema_dir = Path(tempfile.mkdtemp(prefix="dbjobs_schema_bench_"))
    try:
        try:
            srv.load(anchor.database, expected)
            srv.rebuild(live, b_sql)  # anchor compares against b below; build b first
            result.anchor = compare(srv, migra, case, anchor, live)
        except RuntimeError as exc:
            result.anchor = Outcome(False, f"error: {exc}")
        srv.rebuild(live, a_sql)
        detect = supported(detect_migrations, **options)
        try:
            detect_migrations(live, schema_dir, **detect)
            srv.rebuild(live, b_sql)
            started = time.perf_counter()
            found = detect_migrations(live, schema_dir, **detect)
            result.detect_s = time.perf_counter() - started
        except DbjobsError as exc:
            result.forward = result.reverse = Outcome(False, f"detect error: {exc}")
            return result
        if not found.file:
            result.forward = compare(srv, migra, case, target, live)
            result.forward.why = result.forward.why or "no change detected"
            result.reverse = compare(srv, migra, case, target, reference_a)
            return result
        apply = supported(apply_migration, allow_destructive=True, allow_unsupported=True)
        try:
            apply_migration(target, Path(found.file), **apply)
            result.forward = compare(srv, migra, case, target, live)
        except DbjobsError as exc:
            result.forward = Outcome(False, f"apply error: {exc}")
            result.reverse = Outcome(False, "forward did not apply")
            return result
        try:
            apply_migration(target, Path(found.file), reverse=True, **apply)
            result.reverse = compare(srv, migra, case, target, reference_a)
        except DbjobsError as exc:
            result.reverse = Outcome(False, f"apply error: {exc}")
        return result
    finally:
        shutil.rmtree(schema_dir, ignore_errors=True)
        srv.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixtures", type=Path, help="migra's tests/FIXTURES directory")
    parser.add_argument("--migra", default=shutil.which("migra") or "migra", help="the migra executable (comparator)")
    parser.add_argument("--case", action="append", help="run only these cases")
    parser.add_argument("--jobs", type=int, default=4, help="cases run side by side (default 4)")
    parser.add_argument("--why", action="store_true", help="print why each failing side failed")
    args = parser.parse_args()
    cases = sorted(p for p in args.fixtures.iterdir() if (p / "a.sql").is_file() and (p / "b.sql").is_file())
    if args.case:
        cases = [p for p in cases if p.name in set(args.case)]
    if not cases:
        sys.exit(f"no cases (a.sql, b.sql) under {args.fixtures}")
    Server(ADMIN_URL).ensure_role()

    def one(case_dir: Path) -> CaseResult:
        with server(ADMIN_URL) as srv:
            r = run_case(srv, args.migra, case_dir)
        print(f"{r.name:18} forward {r.forward.cell():4}  reverse {r.reverse.cell():4}  "
              f"migra expected.sql {r.anchor.cell():4}  detect {r.detect_s * 1000:5.0f} ms", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # cases are independent databases
        results = list(pool.map(one, cases))
    print()
    print("| case | dbjobs forward (a + file = b) | dbjobs reverse (b + reverse = a) | migra expected.sql forward |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.forward.cell()} | {r.reverse.cell()} | {r.anchor.cell()} |")
    forward, reverse = sum(r.forward.ok for r in results), sum(r.reverse.ok for r in results)
    print(f"| **total of {len(results)}** | **{forward}** | **{reverse}** | **{sum(r.anchor.ok for r in results)}** |")
    if args.why:
        print()
        for r in results:
            for side, outcome in (("forward", r.forward), ("reverse", r.reverse), ("expected.sql", r.anchor)):
                if not outcome.ok:
                    print(f"{r.name} {side}: {outcome.why[:300]}")


if __name__ == "__main__":
    main()
