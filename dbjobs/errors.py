"""The exceptions a user sees: each carries a message that says what was wrong and what to do.

The CLI prints `str(error)` on one line and exits with `error.exit_code`; workers return it as
a failed result. Anything that is not a `DbjobsError` is a bug and keeps its traceback.
"""


class DbjobsError(Exception):
    """Base of every user-facing failure."""

    exit_code = 1


class ConfigError(DbjobsError):
    """A setting is missing or malformed; the message names the variable."""

    exit_code = 2


class UnknownDatabaseError(ConfigError):
    """A job named a database alias that is not configured."""


class ToolMissingError(DbjobsError):
    """A client tool (pg_dump, mariadb-dump, ...) is absent or too old for the server."""


class DatabaseUnavailableError(DbjobsError):
    """The database server cannot be reached or refused the connection."""


class BackupError(DbjobsError):
    """Taking a backup failed; no partial file was left behind."""


class BackupNotFoundError(DbjobsError):
    """No complete backup (file plus manifest) matches the given name or id."""


class BackupInvalidError(DbjobsError):
    """A backup failed verification (checksum, size, manifest, engine); it is not restored."""


class RestoreError(DbjobsError):
    """A restore failed; the message says what state the database was left in."""


class ConfirmationRequired(DbjobsError):
    """A destructive job was not confirmed."""


class JobLockedError(DbjobsError):
    """Another job holds the lock on the same database."""


class BrokerUnavailableError(DbjobsError):
    """The Celery broker or result backend (Redis) cannot be reached."""


class TaskFailedError(DbjobsError):
    """A submitted task failed, was revoked, or its id is unknown."""


class JobTimeoutError(DbjobsError):
    """A job ran past its time limit and was stopped."""


class StorageError(DbjobsError):
    """A storage backend (local directory, Supabase) failed."""


class MigrationError(DbjobsError):
    """A migration could not be generated or applied; the message names the statement."""


class LockLostError(DbjobsError):
    """A running job lost its database lock (Redis restarted empty or failed over) and stopped before its next step."""
