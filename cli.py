"""dbjobs command line: parse options, submit a job (or run it in-process), show progress and the result.

No business logic lives here: every command names a job from `dbjobs.jobs` and its JSON
arguments. Imports are kept lazy so `--help` and task submission start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

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
    text = (f"backup {r['id']} of {r['database']} ({r['engine']} {r['server_version']})\n"
            f"  file     {r['path']}\n"
            f"  size     {human_size(r['size'])} (raw {human_size(r['raw_size'])}), {r['seconds']} s\n"
            f"  sha256   {r['sha256']}\n"
            f"  tables   {len(r['row_counts'])}, rows {sum(r['row_counts'].values())}")
    upload = r.get("upload")
    if upload:
        text += (f"\n  upload   {upload['location']}" if upload["ok"] else
                 f"\n  upload   FAILED ({upload['error']}); the local backup is complete and kept")
    return text


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
    kwargs = {"database": args.database, "output_dir": args.output_dir, "upload": args.upload}
    return submit(args, "dbjobs.backup", kwargs, render_backup)


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


def render_cleanup(r: dict[str, Any]) -> str:
    """Each deleted (or, in a dry run, doomed and kept) backup with its reasons, then a summary line."""
    verb = "would delete" if r["dry_run"] else "deleted"
    lines = [f"{verb:<12} {d['id']}  ({'; '.join(d['reasons'])})" for d in r["deleted"]]
    summary = "would be deleted" if r["dry_run"] else "deleted"
    if r["dry_run"]:
        lines += [f"{'keep':<12} {k['id']}  ({'; '.join(k['reasons'])})" for k in r["kept"]]
    lines += [f"{'finished' if not r['dry_run'] else 'would finish'} interrupted deletion of {i}"
              for i in r["interrupted_deletions"]]
    lines += [f"skipped: {p}" for p in r["skipped"]]
    lines.append(f"{len(r['deleted'])} backup(s) {summary} ({human_size(r['freed_bytes'])}), {len(r['kept'])} kept"
                 + (" (dry run: nothing was changed)" if r["dry_run"] else ""))
    return "\n".join(lines)


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Submit `dbjobs.cleanup`; unset keep options fall back to BACKUP_KEEP_DAYS/BACKUP_MIN_KEEP in the job."""
    kwargs = {"database": args.database, "backup_dir": args.backup_dir, "keep_days": args.keep_days,
              "min_keep": args.min_keep, "keep_last": args.keep_last, "keep_daily": args.keep_daily,
              "keep_weekly": args.keep_weekly, "keep_monthly": args.keep_monthly, "dry_run": args.dry_run}
    return submit(args, "dbjobs.cleanup", kwargs, render_cleanup)


def render_status(r: dict[str, Any]) -> str:
    """The report for a person: one line per database, backups and disk, broker, then every finding."""
    lines = []
    for db in r["databases"]:
        state = (f"{db['engine']} {db['version']}, {human_size(db['size'])}" if db["reachable"]
                 else f"UNREACHABLE: {db['error']}")
        b = r["backups"]["databases"].get(db["alias"], {})
        newest = f"newest {b['newest_age_hours']} h old" if b.get("newest") else "no backup"
        lines.append(f"database {db['alias']:<12} {state}; {b.get('count', 0)} backups, {newest}")
    lines.append(f"backups  {r['backups']['count']} in all, {human_size(r['backups']['total_size'])}; "
                 f"disk {r['disk']['free_percent']}% free ({human_size(r['disk']['free'])}) at {r['disk']['path']}")
    broker = r.get("broker", {})
    if broker.get("configured"):
        lines.append(f"broker   {'reachable' if broker['reachable'] else 'UNREACHABLE'}; "
                     f"workers: {', '.join(broker.get('workers', [])) or 'none'}")
    else:
        lines.append("broker   not configured: jobs run in-process")
    lines += [f"{c['level']:<8} {c['message']}" for c in r["checks"]]
    lines.append(f"health: {r['health']}")
    return "\n".join(lines)


