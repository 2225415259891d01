"""A backup taken while another connection keeps writing is a consistent snapshot.

A writer thread moves amounts between accounts, each transfer in one transaction that also
inserts its two ledger rows, for the whole duration of the backup. Restored, the backup must
satisfy the invariants of every committed state: balances sum to the opening total, and each
account's balance is its opening balance plus its ledger entries.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import sqlalchemy as sa

from dbjobs.jobs import run_job
from tests.backup_support import connect, db, row_counts, second_database, settings_for

ACCOUNTS = 20
OPENING = 1000
FILLER = {
    "postgresql": "INSERT INTO filler SELECT i, md5(i::text) || repeat('x', 200) FROM generate_series(1, {n}) i",
    "mysql": "INSERT INTO filler SELECT seq, CONCAT(MD5(seq), REPEAT('x', 200)) FROM seq_1_to_{n}",
    "sqlite": "INSERT INTO filler WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
              "SELECT i, hex(randomblob(116)) FROM s",
}


def _setup(url: str, filler_rows: int, sqlite_journal: str = "wal") -> None:
    with connect(url) as conn:
        if db(url).engine == "sqlite":
            conn.exec_driver_sql(f"PRAGMA journal_mode={sqlite_journal}")
        conn.execute(sa.text("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)"))
        conn.execute(sa.text("CREATE TABLE ledger (id BIGINT PRIMARY KEY, account INTEGER NOT NULL, "
                             "amount BIGINT NOT NULL)"))
        conn.execute(sa.text("CREATE TABLE filler (id INTEGER PRIMARY KEY, pad TEXT)"))
        conn.execute(sa.text("INSERT INTO accounts VALUES (:id, :b)"),
                     [{"id": i, "b": OPENING} for i in range(ACCOUNTS)])
        conn.execute(sa.text(FILLER[db(url).engine].format(n=filler_rows)))


class Writer(threading.Thread):
    """Transfers between random accounts until stopped, counting committed transfers."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.committed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        engine = db(self.url).create_engine()
        try:
            while not self.stop.is_set():
                a, b = rng.sample(range(ACCOUNTS), 2)
                amount = rng.randint(1, 50)
                with engine.begin() as conn:
                    conn.execute(sa.text("UPDATE accounts SET balance = balance - :x WHERE id = :a"),
                                 {"x": amount, "a": a})
                    conn.execute(sa.text("INSERT INTO ledger VALUES (:id, :a, :x)"),
                                 {"id": 2 * self.committed, "a": a, "x": -amount})
                    conn.execute(sa.text("UPDATE accounts SET balance = balance + :x WHERE id = :b"),
                                 {"x": amount, "b": b})
                    conn.execute(sa.text("INSERT INTO ledger VALUES (:id, :b, :x)"),
                                 {"id": 2 * self.committed + 1, "b": b, "x": amount})
                self.committed += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            engine.dispose()


def _assert_invariants(url: str) -> None:
    with connect(url) as conn:
        total = conn.execute(sa.text("SELECT SUM(balance) FROM accounts")).scalar()
        ledger = conn.execute(sa.text("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM ledger")).one()
        mismatched = conn.execute(sa.text(
            "SELECT COUNT(*) FROM accounts a WHERE a.balance <> :o + "
            "(SELECT COALESCE(SUM(l.amount), 0) FROM ledger l WHERE l.account = a.id)"), {"o": OPENING}).scalar()
    assert total == ACCOUNTS * OPENING
    assert ledger[0] % 2 == 0 and ledger[1] == 0
    assert mismatched == 0


def test_backup_during_writes_is_a_consistent_snapshot(db_url: str, tmp_path: Path) -> None:
    _setup(db_url, filler_rows=150_000)
    _backup_during_writes(db_url, tmp_path)


def test_sqlite_rollback_journal_file_streamed_under_lock_is_consistent(sqlite_url: str, tmp_path: Path) -> None:
    """SQLite's default journal mode takes the other path: the file itself, streamed under a read lock."""
    _setup(sqlite_url, filler_rows=150_000, sqlite_journal="delete")
    _backup_during_writes(sqlite_url, tmp_path)


def _backup_during_writes(db_url: str, tmp_path: Path) -> None:
    writer = Writer(db_url)
    writer.start()
    try:
        while writer.committed < 20 and writer.is_alive():  # the writer is in full swing
            threading.Event().wait(0.01)
        with second_database(db_url, tmp_path) as copy_url:
            settings = settings_for(tmp_path / "backups", main=db_url, copy=copy_url)
            before = writer.committed
            result = run_job("dbjobs.backup", settings, {"database": "main"})
            during = writer.committed - before
            writer.stop.set()
            writer.join()
            assert writer.error is None, writer.error
            assert during > 0, "no transfer committed while the backup ran: the test proves nothing"

            run_job("dbjobs.restore", settings, {"backup": result["id"], "database": "copy", "confirmed": True})

            _assert_invariants(copy_url)
            restored = row_counts(copy_url)
            assert 0 < restored["ledger" if db(db_url).engine != "postgresql" else "public.ledger"] < 2 * (
                writer.committed + 1)
            # counted on the dump's own snapshot (MySQL: on one opened while no commit could happen)
            assert result["row_counts"] == restored
            assert "row_counts_exact" not in result["extra"]
    finally:
        writer.stop.set()
        writer.join()
