"""PostgreSQL: `pg_dump -Fc -Z0` streamed out; restored by swap (pg_swap.py) or in place in one transaction.

The dump runs on a snapshot exported by our own connection, so the row counts recorded in
the manifest are exactly the rows in the dump even while the application keeps writing.

A swap restore loads a shadow database with parallel `pg_restore` sessions while the archive is
still decompressing (pg_load.py) and swaps it in by renaming (pg_swap.py). The
in-place restore, for where a swap cannot work, drops every user schema and loads the dump in
one transaction: it either commits the backup's exact state or rolls back to the database as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from sqlalchemy import text

from dbjobs.engines.base import (
    ServerConnector,
    ShadowLoad,
    Sink,
    Staging,
    counting_while,
    loads_nothing,
    major_version,
    require_tool,
    run_dump,
    run_restore,
    tool_version,
)
from dbjobs.engines.pg_archive import BlockCuts
from dbjobs.engines.pg_load import StreamingLoad
from dbjobs.engines.pg_swap import (
    LoadedCounts,
    PostgresSwapSite,
    clear_directory,
    count_rows,
    restore_env,
    swap_blocker,
)
from dbjobs.errors import ToolMissingError

if TYPE_CHECKING:
    from dbjobs.dburl import DatabaseURL

HINT = "the PostgreSQL client (Debian/Ubuntu: apt-get install postgresql-client)"
USER_TABLES = """
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
    ORDER BY 1
"""
# Drops every user schema and every large object (they belong to no schema), then recreates
# `public` with the owner and privileges it had: a plain CREATE SCHEMA would leave it owned by
# the restoring superuser with no USAGE for anyone else, locking the application's roles out
# (pg_dump records public's ownership and ACL only when they differ from the defaults).
DROP_USER_SCHEMAS = """DO $dbjobs$ DECLARE s text; owner regrole; acl aclitem[]; g record; BEGIN
  SELECT nspowner::regrole, nspacl INTO owner, acl FROM pg_namespace WHERE nspname = 'public';
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')
           AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
  CREATE SCHEMA public;
  IF owner IS NOT NULL THEN
    EXECUTE format('ALTER SCHEMA public OWNER TO %s', owner);
  END IF;
  FOR g IN SELECT grantee, privilege_type FROM aclexplode(acl) LOOP
    EXECUTE format('GRANT %s ON SCHEMA public TO %s', g.privilege_type,
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
  END LOOP;
END $dbjobs$;"""


class PostgresConnector(ServerConnector):
    """pg_dump/pg_restore/psql with libpq settings passed through the environment."""

    engine = "postgresql"
    swaps = True
    version_sql = "SHOW server_version"
    size_sql = "SELECT pg_database_size(current_database())"

    def _env(self) -> dict[str, str]:
        url = self.db.url
        env = {"PGDATABASE": url.database or "", "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "dbjobs"}
        for key, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                           ("PGPASSWORD", url.password)):
            if value:
                env[key] = str(value)
        for key, value in url.query.items():
            if key == "sslmode" and isinstance(value, str):
                env["PGSSLMODE"] = value
        return env

    def tool_versions(self) -> dict[str, str]:
        names = ("pg_dump", "pg_restore", "psql")
        tools = {name: tool_version(require_tool(name, install_hint=HINT)) for name in names}
        server = major_version(self.server_version())
        if major_version(tools["pg_dump"]) < server:
            raise ToolMissingError(
                f"{tools['pg_dump']} is older than the server (PostgreSQL {server}); "
                f"install pg_dump {server} or newer ({HINT})"
            )
        return tools

    def dump(self, sink: Sink) -> dict[str, int]:
        with self.connection() as conn:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar())
            tables = [row[0] for row in conn.execute(text(USER_TABLES))]
            # Counted on the exported snapshot, the one pg_dump reads: the counts are exactly the dump's rows.
            counts = counting_while(
                lambda: {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0) for t in tables},
                lambda: run_dump(["pg_dump", "-Fc", "-Z0", "--no-password", f"--snapshot={snapshot}"],
                                 self._env(), sink, "pg_dump"))
            conn.rollback()
        return counts

    def restore(self, chunks: Iterable[bytes], *, same_database: bool, staging: Staging | None = None) -> None:
        """Load the dump in one transaction that only the dump's own last line commits.

        `pg_restore --single-transaction -f -` wraps its script in BEGIN ... COMMIT, and psql runs
        without `--single-transaction`: should pg_restore die midway (a damaged archive), psql
        reaches the end of its input with the transaction still open and the server rolls it back.
        With `psql --single-transaction` psql itself would COMMIT at end of input, keeping a
        half-loaded database and the user schemas already dropped.
        """
        ownership = [] if same_database else ["--no-owner", "--no-privileges"]
        run_restore(
            [["pg_restore", "--single-transaction", "-f", "-", *ownership],
             ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
              "-c", "BEGIN; SET LOCAL client_min_messages = error", "-c", DROP_USER_SCHEMAS, "-f", "-"]],
            self._env(), chunks, "pg_restore into psql (the transaction was rolled back; the database is unchanged)",
        )

    def frame_cuts(self) -> BlockCuts:
        return BlockCuts()

    def row_counts(self, jobs: int = 1, skip: Collection[str] = ()) -> dict[str, int]:
        with self.connection() as conn:
            tables = [row[0] for row in conn.execute(text(USER_TABLES)) if row[0] not in skip]
        return count_rows(self.db, tables, jobs)

    def swap_blocker(self) -> str | None:
        with self.connection() as conn:
            return swap_blocker(self.db, conn)

    def swap_site(self, load: ShadowLoad | None) -> PostgresSwapSite:
        if load is None:
            return PostgresSwapSite(self.db, loads_nothing, loads_nothing)
        return PostgresSwapSite(self.db, lambda shadow: self._load_shadow(shadow, load), load.check)

    def _load_shadow(self, shadow: DatabaseURL, load: ShadowLoad) -> None:
        """Load the (new, empty) shadow with `load.jobs` pg_restore sessions: each decompressing its own frames of
        the backup where the manifest indexes them, else while the archive is still being decompressed into the
        work directory (pg_load.py)."""
        ownership = [] if load.same_database else ["--no-owner", "--no-privileges"]
        env = {**PostgresConnector(shadow)._env(), **restore_env()}
        directory = clear_directory(load.work_dir)
        load.counted.clear()  # a reload (of a shadow a killed run left) counts again
        try:
            with LoadedCounts(shadow, load.counted) as counts:
                streaming = StreamingLoad(
                    directory, env, [*ownership, "-d", shadow.database], load.jobs,
                    f"pg_restore of {load.name} into a shadow database (dropped; the database is unchanged)",
                    loaded=counts.loaded)
                if load.frames is not None:
                    streaming.run_framed(load.frames, load.progress)
                else:
                    streaming.run(load.chunks(), load.name)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
