"""Shared helpers for the backup/restore tests: a sample database per engine, snapshots, settings.

A snapshot is everything a restore must bring back, read through SQLAlchemy's inspector and
plain SELECTs: tables, columns, primary keys, indexes, foreign keys, views and every row. Two
snapshots compare equal exactly when the databases hold the same schema and data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import zstandard
from sqlalchemy.pool import NullPool

from dbjobs.catalog import Backup
from dbjobs.dburl import DatabaseURL, parse_url
from dbjobs.engines.pg_archive import BlockCuts
from dbjobs.manifest import DUMP_SUFFIX
from dbjobs.pipeline import write_atomic, write_compressed
from dbjobs.progress import no_progress
from dbjobs.settings import Settings, load_settings

SCHEMA = {
    "postgresql": [
        """CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email varchar(200) UNIQUE,
           profile jsonb, settings json, created_at timestamptz NOT NULL, balance numeric(14,4) NOT NULL DEFAULT 0)""",
        """CREATE TABLE orders (id bigint PRIMARY KEY,
           customer_id integer NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
           total numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL, note text, payload bytea)""",
        "CREATE INDEX orders_customer_placed ON orders (customer_id, placed_at)",
        "CREATE UNIQUE INDEX customers_name_email ON customers (name, email)",
        """CREATE VIEW order_totals AS SELECT customer_id, sum(total) AS total, count(*) AS n
           FROM orders GROUP BY customer_id""",
    ],
    "mysql": [
        """CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(200) NOT NULL, email VARCHAR(200) UNIQUE,
           profile JSON, settings JSON, created_at TIMESTAMP(6) NOT NULL, balance DECIMAL(14,4) NOT NULL DEFAULT 0)
           ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        """CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(12,2) NOT NULL,
           placed_at DATETIME(6) NOT NULL, note TEXT, payload LONGBLOB,
           CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE)
           ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        "CREATE INDEX orders_customer_placed ON orders (customer_id, placed_at)",
        "CREATE UNIQUE INDEX customers_name_email ON customers (name, email)",
        """CREATE VIEW order_totals AS SELECT customer_id, sum(total) AS total, count(*) AS n
           FROM orders GROUP BY customer_id""",
    ],
    "sqlite": [
        """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE,
           profile JSON, settings JSON, created_at TIMESTAMP NOT NULL, balance NUMERIC NOT NULL DEFAULT 0)""",
        """CREATE TABLE orders (id INTEGER PRIMARY KEY,
           customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
           total NUMERIC NOT NULL, placed_at TIMESTAMP NOT NULL, note TEXT, payload BLOB)""",
        "CREATE INDEX orders_customer_placed ON orders (customer_id, placed_at)",
        "CREATE UNIQUE INDEX customers_name_email ON customers (name, email)",
        """CREATE VIEW order_totals AS SELECT customer_id, sum(total) AS total, count(*) AS n
           FROM orders GROUP BY customer_id""",
    ],
}
NAMES = ["Zoë Ωmega", "中文 名字", "O'Brien \\ \"quoted\"", "line\nbreak\ttab", "emoji 🐍🎉", "plain", "\u2028sep"]


def db(url: str, alias: str = "main") -> DatabaseURL:
    """The parsed URL, as the jobs see it."""
    return parse_url(alias, url)


@contextmanager
def connect(url: str) -> Iterator[sa.Connection]:
    """A committed-on-exit connection that leaves no pooled connection behind."""
    engine = db(url).create_engine(poolclass=NullPool)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def settings_for(backup_dir: Path, **aliases: str) -> Settings:
    """Settings whose aliases point at the fixtures' scratch databases and whose backups go to `backup_dir`."""
    return load_settings({"DBJOBS_DATABASES": json.dumps(aliases), "DBJOBS_BACKUP_DIR": str(backup_dir)},
                         dotenv=None)


def _when(i: int, engine: str) -> datetime:
    tz = timezone(timedelta(hours=(i % 27) - 12, minutes=30 * (i % 2)))
    moment = datetime(2024, 3, 31, 1, 59, 59, 123456, tzinfo=tz) + timedelta(hours=i * 7)
    return moment if engine == "postgresql" else moment.astimezone(UTC).replace(tzinfo=None)


