"""dbjobs command line: parse options, submit a job (or run it in-process), show progress and the result.

No business logic lives here: every command names a job from `dbjobs.jobs` and its JSON
arguments. Imports are kept lazy so `--help` and task submission start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from dbjobs.errors import ConfirmationRequired, DbjobsError
from dbjobs.settings import Settings, load_settings
from dbjobs.terminal import ProgressBar, human_size

Renderer = Callable[[dict[str, Any]], str]


def execute(settings: Settings, name: str, kwargs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    """Run job `name` in this process (no broker configured); return its result."""
    from dbjobs.jobs import run_job

    print(f"note: DBJOBS_BROKER_URL is not set; running {name} in this process", file=sys.stderr)
    bar = ProgressBar()
    try:
        return run_job(name, settings, kwargs, bar)
    finally:
        bar.close()


def submit(args: argparse.Namespace, name: str, kwargs: dict[str, Any], render: Renderer) -> int:
    """Run or submit a job, then print its result as text or JSON."""
    settings = load_settings()
    result = execute(settings, name, kwargs, args)
    if result is None:
        return 0
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else render(result))
    return 0


def render_backup(r: dict[str, Any]) -> str:
    return (f"backup {r['id']} of {r['database']} ({r['engine']} {r['server_version']})\n"
            f"  file     {r['path']}\n"
            f"  size     {human_size(r['size'])} (raw {human_size(r['raw_size'])}), {r['seconds']} s\n"
            f"  sha256   {r['sha256']}\n"
            f"  tables   {len(r['row_counts'])}, rows {sum(r['row_counts'].values())}")


def render_restore(r: dict[str, Any]) -> str:
    safety = f"; safety backup {r['safety_backup_id']}" if r["safety_backup_id"] else ""
    return f"restored {r['backup_id']} into {r['database']} in {r['seconds']} s{safety}"


def render_list(r: dict[str, Any]) -> str:
    lines = [f"{'ID':<44} {'FINISHED (UTC)':<20} {'DATABASE':<12} {'ENGINE':<10} {'SIZE':>10}  SHA256        LOCATION"]
    for b in r["backups"]:
        lines.append(f"{b['id']:<44} {b['finished_at'][:19].replace('T', ' '):<20} {b['database']:<12} "
                     f"{b['engine']:<10} {human_size(b['size']):>10}  {b['sha256'][:12]}  {b['location']}")
    if not r["backups"]:
        lines = ["no backups found"]
    lines.append(f"{len(r['backups'])} of {r['total']} backups shown")
    lines.extend(f"skipped: {p}" for p in r["skipped"])
    return "\n".join(lines)


def cmd_backup(args: argparse.Namespace) -> int:
    return submit(args, "dbjobs.backup", {"database": args.database, "output_dir": args.output_dir}, render_backup)


def confirm(question: str) -> bool:
    """Ask on a terminal; without one, refuse (a script must pass --yes)."""
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def cmd_restore(args: argparse.Namespace) -> int:
    target = args.database or "the database it was taken from"
    if not args.yes and not confirm(f"Restore {args.backup} into {target}? Its current contents will be replaced"):
        raise ConfirmationRequired("restore not confirmed; nothing was changed (pass --yes to skip the question)")
    kwargs = {"backup": args.backup, "database": args.database, "backup_dir": args.backup_dir, "confirmed": True}
    return submit(args, "dbjobs.restore", kwargs, render_restore)


def cmd_list_backups(args: argparse.Namespace) -> int:
    kwargs = {"backup_dir": args.backup_dir, "limit": args.limit, "database": args.database}
    return submit(args, "dbjobs.list_backups", kwargs, render_list)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1, with a clear message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line `error: ...` for bad usage instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        """Print what was wrong and where to look, then exit 2 like argparse."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def job_options(p: argparse.ArgumentParser) -> None:
    """Options every job command shares."""
    p.add_argument("--wait", action="store_true",
                   help="wait for the task to finish, showing progress, and print its result "
                        "(without it, print the task id and return; always waits when running in-process)")
    p.add_argument("--json", action="store_true", help="print the result as JSON for scripts")


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar fixed by the spec."""
    parser = Parser(
        prog="dbjobs", description="Back up, restore and migrate SQL databases with Celery jobs. "
        "Configuration comes from DBJOBS_* environment variables or a .env file.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backup", help="take a full, compressed, checksummed backup",
                       description="Take a full backup: streamed, zstd-compressed, SHA-256 checksummed, "
                       "with a manifest.")
    p.add_argument("--database", default="default", metavar="ALIAS",
                   help="database alias to back up (default: default)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="where to write the backup (default: $DBJOBS_BACKUP_DIR or ./backups)")
    job_options(p)
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser("restore", help="restore a backup (verified first, all or nothing)",
                       description="Verify a backup's checksum and engine, take a safety backup of the target, "
                       "then replace the target's contents; a failed restore leaves the database as it was.")
    p.add_argument("backup", metavar="BACKUP", help="backup id (see list-backups) or path to a .dump.zst file")
    p.add_argument("--database", metavar="ALIAS",
                   help="alias to restore into (default: the alias the backup was taken from)")
    p.add_argument("--backup-dir", metavar="DIR", help="where to find backups by id and put the safety backup "
                   "(default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    job_options(p)
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser("list-backups", help="list complete backups, newest first",
                       description="List backups that have a valid manifest, newest first.")
    p.add_argument("--backup-dir", metavar="DIR", help="directory to list (default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--limit", type=positive_int, default=10, metavar="N", help="show at most N backups (default: 10)")
    p.add_argument("--database", metavar="ALIAS", help="only backups of this alias")
    job_options(p)
    p.set_defaults(handler=cmd_list_backups)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python cli.py` and the `dbjobs` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DbjobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
