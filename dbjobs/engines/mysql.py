"""MySQL/MariaDB: `mariadb-dump --single-transaction` streamed out, the `mariadb` client streamed in.

MySQL commits DDL implicitly, so a restore cannot be one transaction. All or nothing is kept by
compensation instead: the restore job takes a safety backup first, and if loading fails this
connector's caller loads the safety backup back (see `dbjobs.restore`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import text

from dbjobs.engines.base import (
    ServerConnector,
    Sink,
    counting_while,
    require_tool,
    run_dump,
    run_restore,
    tool_version,
)

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


class MySQLConnector(ServerConnector):
    """mariadb-dump (or mysqldump) and the mariadb (or mysql) client, password in an option file."""

    engine = "mysql"
    version_sql = "SELECT VERSION()"
    size_sql = ("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE()")

    def _tools(self) -> tuple[str, str]:
        return (require_tool("mariadb-dump", "mysqldump", install_hint=HINT),
                require_tool("mariadb", "mysql", install_hint=HINT))

    @contextmanager
    def _options_file(self) -> Iterator[str]:
        """A 0600 option file with the credentials, removed on every exit path."""
        url = self.db.url
        lines = ["[client]", f"host={url.host or 'localhost'}", f"port={url.port or 3306}",
                 f"user={url.username or 'root'}", "default-character-set=utf8mb4"]
        if url.password:  # quoted, with the option file's escapes, so '#', quotes and spaces survive
            lines.append('password="{}"'.format(url.password.replace("\\", "\\\\").replace('"', '\\"')))
        fd, path = tempfile.mkstemp(prefix="dbjobs-", suffix=".cnf")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            yield path
        finally:
            os.unlink(path)

    def tool_versions(self) -> dict[str, str]:
        dump, client = self._tools()
        self.server_version()
        return {os.path.basename(dump): tool_version(dump), os.path.basename(client): tool_version(client)}

    def dump(self, sink: Sink) -> dict[str, int]:
        """Stream `mariadb-dump --single-transaction`; the row counts are close, not exact, under writes.

        MySQL cannot share a snapshot between connections, so the counts come from our own
        consistent snapshot taken just before mariadb-dump opens its own: exact on a quiet
        database, off by the rows committed in between on a busy one. The dump itself is consistent.
        """
        dump, _ = self._tools()
        with self.connection() as conn, self._options_file() as options:
            conn.execute(text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
            tables = [r[0] for r in conn.execute(text(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"))]
            # InnoDB counts by scanning: done on our snapshot while mariadb-dump streams, not before it.
            counts = counting_while(
                lambda: {t: int(conn.execute(text(f"SELECT COUNT(*) FROM `{t}`")).scalar() or 0) for t in tables},
                lambda: run_dump([dump, f"--defaults-extra-file={options}", "--single-transaction", "--quick",
                                  "--routines", "--triggers", "--events", "--hex-blob", "--no-tablespaces",
                                  "--skip-dump-date", self.db.database], {}, sink, os.path.basename(dump)))
            conn.rollback()
        return counts

    def restore(self, chunks: Iterable[bytes], *, same_database: bool) -> None:
        _, client = self._tools()

        def with_prelude() -> Iterator[bytes]:
            yield DROP_ALL.encode()
            yield from chunks

        with self._options_file() as options:
            run_restore([[client, f"--defaults-extra-file={options}", "--binary-mode", "--database", self.db.database]],
                        {}, with_prelude(), os.path.basename(client))
