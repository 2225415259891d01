"""MySQL/MariaDB: `mariadb-dump --single-transaction` streamed out, the `mariadb` client streamed in.

MySQL commits DDL implicitly, so a restore cannot be one transaction. All or nothing is kept by
compensation instead: the restore job takes a safety backup first, and if loading fails this
connector's caller loads the safety backup back (see `dbjobs.restore`). The client tools get
their credentials through an inherited pipe read as
`--defaults-extra-file=/dev/fd/N`: nothing is written to disk, so a killed job leaves no secret.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from dbjobs.engines.base import (
    ServerConnector,
    ShadowLoad,
    Sink,
    Staging,
    counting_while,
    loads_nothing,
    require_tool,
    run_dump,
    run_restore,
    tool_version,
)

if TYPE_CHECKING:
    from dbjobs.swap import SwapSite

HINT = "the MariaDB client (Debian/Ubuntu: apt-get install mariadb-client)"
# group_concat_max_len is raised first: MySQL's default (1024 bytes) would cut the list of names
# after a few dozen tables, leaving tables behind or producing a broken DROP.
DROP_ALL = """
SET SESSION group_concat_max_len = 67108864;
SET FOREIGN_KEY_CHECKS=0;
SET @dbjobs_views = (SELECT GROUP_CONCAT(CONCAT('`', TABLE_NAME, '`')) FROM information_schema.VIEWS
                     WHERE TABLE_SCHEMA = DATABASE());
