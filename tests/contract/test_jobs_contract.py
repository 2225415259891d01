"""The contract of every public job, on every engine, through every execution path: one test body.

Cells are engines (tests/contract/engines.py) x paths (tests/contract/paths.py) x jobs (`CASES` below).
Each cell starts from a known database (the `items` table of 300 rows) and fresh backup and schema
directories, arranges what the job needs with the library, runs the job on its path and checks the real
outcome: rows restored row for row, the file and manifest written and checksummed, the ledger row, the
task's final state in Redis and the PROGRESS phases (with bytes) published and sent to Flower while it
ran. One worker serves the whole module (Redis database 8 of the suite's own server).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbjobs.backup import run_backup
from dbjobs.dburl import parse_url
from dbjobs.schema.detect import detect_migrations
from dbjobs.schema.migration_file import FORWARD, REVERSE
from tests.celery_support import celery_env, flushed_redis, start_worker
from tests.contract import engines
from tests.contract.engines import ENGINES, ROWS
from tests.contract.observer import Observer
from tests.contract.paths import PATHS, Outcome, Request, Stack, start_bare_client

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.mysql]
BROKER_DB = 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, tuple[str, str]]]]:
    """Every engine's source and target database, one worker knowing them all, the observer and the bare client."""
    base = tmp_path_factory.mktemp("contract")
    broker = flushed_redis(BROKER_DB)
    with ExitStack() as cleanup:
        urls = {e.name: cleanup.enter_context(e.databases(base)) for e in ENGINES}
        aliases = ";".join(f"{name}={src};{name}-other={dst}" for name, (src, dst) in urls.items())
        env = celery_env(base, broker, DBJOBS_DATABASES=aliases, DBJOBS_SCHEMA_DIR=str(base / "migrations"))
        for source, target in urls.values():
            engines.reset(source)
            engines.reset(target)
        observer = Observer(broker)
        cleanup.callback(observer.close)
        worker = start_worker(env, base, "contract")
        cleanup.callback(worker.stop)
        client = start_bare_client(broker, base)
        cleanup.callback(client.kill)
        yield Stack(env, base, broker, observer, client), urls
    flushed_redis(BROKER_DB)


@dataclass
class Cell:
    """One cell's world: its engine's two aliases and databases, and directories of its own."""

    engine: str
    alias: str
    url: str
    other_alias: str
    other_url: str
    backups: Path
    schema: Path
    expected: list[tuple] | None = None

    def backup(self, alias: str | None = None) -> str:
        """A backup taken with the library (arranging, not under test); its id."""
        url = self.url if alias in (None, self.alias) else self.other_url
        return run_backup(parse_url(alias or self.alias, url), self.backups).backup.manifest.id

    def manifest(self, backup_id: str) -> dict:
        """The manifest written beside a backup."""
        return json.loads((self.backups / f"{backup_id}.manifest.json").read_text())


@dataclass(frozen=True)
class Case:
    """One job of the matrix: how to arrange and request it, what it must do, and the phases it reports."""

    name: str
    arrange: Callable[[Cell], Request]
    check: Callable[[Cell, Outcome], None]
    phases: frozenset[str] = frozenset()


def tables(row_counts: dict[str, int]) -> dict[str, int]:
    """Row counts by bare table name (PostgreSQL's are schema-qualified)."""
    return {name.rsplit(".", 1)[-1]: n for name, n in row_counts.items()}


def backup_request(c: Cell) -> Request:
    return Request(["backup", "--database", c.alias, "--output-dir", str(c.backups)],
                   {"database": c.alias, "output_dir": str(c.backups)})