def build_sample(url: str, customers: int = 40, orders: int = 160) -> None:
    """Create the sample schema with rows exercising unicode, JSON, time zones, decimals and binary data."""
    engine = db(url).engine
    with connect(url) as conn:
        for statement in SCHEMA[engine]:
            conn.execute(sa.text(statement))
    with connect(url) as conn:
        meta = sa.MetaData()
        cust = sa.Table("customers", meta, autoload_with=conn)
        order = sa.Table("orders", meta, autoload_with=conn)
        as_json = engine == "mysql"  # MariaDB reflects JSON as LONGTEXT
        conn.execute(cust.insert(), [{
            "id": i, "name": f"{NAMES[i % len(NAMES)]} {i}", "email": None if i % 9 == 0 else f"c{i}@example.com",
            "profile": _json({"k": i, "nested": {"list": [1, 2.5, None, True], "s": "ü€"}}, as_json),
            "settings": _json([i, "x" * (i % 5)], as_json),
            "created_at": _when(i, engine), "balance": Decimal(f"{(i * 7919) % 100000 - 50000}.{i % 10000:04d}"),
        } for i in range(1, customers + 1)])
        conn.execute(order.insert(), [{
            "id": i, "customer_id": i % customers + 1, "total": Decimal(f"{i * 13 % 10000}.{i % 100:02d}"),
            "placed_at": _when(i * 3, engine), "note": None if i % 4 == 0 else f"note {NAMES[i % len(NAMES)]}",
            "payload": None if i % 5 == 0 else bytes(range(256)) * (i % 3) + i.to_bytes(4, "big"),
        } for i in range(1, orders + 1)])


def _json(value: Any, as_text: bool) -> Any:
    return json.dumps(value) if as_text else value


def mutate(url: str) -> None:
    """Change the sample in every way a restore must undo: updates, deletes, dropped objects, a new table."""
    with connect(url) as conn:
        conn.execute(sa.text("UPDATE customers SET name = 'changed' WHERE id % 2 = 0"))
        conn.execute(sa.text("DELETE FROM orders WHERE id % 3 = 0"))
        conn.execute(sa.text("DROP VIEW order_totals"))
        on_table = " ON customers" if db(url).engine == "mysql" else ""
        conn.execute(sa.text(f"DROP INDEX customers_name_email{on_table}"))
        conn.execute(sa.text("CREATE TABLE extra (id INTEGER PRIMARY KEY, v VARCHAR(20))"))
        conn.execute(sa.text("INSERT INTO extra VALUES (1, 'x')"))


def _normalized_view(definition: str | None, database: str) -> str:
    text = (definition or "").replace(f"`{database}`.", "")
    return re.sub(r"\s+", " ", text).strip().rstrip(";").lower()


def snapshot(url: str) -> dict[str, Any]:
    """Schema and data as plain, comparable values (independent of the database's name)."""
    name = db(url).database
    with connect(url) as conn:
        insp = sa.inspect(conn)
        meta = sa.MetaData()
        tables: dict[str, Any] = {}
        for table_name in sorted(insp.get_table_names()):
            table = sa.Table(table_name, meta, autoload_with=conn)
            tables[table_name] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table_name)],
                "primary_key": insp.get_pk_constraint(table_name)["constrained_columns"],
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(table_name)),
                "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"],
                                        tuple(f["referred_columns"])) for f in insp.get_foreign_keys(table_name)),
                "rows": [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))],
            }
        views = {v: {"definition": _normalized_view(insp.get_view_definition(v), name),
                     "rows": sorted(map(repr, conn.execute(sa.text(f"SELECT * FROM {v}"))))}
                 for v in sorted(insp.get_view_names())}
    return {"tables": tables, "views": views}


def copy_snapshot(url: str) -> dict[str, Any]:
    """The snapshot of a pre-restore copy without the bookkeeping a MariaDB swap keeps in it (`__dbjobs_objects`:
    the replaced database's views, routines, triggers and events, as definitions, for an undo)."""
    snap = snapshot(url)
    snap["tables"] = {t: v for t, v in snap["tables"].items() if not t.startswith("__dbjobs_")}
    return snap


