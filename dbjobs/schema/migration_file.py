"""The migration file: `NNNN_<timestamp>_<slug>.sql`, readable and editable by a person.

    -- dbjobs migration 0002_20261127T214500_add_column_users_email
    -- engine: postgresql
    -- from: <fingerprint of the schema it starts from>
    -- to: <fingerprint of the schema it produces>
    -- shape: <the same two, constraint names aside: what apply-migration compares with the database>
    -- warning[destructive]: drops column users.email and its data
    -- +dbjobs forward
    ALTER TABLE users ADD COLUMN email VARCHAR(200);
    -- +dbjobs reverse
    ALTER TABLE users DROP COLUMN email;

Parsing is strict about the structure (engine, both markers) and lenient about the SQL in
between, which is split on `;` outside quotes and comments.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dbjobs.errors import MigrationError
from dbjobs.schema.lint import DESTRUCTIVE, LintWarning
from dbjobs.schema.render import REBUILD_PREFIX
from dbjobs.schema.sqlparse import split_statements, terminated

FORWARD, REVERSE = "-- +dbjobs forward", "-- +dbjobs reverse"
NAME_RE = re.compile(r"^(\d{4})_\d{8}T\d{6}_[a-z0-9_]+$")
_HEADER = re.compile(r"^--\s*([a-z_]+)(?:\[([a-z]+)\])?:\s*(.*)$")
_DROP = re.compile(r"^\s*(?:ALTER\s+TABLE\s+\S+\s+DROP\s+(?:COLUMN\s+)?(?!CONSTRAINT|INDEX|CHECK|FOREIGN|PRIMARY|"
                   r"DEFAULT)\S+|DROP\s+TABLE\s+(\S+)|TRUNCATE\b|DELETE\s+FROM\b)", re.IGNORECASE)
_REBUILT = re.compile(rf"^\s*ALTER\s+TABLE\s+\S*{REBUILD_PREFIX}\S*\s+RENAME\s+TO\s+(\S+)\s*$", re.IGNORECASE)
ENGINES = ("postgresql", "mysql", "sqlite")


@dataclass(frozen=True)
class MigrationFile:
    """A parsed migration: where it starts and ends, what to review, and its two scripts."""

    name: str
    engine: str
    from_fingerprint: str | None
    to_fingerprint: str | None
    warnings: list[LintWarning] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    reverse: list[str] = field(default_factory=list)
    shapes: tuple[str, str] | None = None

    @property
    def checksum(self) -> str:
        """SHA-256 of the forward statements: an edit to what runs changes it, comments and spacing do not."""
        return hashlib.sha256("\n;\n".join(s.strip() for s in self.forward).encode()).hexdigest()

    def to_text(self) -> str:
        """The file's content."""
        lines = [f"-- dbjobs migration {self.name}", f"-- engine: {self.engine}",
                 f"-- from: {self.from_fingerprint or 'none'}", f"-- to: {self.to_fingerprint or 'none'}"]
        if self.shapes:
            lines.append(f"-- shape: {self.shapes[0]} -> {self.shapes[1]}")
        lines += [f"-- warning[{w.category}]: {w.message}" for w in self.warnings]
        lines += ["-- Statements end with ';'. Edit them if needed before applying; an applied file must not change.",
                  "", FORWARD, *map(terminated, self.forward), "", REVERSE, *map(terminated, self.reverse), ""]
        return "\n".join(lines)

    def destructive_statements(self) -> list[str]:
        """Forward statements that delete data, whatever the header says (the file may have been edited).

        The DROP TABLE of a SQLite rebuild is not one: the rows were copied to the table renamed
        into its place.
        """
        rebuilt = set(rebuilt_tables(self.forward))
        found = []
        for statement in self.forward:
            match = _DROP.match(statement)
            if match and not (match.group(1) and match.group(1).strip('`"') in rebuilt):
                found.append(statement)
        return found

    @property
    def destructive(self) -> bool:
        """Whether applying needs `allow_destructive`."""
        return any(w.category == DESTRUCTIVE for w in self.warnings) or bool(self.destructive_statements())


def rebuilt_tables(statements: list[str]) -> list[str]:
    """Tables a SQLite rebuild puts in place (`ALTER TABLE _dbjobs_new_x RENAME TO x`)."""
    return [m.group(1).strip('`"') for m in (_REBUILT.match(s) for s in statements) if m]


def parse_migration(text: str, name: str) -> MigrationFile:
    """Parse a migration file's text; a file that is not one is a `MigrationError` saying what is missing."""
    if FORWARD not in text or REVERSE not in text or text.index(FORWARD) > text.index(REVERSE):
        raise MigrationError(f"{name}: not a dbjobs migration (needs '{FORWARD}' then '{REVERSE}' sections); "
                             "generate one with detect-migrations")
    head, rest = text.split(FORWARD, 1)
    forward, reverse = rest.split(REVERSE, 1)
    header: dict[str, str] = {}
    warnings = []
    for line in head.splitlines():
        match = _HEADER.match(line.strip())
        if match and match.group(1) == "warning":
            warnings.append(LintWarning(match.group(2) or "", match.group(3)))
        elif match:
            header[match.group(1)] = match.group(3).strip()
    engine = header.get("engine", "")
    if engine not in ENGINES:
        raise MigrationError(f"{name}: header '-- engine:' must be one of {', '.join(ENGINES)}, got {engine!r}")

    def fingerprint(key: str) -> str | None:
        value = header.get(key, "none")
        return None if value == "none" else value

    shape = header.get("shape", "").split(" -> ")
    return MigrationFile(name, engine, fingerprint("from"), fingerprint("to"), warnings,
                         split_statements(forward), split_statements(reverse),
                         (shape[0].strip(), shape[1].strip()) if len(shape) == 2 else None)


def read_migration(path: Path) -> MigrationFile:
    """Read and parse a migration file from disk."""
    if not path.is_file():
        raise MigrationError(f"migration file {path} does not exist; check the path (see `status` for pending ones)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"cannot read migration file {path}: {exc}") from None
    return parse_migration(text, path.stem)


def migration_files(schema_dir: Path) -> list[Path]:
    """The migration files in a schema directory, in order."""
    return sorted(p for p in schema_dir.glob("*.sql") if NAME_RE.match(p.stem)) if schema_dir.is_dir() else []


def file_engine(path: Path) -> str | None:
    """The `-- engine:` of a migration file's header (None when unreadable or missing): files of other
    engines in a shared schema directory are not pending on this database."""
    try:
        with path.open(encoding="utf-8") as handle:
            for _, line in zip(range(12), handle, strict=False):
                match = _HEADER.match(line.strip())
                if match and match.group(1) == "engine":
                    return match.group(3).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return None


def next_migration_name(schema_dir: Path, slug: str, now: datetime) -> str:
    """`NNNN_<timestamp>_<slug>`, numbered after the highest existing file."""
    numbers = [int(NAME_RE.match(p.stem).group(1)) for p in migration_files(schema_dir)]  # type: ignore[union-attr]
    clean = re.sub(r"[^a-z0-9]+", "_", slug.lower()).strip("_")[:60] or "change"
    return f"{max(numbers, default=0) + 1:04d}_{now.strftime('%Y%m%dT%H%M%S')}_{clean}"