SET @s = IF(@dbjobs_views IS NULL, 'DO 0', CONCAT('DROP VIEW IF EXISTS ', @dbjobs_views));
PREPARE st FROM @s; EXECUTE st; DEALLOCATE PREPARE st;
SET @dbjobs_tables = (SELECT GROUP_CONCAT(CONCAT('`', TABLE_NAME, '`')) FROM information_schema.TABLES
                      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE');
SET @s = IF(@dbjobs_tables IS NULL, 'DO 0', CONCAT('DROP TABLE IF EXISTS ', @dbjobs_tables));
PREPARE st FROM @s; EXECUTE st; DEALLOCATE PREPARE st;
SET FOREIGN_KEY_CHECKS=1;
"""


FREEZE_WAIT = 5  # seconds FLUSH TABLES WITH READ LOCK may wait; writers queue behind it meanwhile
# mariadb-dump has opened its snapshot once it writes any of these (its banner comes before)
STARTED = (b"\n-- Table structure for", b"\n-- Dumping routines", b"\n-- Dumping events", b"-- Dump completed")


def _freeze(conn: Connection) -> bool:
    """Stop commits for a moment (a global read lock); False when the server does not grant it."""
    try:
        conn.execute(text(f"SET SESSION lock_wait_timeout = {FREEZE_WAIT}"))
        conn.execute(text("FLUSH TABLES WITH READ LOCK"))
    except DBAPIError:
        return False
    return True


class _Thaw:
    """A sink that releases the global read lock once mariadb-dump's output shows its snapshot is open."""

    def __init__(self, conn: Connection, sink: Sink) -> None:
        self.conn, self.sink, self.held, self.seen = conn, sink, True, b""

    def __call__(self, chunk: bytes | memoryview) -> None:
        if self.held:
            self.seen = (self.seen + bytes(chunk))[-(1 << 16):]
            if any(marker in self.seen for marker in STARTED):
                self.release()
        self.sink(chunk)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.conn.execute(text("UNLOCK TABLES"))


class MySQLConnector(ServerConnector):
    """mariadb-dump (or mysqldump) and the mariadb (or mysql) client, password in an option file."""

    engine = "mysql"
    swaps = True
    version_sql = "SELECT VERSION()"
    size_sql = ("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE()")

    def _tools(self) -> tuple[str, str]:
        return (require_tool("mariadb-dump", "mysqldump", install_hint=HINT),
                require_tool("mariadb", "mysql", install_hint=HINT))

    @contextmanager
    def _options(self) -> Iterator[tuple[str, int]]:
        """The `--defaults-extra-file=/dev/fd/N` argument and the pipe's read end N for the child to inherit.

        The options are written into the pipe before the tool starts (they are far below the
        pipe's buffer) and only its read end is left open; the kernel frees it with the last
        process holding it, so even a SIGKILL leaves nothing behind.
        """
        url = self.db.url
        lines = ["[client]", f"host={url.host or 'localhost'}", f"port={url.port or 3306}",
                 f"user={url.username or 'root'}", "default-character-set=utf8mb4"]
        if url.password:  # quoted, with the option file's escapes, so '#', quotes and spaces survive
            lines.append('password="{}"'.format(url.password.replace("\\", "\\\\").replace('"', '\\"')))
        read, write = os.pipe()
        try:
            with os.fdopen(write, "w") as f:
                f.write("\n".join(lines) + "\n")
            yield f"--defaults-extra-file=/dev/fd/{read}", read
        finally:
            os.close(read)

    def client_load(self, database: str, chunks: Iterable[bytes | memoryview], what: str | None = None) -> None:
        """Feed SQL into the `mariadb` client connected to `database`; RestoreError saying `what` failed."""
        _, client = self._tools()
        with self._options() as (option, fd):
            run_restore([[client, option, "--binary-mode", "--database", database]], {}, chunks,
                        what or os.path.basename(client), pass_fds=(fd,))

    def tool_versions(self) -> dict[str, str]:
        dump, client = self._tools()
        self.server_version()
        return {os.path.basename(dump): tool_version(dump), os.path.basename(client): tool_version(client)}

    def dump(self, sink: Sink) -> dict[str, int]:
        """Stream `mariadb-dump --single-transaction` with row counts of the very snapshot it dumps.

        MySQL cannot share a snapshot between connections, so for an instant no transaction may
        commit: a second connection holds `FLUSH TABLES WITH READ LOCK` (as `mariadb-dump
        --master-data` does) while ours and then mariadb-dump's snapshot are opened, and releases
        it as soon as mariadb-dump writes its first table. Both snapshots then see the same
        commits, so the counts are exactly the dump's rows and a restore can check them. Without
        the RELOAD privilege (or if the lock is not granted within a few seconds) the counts come
        from our snapshot alone, may differ by the rows committed in between, and the manifest
        says so (`extra.row_counts_exact: false`).
        """
        dump, _ = self._tools()
        with self.connection() as conn, self.connection() as freezer, self._options() as (option, fd):
            self.counts_exact = _freeze(freezer)
            conn.execute(text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
            tables = [r[0] for r in conn.execute(text(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"))]
            thaw = _Thaw(freezer, sink) if self.counts_exact else None
            try:
                # InnoDB counts by scanning: done on our snapshot while mariadb-dump streams, not before it.
                counts = counting_while(
                    lambda: {t: int(conn.execute(text(f"SELECT COUNT(*) FROM `{t}`")).scalar() or 0) for t in tables},
                    lambda: run_dump([dump, option, "--single-transaction", "--quick",
                                      "--routines", "--triggers", "--events", "--hex-blob", "--no-tablespaces",
                                      "--skip-dump-date", self.db.database], {}, thaw or sink,
                                     os.path.basename(dump), pass_fds=(fd,)))
            finally:
                if thaw is not None:
                    thaw.release()
            conn.rollback()
        return counts

    def row_counts(self, jobs: int = 1, skip: Collection[str] = ()) -> dict[str, int]:
        from dbjobs.engines.mysql_swap import row_counts, session

        with session(self.db) as s:
            return row_counts(s, self.db.database, skip)

    def swap_blocker(self) -> str | None:
        from dbjobs.engines.mysql_swap import session, swap_blocker

        with session(self.db) as s:
            return swap_blocker(s, self.db.database)

    def swap_site(self, load: ShadowLoad | None) -> SwapSite:
        from dbjobs.engines.mysql_swap import MySQLSwapSite

        if load is None:
            return MySQLSwapSite(self, loads_nothing, loads_nothing)
        what = f"loading {load.name} into a shadow database (dropped; the database is unchanged)"
        return MySQLSwapSite(self, lambda shadow: self.client_load(shadow.database, load.chunks(), what), load.check)

    def restore(self, chunks: Iterable[bytes], *, same_database: bool, staging: Staging | None = None) -> None:
        def with_prelude() -> Iterator[bytes]:
            yield DROP_ALL.encode()
            yield from chunks

        self.client_load(self.db.database, with_prelude())