def mysql_objects(url: str) -> dict[str, list[tuple]]:
    """A MariaDB database's views, routines, triggers and events as information_schema shows them (view
    definitions without the database's name), for comparing what a restore brought back."""
    name = db(url).database
    queries = {
        "views": "SELECT TABLE_NAME, REPLACE(VIEW_DEFINITION, CONCAT('`', :s, '`.'), '') FROM information_schema.VIEWS "
                 "WHERE TABLE_SCHEMA = :s",
        "routines": "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
                    "WHERE ROUTINE_SCHEMA = :s",
        "triggers": "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT "
                    "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = :s",
        "events": "SELECT EVENT_NAME, EVENT_DEFINITION, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = :s",
    }
    with connect(url) as conn:
        return {kind: sorted(tuple(r) for r in conn.execute(sa.text(sql), {"s": name}))
                for kind, sql in queries.items()}


def row_counts(url: str) -> dict[str, int]:
    """Rows per table, keyed like the manifest's row_counts (PostgreSQL names carry their schema)."""
    snap = snapshot(url)
    prefix = "public." if db(url).engine == "postgresql" else ""
    return {prefix + t: len(v["rows"]) for t, v in snap["tables"].items()}


def side_databases(url: str) -> list[str]:
    """The shadow and pre-restore databases a server restore left beside `url`'s database."""
    name = db(url).database
    with connect(url) as conn:
        if db(url).engine == "mysql":
            rows = conn.execute(sa.text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"))
        else:
            rows = conn.execute(sa.text("SELECT datname FROM pg_database"))
        return sorted(r[0] for r in rows if r[0].startswith(name + "__"))


def raw_dump(backup: Backup) -> bytes:
    """The decompressed dump of a (small) backup."""
    return zstandard.ZstdDecompressor().stream_reader(backup.path.read_bytes()).read()


def doctor(backup: Backup, change: Callable[[bytes], bytes]) -> Backup:
    """Rewrite a backup's dump with `change` and give it a valid manifest, as dbjobs would have written it for that
    dump (a PostgreSQL one cut into frames where its blocks start): damage the checksum cannot catch."""
    data = change(raw_dump(backup))
    cuts = BlockCuts() if backup.manifest.engine == "postgresql" else None
    written, _ = write_compressed(backup.path, lambda sink: sink(data), progress=no_progress, total=None, cuts=cuts)
    extra = {k: v for k, v in backup.manifest.extra.items() if k != "frames"}
    manifest = dataclasses.replace(backup.manifest, size=written.size, raw_size=written.raw_size,
                                   sha256=written.sha256, extra={**extra, **({"frames": written.frames}
                                                                              if written.frames else {})})
    write_atomic(backup.path.with_name(manifest.manifest_name), manifest.to_json().encode())
    return Backup(manifest, backup.path)


def backup_files(directory: Path) -> list[str]:
    """Every file in a backup directory, hidden ones included, to show that nothing was added or removed.

    Subdirectories are dbjobs' own state (`.last-jobs/` records the failed job), not backups.
    """
    return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def dump_path(directory: Path, backup_id: str) -> Path:
    """Where a backup's file lives."""
    return directory / (backup_id + DUMP_SUFFIX)


@contextmanager
def second_database(url: str, tmp_path: Path) -> Iterator[str]:
    """An empty scratch database on the same server as `url` (a new file for SQLite), dropped afterwards."""
    parsed = db(url)
    if parsed.engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'second.sqlite3'}"
        return
    name = parsed.database + "_b"
    quote = '"' if parsed.engine == "postgresql" else "`"
    engine = parsed.create_engine(poolclass=NullPool, isolation_level="AUTOCOMMIT")
    force = " WITH (FORCE)" if parsed.engine == "postgresql" else ""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
        yield parsed.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}"))
        engine.dispose()
        from tests.conftest import drop_copies

        drop_copies("postgres" if parsed.engine == "postgresql" else "mysql", url.rsplit("/", 1)[0] + "/" + name)


CLI = Path(__file__).resolve().parents[1] / "cli.py"


def run_cli(cwd: Path, *args: str, max_file_size: int | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`python cli.py ARGS` in `cwd` with only the given DBJOBS_* settings and no terminal.

    `max_file_size` caps every file the command writes (RLIMIT_FSIZE): a disk that fills up.
    """
    base = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(cwd)}

    def limit() -> None:
        if max_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))

    return subprocess.run([sys.executable, str(CLI), *args], cwd=cwd, env={**base, **env}, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, check=False, preexec_fn=limit)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a failed command (asserting there is exactly that and no traceback)."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]