def ping_broker(url: str) -> None:
    """Raise a DbjobsError unless the Redis broker answers a PING."""
    import redis

    from dbjobs.errors import DbjobsError

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise DbjobsError(f"broker at {url.split('@')[-1]} is unreachable: {exc}") from None


def ping_workers(url: str) -> list[str]:
    """Names of the Celery workers that answer a ping within a second."""
    import celery

    app = celery.Celery(broker=url)
    try:
        return sorted(name for reply in app.control.ping(timeout=1) for name in reply)
    finally:
        app.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Run the status job, add the broker and workers as this process sees them, exit with the health code."""
    from dbjobs.jobs import run_job
    from dbjobs.status import add_section, broker_section, exit_code

    settings = load_settings()
    kwargs = {"database": args.database, "backup_dir": args.backup_dir, "min_free_percent": args.min_free_percent}
    report = run_job("dbjobs.status", settings, kwargs)
    url = settings.broker_url or ""
    report = add_section(report, "broker", *broker_section(bool(url), lambda: ping_broker(url),
                                                             lambda: ping_workers(url)))
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else render_status(report))
    return exit_code(report)


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= `minimum`, with a clear message otherwise."""

    def parse(text: str) -> int:
        """Parse one option value."""
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def job_options(p: argparse.ArgumentParser) -> None:
    """Options every job command shares."""
    p.add_argument("--wait", action="store_true",
                   help="wait for the task to finish, showing progress, and print its result "
                        "(without it, print the task id and return; always waits when running in-process)")
    p.add_argument("--json", action="store_true", help="print the result as JSON for scripts")


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar fixed by the spec."""
    parser = argparse.ArgumentParser(
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
    p.add_argument("--upload", action="store_true",
                   help="also upload the backup to Supabase Storage (SUPABASE_URL, SUPABASE_KEY, SUPABASE_BUCKET); "
                        "a failed upload keeps the local backup and is reported")
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

    p = sub.add_parser("cleanup", help="delete old backups by the retention rules",
                       description="Delete backups older than --keep-days, always keeping the --min-keep newest of "
                       "each database and whatever a GFS rule keeps, here and in Supabase Storage when configured. "
                       "Only complete backups (valid manifest and file) are ever deleted.")
    p.add_argument("--backup-dir", metavar="DIR", help="directory to clean (default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--keep-days", type=non_negative_int, metavar="N",
                   help="delete backups older than N days (default: $BACKUP_KEEP_DAYS or 30)")
    p.add_argument("--min-keep", type=non_negative_int, metavar="N",
                   help="always keep the N newest backups of each database (default: $BACKUP_MIN_KEEP or 5)")
    for unit, what in (("last", "the N newest backups"), ("daily", "the newest backup of each of the last N days"),
                       ("weekly", "the newest backup of each of the last N ISO weeks"),
                       ("monthly", "the newest backup of each of the last N months")):
        p.add_argument(f"--keep-{unit}", type=non_negative_int, default=0, metavar="N",
                       help=f"also keep {what} that have backups, per database (default: 0, off)")
    p.add_argument("--database", metavar="ALIAS", help="only clean backups of this alias (default: all)")
    p.add_argument("--dry-run", action="store_true",
                   help="change nothing; show what would be deleted and why each kept backup is kept")
    job_options(p)
    p.set_defaults(handler=cmd_cleanup)

    p = sub.add_parser("status", help="health of databases, backups, disk, broker and workers",
                       description="Report database reachability, engine, version and size; backup count, newest "
                       "age and total size; free disk space; the last job outcomes; schema drift and pending "
                       "migrations; broker and workers. Exit code: 0 ok, 1 warning, 2 critical.")
    p.add_argument("--database", metavar="ALIAS", help="only this alias (default: every configured alias)")
    p.add_argument("--backup-dir", metavar="DIR", help="backup directory (default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--min-free-percent", type=float, default=10.0, metavar="P",
                   help="warn when less than P%% of the backup disk is free, critical under P/5 (default: 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON for monitoring")
    p.set_defaults(handler=cmd_status)
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