def backup_check(c: Cell, o: Outcome) -> None:
    r = o.result
    assert (r["database"], r["engine"], tables(r["row_counts"])) == (c.alias, c.engine, {"items": ROWS})
    path = Path(r["path"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"] == c.manifest(r["id"])["sha256"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert c.manifest(r["id"])["size"] == path.stat().st_size


def restore_request(c: Cell, into_other: bool) -> Request:
    backup_id = c.backup()
    c.expected = engines.items(c.url)
    if into_other:
        engines.reset(c.other_url)
        engines.execute(c.other_url, "DELETE FROM items WHERE id > 10")  # a target with contents of its own
        return Request(["restore", backup_id, "--database", c.other_alias, "--backup-dir", str(c.backups), "--yes"],
                       {"backup": backup_id, "database": c.other_alias, "backup_dir": str(c.backups),
                        "confirmed": True})
    engines.execute(c.url, "DELETE FROM items WHERE id > 10", "UPDATE items SET name = 'changed since the backup'")
    return Request(["restore", backup_id, "--backup-dir", str(c.backups), "--yes"],
                   {"backup": backup_id, "backup_dir": str(c.backups), "confirmed": True})


def restore_check(c: Cell, o: Outcome, into_other: bool) -> None:
    target, alias = (c.other_url, c.other_alias) if into_other else (c.url, c.alias)
    assert o.result["database"] == alias
    assert engines.items(target) == c.expected  # row for row, values exact
    if o.result["strategy"] == "swap":  # the replaced database itself is kept, renamed: no safety dump
        assert c.engine in ("postgresql", "mysql") and o.result["safety_backup_id"] is None
        assert len(engines.items(target.rsplit("/", 1)[0] + "/" + o.result["pre_restore_copy"])) == 10
    else:
        safety = c.manifest(o.result["safety_backup_id"])
        assert (safety["kind"], safety["database"], tables(safety["row_counts"])) == ("safety", alias, {"items": 10})
    if o.task_id is not None:
        assert ("check" if o.result["strategy"] == "swap" else "safety-backup") in {p["phase"] for p in o.progress}


def listing_request(c: Cell) -> Request:
    c.expected = [(c.backup(),), (c.backup(),)]
    c.backup(c.other_alias)  # another alias's backup in the same directory is not listed
    return Request(["list-backups", "--backup-dir", str(c.backups), "--database", c.alias],
                   {"backup_dir": str(c.backups), "database": c.alias})


def listing_check(c: Cell, o: Outcome) -> None:
    assert [b["id"] for b in o.result["backups"]] == [i for (i,) in reversed(c.expected or [])]
    assert o.result["total"] == 2 and o.result["skipped"] == []
    assert {b["engine"] for b in o.result["backups"]} == {c.engine}


def cleanup_request(c: Cell) -> Request:
    c.expected = [(c.backup(),) for _ in range(3)]
    return Request(["cleanup", "--backup-dir", str(c.backups), "--database", c.alias, "--keep-days", "0",
                    "--min-keep", "1"],
                   {"backup_dir": str(c.backups), "database": c.alias, "keep_days": 0, "min_keep": 1})


def cleanup_check(c: Cell, o: Outcome) -> None:
    ids = [i for (i,) in c.expected or []]
    assert sorted(d["id"] for d in o.result["deleted"]) == sorted(ids[:2])
    assert [k["id"] for k in o.result["kept"]] == ids[2:]
    left = sorted(p.name for p in c.backups.glob(f"{c.alias}-*"))
    assert left == [f"{ids[2]}.dump.zst", f"{ids[2]}.manifest.json"]


def status_request(c: Cell) -> Request:
    c.expected = [(c.backup(),)]
    return Request(["status", "--database", c.alias, "--backup-dir", str(c.backups)],
                   {"database": c.alias, "backup_dir": str(c.backups)})


def status_check(c: Cell, o: Outcome) -> None:
    (db,) = o.result["databases"]
    assert (db["alias"], db["reachable"], db["engine"]) == (c.alias, True, c.engine)
    assert o.result["backups"]["databases"][c.alias]["count"] == 1
    assert o.result["backups"]["databases"][c.alias]["newest"] == (c.expected or [("",)])[0][0]


def verify_request(c: Cell) -> Request:
    backup_id = c.backup()
    c.expected = engines.items(c.url)
    engines.reset(c.other_url)
    engines.execute(c.other_url, "DELETE FROM items WHERE id > 10")  # a scratch database with contents of its own
    return Request(["verify", backup_id, "--deep", "--into", c.other_alias, "--backup-dir", str(c.backups)],
                   {"backup": backup_id, "deep": True, "into": c.other_alias, "backup_dir": str(c.backups)})


def verify_check(c: Cell, o: Outcome) -> None:
    r = o.result
    assert (r["ok"], r["problems"], r["schema"], r["into"]) == (True, [], "matches", c.other_alias)
    assert (r["tables"], r["rows"]) == (1, ROWS)
    assert engines.items(c.other_url) == c.expected  # the drill restored the scratch alias row for row
    assert engines.items(c.url) == c.expected  # and never touched the source
    assert not list(c.backups.glob(f"{c.other_alias}-*"))  # no safety copy of a scratch database


def detect_request(c: Cell) -> Request:
    detect_migrations(parse_url(c.alias, c.url), c.schema)  # the first snapshot
    engines.execute(c.url, "ALTER TABLE items ADD COLUMN contract_extra INTEGER")
    return Request(["detect-migrations", "--database", c.alias, "--schema-dir", str(c.schema)],
                   {"database": c.alias, "schema_dir": str(c.schema)})


def detect_check(c: Cell, o: Outcome) -> None:
    assert o.result["changed"] and o.result["source"] == "previous snapshot"
    assert any("contract_extra" in change for change in o.result["changes"]), o.result["changes"]
    forward = Path(o.result["file"]).read_text().split(FORWARD)[1].split(REVERSE)[0]
    assert "contract_extra" in forward and Path(o.result["file"]).parent == c.schema


def apply_request(c: Cell) -> Request:
    c.schema.mkdir(parents=True)
    path = c.schema / "0001_20260101T000000_contract.sql"
    path.write_text(f"-- dbjobs migration {path.stem}\n-- engine: {c.engine}\n{FORWARD}\n"
                    "CREATE TABLE contract_t (id INTEGER PRIMARY KEY, label VARCHAR(20));\n"
                    f"INSERT INTO contract_t VALUES (1, 'applied');\n{REVERSE}\nDROP TABLE contract_t;\n")
    return Request(["apply-migration", "--file", str(path), "--database", c.alias, "--yes"],
                   {"file": str(path), "database": c.alias, "confirmed": True})


def apply_check(c: Cell, o: Outcome) -> None:
    (m,) = o.result["migrations"]
    assert (m["status"], m["name"], m["statements"]) == ("applied", "0001_20260101T000000_contract", 2)
    ledger = engines.query(c.url, "SELECT name, success FROM dbjobs_migrations")
    assert [(name, bool(ok)) for name, ok in ledger] == [("0001_20260101T000000_contract", True)]
    assert engines.query(c.url, "SELECT id, label FROM contract_t") == [(1, "applied")]


RESTORE_PHASES = frozenset({"verify", "restore"})  # and "check" (swap) or "safety-backup" (in place)
CASES = {
    "backup": Case("dbjobs.backup", backup_request, backup_check, frozenset({"check", "dump"})),
    "restore": Case("dbjobs.restore", lambda c: restore_request(c, False), lambda c, o: restore_check(c, o, False),
                    RESTORE_PHASES),
    "restore-other": Case("dbjobs.restore", lambda c: restore_request(c, True), lambda c, o: restore_check(c, o, True),
                          RESTORE_PHASES),
    "list_backups": Case("dbjobs.list_backups", listing_request, listing_check),
    "cleanup": Case("dbjobs.cleanup", cleanup_request, cleanup_check, frozenset({"scan", "delete"})),
    "status": Case("dbjobs.status", status_request, status_check),
    "verify-deep": Case("dbjobs.verify", verify_request, verify_check, frozenset({"verify", "restore"})),
    "detect_migrations": Case("dbjobs.detect_migrations", detect_request, detect_check,
                              frozenset({"snapshot", "diff"})),
    "apply_migration": Case("dbjobs.apply_migration", apply_request, apply_check, frozenset({"lock", "apply"})),
}
BYTE_PHASES = {"dump", "verify", "restore"}


@pytest.mark.parametrize("job", list(CASES))
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("engine", [e.name for e in ENGINES])
def test_job_contract(stack, tmp_path: Path, engine: str, path: str, job: str) -> None:
    world, urls = stack
    source, target = urls[engine]
    engines.reset(source)
    cell = Cell(engine, engine, source, f"{engine}-other", target, tmp_path / "backups", tmp_path / "migrations")
    case = CASES[job]
    request = case.arrange(cell)
    outcome = PATHS[path](world, case.name, request)
    case.check(cell, outcome)
    if outcome.task_id is None:
        return
    assert outcome.state == "SUCCESS" and outcome.states[-1] == "SUCCESS", outcome.states
    assert "STARTED" in outcome.states, outcome.states
    phases = {p["phase"] for p in outcome.progress}
    assert case.phases <= phases, f"{case.name} published {outcome.progress}"
    assert case.phases <= {e["phase"] for e in outcome.events}, f"{case.name} sent Flower {outcome.events}"
    for p in outcome.progress:
        if p["phase"] in BYTE_PHASES:
            assert isinstance(p["done"], int) and isinstance(p["total"], int) and 0 <= p["done"] <= p["total"], p
    assert any(p["phase"] in BYTE_PHASES and p["done"] > 0 for p in outcome.progress) or not case.phases & BYTE_PHASES
