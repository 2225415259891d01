"""MariaDB's swap restore carries what belongs to a database rather than its tables: views (one built on
another), functions, procedures, triggers and events. The restore brings back the backup's, an undo the
replaced database's, and each trigger fires again where it belongs. The objects are read from
information_schema (`mysql_objects`), not through the code under test.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbjobs.errors import RestoreError
from dbjobs.jobs import run_job
from tests.backup_support import (
    build_sample,
    connect,
    copy_snapshot,
    db,
    mutate,
    mysql_objects,
    settings_for,
    side_databases,
    snapshot,
)
from tests.conftest import MYSQL_ADMIN_URL

pytestmark = pytest.mark.mysql

OBJECTS = [
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, what VARCHAR(20))",
    """CREATE TRIGGER customers_audit AFTER UPDATE ON customers FOR EACH ROW
       INSERT INTO audit (customer_id, what) VALUES (NEW.id, 'updated')""",
    "CREATE FUNCTION cents(x DECIMAL(12,2)) RETURNS BIGINT DETERMINISTIC RETURN x * 100",
    "CREATE PROCEDURE touch(IN who INT) UPDATE customers SET balance = balance WHERE id = who",
    "CREATE VIEW big_orders AS SELECT id, customer_id, cents(total) AS cents FROM orders WHERE total > 100",
    "CREATE VIEW big_order_count AS SELECT COUNT(*) AS n FROM big_orders",
    "CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY STARTS '2037-01-01 00:00:00' DISABLE DO DELETE FROM audit",
]
CHANGES = [
    "DROP TRIGGER customers_audit",
    """CREATE TRIGGER orders_audit BEFORE INSERT ON orders FOR EACH ROW
       INSERT INTO audit (customer_id, what) VALUES (NEW.customer_id, 'ordered')""",
    "DROP VIEW big_order_count",
    "CREATE OR REPLACE FUNCTION cents(x DECIMAL(12,2)) RETURNS BIGINT DETERMINISTIC RETURN x * 1000",
    "DROP EVENT purge_audit",
    "CREATE PROCEDURE extra() SELECT 1",
]


def _run(url: str, *statements: str) -> None:
    with connect(url) as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def _audited(url: str) -> list[str]:
    """What the triggers record for one update of a customer and one new order (rolled back: nothing stays)."""
    engine = db(url).create_engine(poolclass=NullPool)
    try:
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM audit")).scalar()
            conn.execute(sa.text("UPDATE customers SET name = CONCAT(name, '!') WHERE id = 1"))
            conn.execute(sa.text("INSERT INTO orders (id, customer_id, total, placed_at) VALUES (99999, 1, 1, NOW())"))
            seen = sorted(r[0] for r in conn.execute(sa.text("SELECT what FROM audit WHERE id > :f"), {"f": first}))
            conn.rollback()
    finally:
        engine.dispose()
    return seen


def test_restore_and_undo_carry_views_routines_triggers_and_events(mysql_url: str, tmp_path: Path) -> None:
    build_sample(mysql_url)
    _run(mysql_url, *OBJECTS)
    settings = settings_for(tmp_path / "backups", main=mysql_url)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    before, before_objects = snapshot(mysql_url), mysql_objects(mysql_url)
    assert [len(v) for v in before_objects.values()] == [3, 2, 1, 1]
    mutate(mysql_url)
    _run(mysql_url, *CHANGES)
    changed, changed_objects = snapshot(mysql_url), mysql_objects(mysql_url)
    assert changed_objects != before_objects and _audited(mysql_url) == ["ordered"]

    restored = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})

    assert restored["strategy"] == "swap"
    assert snapshot(mysql_url) == before and mysql_objects(mysql_url) == before_objects
    assert _audited(mysql_url) == ["updated"]  # the backup's trigger fires, the replaced one is gone
    copy = mysql_url.rsplit("/", 1)[0] + "/" + restored["pre_restore_copy"]
    assert side_databases(mysql_url) == [restored["pre_restore_copy"]]
    assert copy_snapshot(copy) == changed  # the replaced database as it was, views included
    assert mysql_objects(copy) == {**changed_objects, "events": []}  # events are kept as definitions only: never run

    undone = run_job("dbjobs.restore", settings, {"database": "main", "undo": True, "confirmed": True})

    assert snapshot(mysql_url) == changed and mysql_objects(mysql_url) == changed_objects
    assert _audited(mysql_url) == ["ordered"]
    assert side_databases(mysql_url) == [undone["pre_restore_copy"]]  # the copy went back in; the restored one is out
    back = mysql_url.rsplit("/", 1)[0] + "/" + undone["pre_restore_copy"]
    assert copy_snapshot(back) == before and mysql_objects(back) == {**before_objects, "events": []}
    run_job("dbjobs.restore", settings, {"database": "main", "undo": True, "confirmed": True})  # undo the undo
    assert snapshot(mysql_url) == before and mysql_objects(mysql_url) == before_objects
    assert _audited(mysql_url) == ["updated"]


def test_an_account_limited_to_its_database_restores_in_place_until_granted_the_side_databases(
        mysql_url: str, tmp_path: Path) -> None:
    """The common application account (GRANT ALL ON app.*) cannot create `app__shadow`: auto restores in place and
    says why, --strategy swap refuses changing nothing; granted `app\\_\\_%` too, it swaps."""
    name = db(mysql_url).database
    user = f"dbjobs_p_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("mysql+pymysql://" + MYSQL_ADMIN_URL.split("://", 1)[1], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'"))
        conn.execute(sa.text(f"GRANT ALL ON `{name}`.* TO '{user}'@'%'"))
    try:
        url = mysql_url.replace("mysql://root@", f"mysql://{user}:pw-{user}@")
        build_sample(url)
        settings = settings_for(tmp_path / "backups", main=url)
        backup = run_job("dbjobs.backup", settings, {"database": "main"})
        before = snapshot(url)
        mutate(url)
        changed = snapshot(url)
        with pytest.raises(RestoreError, match=r"cannot restore by swap: the account may not create and drop the "
                                               rf"database '{name}__shadow'.*nothing was changed"):
            run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True, "strategy": "swap"})
        assert snapshot(url) == changed and side_databases(url) == []

        in_place = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})

        assert in_place["strategy"] == "in-place" and in_place["safety_backup_id"]
        assert "the account may not create and drop the database" in in_place["note"] and snapshot(url) == before
        with admin.connect() as conn:
            conn.execute(sa.text(f"GRANT ALL ON `{name}\\_\\_%`.* TO '{user}'@'%'"))
        mutate(url)
        swapped = run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})
        assert swapped["strategy"] == "swap" and snapshot(url) == before
        assert copy_snapshot(url.rsplit("/", 1)[0] + "/" + swapped["pre_restore_copy"]) == changed
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def test_a_swap_interrupted_while_its_rename_waits_is_settled_not_lost(mysql_url: str, tmp_path: Path) -> None:
    """A signal whose handler raises (as Celery's soft time limit does) while the RENAME waits for an application's
    transaction: the read is cut, the session lost, and the target's triggers were already dropped. The failed
    restore must not drop the shadow blindly (it holds their definitions): it settles the swap under the swap
    lock first, so the target is whole again (here as it was: the server ended the waiting RENAME with its
    connection; had the RENAME run, the same step finishes it), and the error is one line."""
    build_sample(mysql_url)
    _run(mysql_url, *OBJECTS)
    settings = settings_for(tmp_path / "backups", main=mysql_url)
    backup = run_job("dbjobs.backup", settings, {"database": "main"})
    mutate(mysql_url)
    _run(mysql_url, *CHANGES)
    changed, changed_objects = snapshot(mysql_url), mysql_objects(mysql_url)
    engine = sa.create_engine("mysql+pymysql://" + mysql_url.split("://", 1)[1], poolclass=NullPool)
    blocker = engine.connect()
    # the RENAME waits for this transaction; on a table without triggers, so that dropping the target's triggers
    # before the RENAME (orders_audit is on orders) does not wait for it
    blocker.execute(sa.text("SELECT COUNT(*) FROM audit")).scalar()

    def interrupt(_signum: int, _frame: object) -> None:
        raise TimeoutError("the soft time limit")

    def when_renaming() -> None:
        deadline = time.monotonic() + 120  # never hang the suite: without a waiting RENAME the test fails below
        with connect(mysql_url) as conn:
            while not conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                           "WHERE INFO LIKE 'RENAME TABLE%'")).scalar():
                if time.monotonic() > deadline:
                    blocker.rollback()
                    return
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGALRM)
        time.sleep(2)
        blocker.rollback()  # the application's transaction ends: the orphaned RENAME runs

    previous = signal.signal(signal.SIGALRM, interrupt)
    helper = threading.Thread(target=when_renaming)
    helper.start()
    try:
        with pytest.raises(Exception) as failed:
            run_job("dbjobs.restore", settings, {"backup": backup["id"], "confirmed": True})
    finally:
        helper.join()
        signal.signal(signal.SIGALRM, previous)
        blocker.close()
        engine.dispose()

    assert failed.type is RestoreError and "was interrupted" in str(failed.value)  # one line, no driver error
    # the server ended the waiting RENAME with its connection: the target is as it was, its trigger put back
    assert snapshot(mysql_url) == changed and mysql_objects(mysql_url) == changed_objects
    assert side_databases(mysql_url) == []
