"""dbjobs command line: parse options, submit a job (or run it in-process), show progress and the result.

No business logic lives here: every command names a job from `dbjobs.jobs` and its JSON
arguments. Imports are kept lazy so `--help` and task submission start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from dbjobs import __version__
from dbjobs.errors import ConfigError, ConfirmationRequired, DbjobsError
from dbjobs.progress import Progress
from dbjobs.settings import Settings, load_settings
from dbjobs.terminal import ProgressBar, human_size

Renderer = Callable[[dict[str, Any]], str]


def execute(settings: Settings, name: str, kwargs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    """Submit job `name` to the workers (or, with no broker configured, run it here); return its result.

    Without `--wait` a submitted job's id is printed and None returned.
    """
    if settings.broker_url:
        from workers.client import submit

        task_id = submit(name, kwargs)
        if not args.wait:
            print(json.dumps({"task_id": task_id, "name": name}) if args.json else task_id)
            print(f"submitted {name} as task {task_id}; `dbjobs result {task_id} --wait` shows its result",
                  file=sys.stderr)
            return None
        print(f"submitted {name} as task {task_id}; waiting for it (Ctrl-C stops waiting, not the job)",
              file=sys.stderr, flush=True)
        return wait_for(task_id, settings)
    from dbjobs.jobs import run_job

    print(f"note: DBJOBS_BROKER_URL is not set; running {name} in this process", file=sys.stderr)
    bar = ProgressBar()
    try:
        return run_job(name, settings, kwargs, bar)
    finally:
        bar.close()


@contextmanager
def about_task(task_id: str) -> Iterator[None]:
    """Tag an error raised while handling a task with its id, for `{"error": ..., "task_id": ...}` under --json."""
    try:
        yield
    except DbjobsError as exc:
        exc.task_id = task_id  # type: ignore[attr-defined]
        raise


def wait_for(task_id: str, settings: Settings) -> dict[str, Any]:
    """Wait for a submitted task, drawing its progress; return its result or raise its error.

    Ctrl-C stops the waiting, not the job: one line says how to pick it up again.
    """
    from workers.client import wait

    bar = ProgressBar()
    said: set[str] = set()

    def notice(text: str) -> None:
        bar.close()
        print(f"note: {text}", file=sys.stderr, flush=True)

    def progress(p: Progress) -> None:
        if p.detail and p.detail not in said:
            said.add(p.detail)
            notice(p.detail)
        bar(p)

    try:
        with about_task(task_id):
            return wait(task_id, progress, notice, reconnect_for=settings.wait_reconnect).result or {}
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped waiting; task {task_id} keeps running: `dbjobs result {task_id} --wait` follows it",
              file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        bar.close()


def submit(args: argparse.Namespace, name: str, kwargs: dict[str, Any], render: Renderer) -> int:
    """Run or submit a job, then print its result as text or JSON."""
    settings = load_settings()
    result = execute(settings, name, kwargs, args)
    if result is not None:
        show(args, result, render)
    return 0


def show(args: argparse.Namespace, result: dict[str, Any], render: Renderer) -> None:
    """Print a job's result as text, or as JSON with --json."""
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else render(result))


def render_backup(r: dict[str, Any]) -> str:
    text = (f"backup {r['id']} of {r['database']} ({r['engine']} {r['server_version']})\n"
            f"  file     {r['path']}\n"
            f"  size     {human_size(r['size'])} (raw {human_size(r['raw_size'])}), {r['seconds']} s\n"
            f"  sha256   {r['sha256']}\n"
            f"  tables   {len(r['row_counts'])}, rows {sum(r['row_counts'].values())}")
    if r.get("encryption"):
        text += f"\n  sealed   age, to {', '.join(r['encryption']['recipients'])}"
    if "sample_created" in r:
        text = (f"no DBJOBS_DATABASE_URL set: created the sample database {r['sample_created']} and backed it up "
                "(set DBJOBS_DATABASE_URL to back up your own)\n" + text)
    upload = r.get("upload")
    if upload:
        text += (f"\n  upload   {upload['location']}" if upload["ok"] else
                 f"\n  upload   FAILED ({upload['error']}); the local backup is complete and kept")
    return text


def render_restore(r: dict[str, Any]) -> str:
    safety = f"; safety backup {r['safety_backup_id']}" if r["safety_backup_id"] else ""
    what = f"restored {r['backup_id']} into" if r["backup_id"] else "swapped the pre-restore copy back into"
    text = f"{what} {r['database']} in {r['seconds']} s{safety}"
    if r.get("pre_restore_copy"):
        text += (f"\n  swap     {r['swap_seconds'] * 1000:.0f} ms unavailable; the previous contents are kept as "
                 f"database {r['pre_restore_copy']} (undo: restore --undo --database {r['database']} --yes)")
    if r.get("note"):
        text += f"\n  note     {r['note']}"
    return text


def utc(iso: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` for tables (they are all UTC)."""
    return (iso or "")[:19].replace("T", " ")


def checksum_cell(c: dict[str, Any]) -> str:
    """`ok 2026-12-01 22:50`, `DAMAGED 2026-...`, `MISSING ...` or `never checked`."""
    if c["state"] == "ok":
        return f"ok {utc(c['verified_at'])[:16]}"
    return c["state"] if not c["verified_at"] else f"{c['state'].upper()} {utc(c['verified_at'])[:16]}"


def render_list(r: dict[str, Any]) -> str:
    lines = [f"{'ID':<44} {'FINISHED (UTC)':<20} {'DATABASE':<12} {'ENGINE':<10} {'KIND':<13} {'SIZE':>10}  "
             f"{'CHECKSUM':<25} LOCATION"]
    for b in r["backups"]:
        lines.append(f"{b['id']:<44} {utc(b['finished_at']):<20} {b['database']:<12} {b['engine']:<10} "
                     f"{b['kind']:<13} {human_size(b['size']):>10}  {checksum_cell(b['checksum']):<25} {b['location']}")
    if not r["backups"]:
        lines = ["no backups found"]
    lines.append(f"{len(r['backups'])} of {r['total']} backups shown")
    lines.extend(f"skipped: {p}" for p in r["skipped"])
    lines.extend(f"not read: {u['where']} could not be read, its backups are not shown: {u['error']}"
                 for u in r.get("unreadable", []))
    lines.extend(render_copies(r.get("pre_restore_copies", [])))
    return "\n".join(lines)


def render_copies(copies: list[dict[str, Any]]) -> list[str]:
    """One line per pre-restore copy: a database, not a file, and how to swap it back."""
    return [f"pre-restore copy of {c['database']}: database {c['name']}, set aside {c['set_aside_at'][:19]} "
            f"when {c['replaced_by']} was restored (undo: restore --undo --database {c['database']} --yes)"
            for c in copies]


def render_detect(r: dict[str, Any]) -> str:
    backup = f"backup {r['backup']['id']} taken first\n" if r.get("backup") else ""
    if r.get("baseline"):
        return f"{backup}" + "; ".join(r["notes"])
    if not r["changed"]:
        return f"{backup}no schema changes in {r['database']} (compared with {r['source']}); no migration written"
    lines = [f"{backup}wrote {r['file']} ({len(r['changes'])} changes, compared with {r['source']})"]
    lines += [f"  {c}" for c in r["changes"]]
    lines += [f"  warning [{w['category']}]: {w['message']}" for w in r["warnings"]]
    if r["destructive"] and not r["applied"]:
        lines.append("  destructive: applying it needs --allow-destructive")
    if r["applied"]:
        lines.append(f"  applied: {r['applied']['status']}")
    return "\n".join(lines)


def render_apply(r: dict[str, Any]) -> str:
    lines = [f"backup {r['backup']['id']} taken first"] if r.get("backup") else []
    for m in r["migrations"]:
        mode = "in one transaction" if m["transactional"] else "without a transaction"
        lines.append(f"{m['status']} {m['name']} on {m['database']}: {m['statements']} statements {mode}, "
                     f"{m['duration_s']} s")
        lines += [f"  note: {n}" for n in m["notes"]]
    return "\n".join(lines or [f"no pending migrations for {r['database']}"])


def render_verify(r: dict[str, Any]) -> str:
    """Each backup and copy with its state, then a summary line; or the drill's steps and findings."""
    if r["deep"]:
        restore = r["restore"] or {}
        head = (f"drill of {r['backup_id']} ({r['database']}) into {r['into']}: "
                f"{'PASSED' if r['ok'] else 'FAILED'} in {r['seconds']} s")
        lines = [head]
        if restore:
            lines.append(f"  restored  in {restore.get('seconds')} s"
                         + (f" (safety copy of {r['into']}: {restore['safety_backup_id']})"
                            if restore.get("safety_backup_id") else ""))
        if r["ok"] or r["tables"]:
            lines.append(f"  rows      {r['rows']} in {r['tables']} tables"
                         + (", every count as in the manifest" if r["ok"] else ""))
            lines.append(f"  schema    fingerprint {r['schema']}")
        lines += [f"  problem   {p}" for p in r["problems"]]
        return "\n".join(lines)
    lines = []
    for b in r["backups"]:
        for c in b["copies"]:
            detail = f"  ({c['detail']})" if c["detail"] else ""
            lines.append(f"{c['state'].upper() if c['state'] != 'ok' else 'ok':<8} {b['id']:<44} {c['where']}{detail}")
    lines += [f"skipped: {p}" for p in r["skipped"]]
    lines += [f"UNREADABLE {u['where']}: {u['error']} (its copies were not checked)" for u in r.get("unreadable", [])]
    lines.append(f"{len(r['backups'])} backup(s) checked: {r['ok']} ok, {r['damaged']} damaged, "
                 f"{r['missing']} missing" if r["backups"] else "no backups to verify")
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify backups (or drill one) and exit 1 when anything is damaged, missing or the drill failed."""
    kwargs = {"backup": args.backup, "database": args.database, "deep": args.deep, "into": args.into,
              "backup_dir": args.backup_dir}
    settings = load_settings()
    result = execute(settings, "dbjobs.verify", kwargs, args)
    if result is None:
        return 0
    show(args, result, render_verify)
    return 0 if result["ok_all"] else 1


def render_rekey(r: dict[str, Any]) -> str:
    if not r["changed"]:
        return f"{r['backup_id']} is already encrypted to the current recipients; nothing was changed"
    return (f"re-encrypted {r['old_id']} to {len(r['recipients'])} recipient(s) as {r['backup_id']} "
            f"({', '.join(r['locations'])}); the old copies were deleted")


RENDERERS: dict[str, Renderer] = {
    "dbjobs.backup": render_backup, "dbjobs.restore": render_restore, "dbjobs.list_backups": render_list,
    "dbjobs.detect_migrations": render_detect, "dbjobs.apply_migration": render_apply,
    "dbjobs.verify": render_verify,
    "dbjobs.rekey": render_rekey,
}


def render_any(r: dict[str, Any]) -> str:
    """Results of jobs without a renderer of their own."""
    return json.dumps(r, indent=2, sort_keys=True)


def cmd_result(args: argparse.Namespace) -> int:
    """Show a submitted task's result (waiting for it with --wait), rendered like the command that submitted it."""
    settings = require_broker("task results (without one, jobs run in-process and leave no task ids)")
    from workers.client import status

    with about_task(args.task_id):
        current = status(args.task_id)
        if args.wait and current.result is None:
            wait_for(args.task_id, settings)
            current = status(args.task_id)
    if current.result is None:
        show(args, current.to_dict(), render_unfinished)
    else:
        show(args, current.result, RENDERERS.get(current.name or "", render_any))
    return 0


UNFINISHED = {"PENDING": "queued", "RECEIVED": "queued", "STARTED": "running", "PROGRESS": "running",
              "RETRY": "waiting to be retried"}


def render_unfinished(r: dict[str, Any]) -> str:
    """One line for a task that has not finished: where it is and how far it got."""
    p = r["progress"]
    where = f": {p['phase']} {human_size(p['done'])} of {human_size(p['total']) if p['total'] else '?'}" if p else ""
    line = f"task {r['id']} ({r['name'] or 'unknown job'}) is {UNFINISHED.get(r['state'], r['state'].lower())}{where}"
    return f"{line}; but {r['worker_lost']}" if r.get("worker_lost") else line


def require_broker(what: str) -> Settings:
    """The settings, when a broker is configured (workers, the scheduler and task results need one)."""
    settings = load_settings()
    if not settings.broker_url:
        raise ConfigError(f"DBJOBS_BROKER_URL is not set: {what} need a Redis broker (e.g. redis://localhost:6379/0)")
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker for this app: `celery -A workers.app worker` with the given options."""
    require_broker("workers")
    from workers.app import app

    app.worker_main(["worker", *args.celery_args])
    return 0


def cmd_start_scheduler(args: argparse.Namespace) -> int:
    """Run Celery beat with a backup and a cleanup entry per database alias; options override the settings."""
    from dataclasses import replace

    settings = require_broker("the scheduler")
    overrides = {"backup_interval_hours": args.interval, "cleanup_interval_days": args.cleanup_interval,
                 "keep_days": args.keep_days, "min_keep": args.min_keep,
                 "backup_dir": Path(args.backup_dir) if args.backup_dir else None}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    from beat_schedule import build_schedule
    from workers.app import app

    app.conf.beat_schedule = build_schedule(settings)
    print(f"scheduler: a backup every {settings.backup_interval_hours:g} h and a cleanup every "
          f"{settings.cleanup_interval_days:g} d (keep {settings.keep_days} days, at least {settings.min_keep}) of "
          f"{', '.join(sorted(settings.databases))} in {settings.backup_dir}", file=sys.stderr)
    if settings.verify_interval_hours:
        drills = ", ".join(f"{a} into {s}" for a, s in settings.drill_targets().items()) or "none"
        print(f"scheduler: a restore drill every {settings.verify_interval_hours:g} h of {drills}", file=sys.stderr)
    app.Beat(loglevel=args.loglevel, schedule=args.schedule_file).run()
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    kwargs = {"database": args.database, "output_dir": args.output_dir, "upload": args.upload}
    return submit(args, "dbjobs.backup", kwargs, render_backup)


def confirm(question: str) -> bool:
    """Ask on a terminal; without one, refuse (a script must pass --yes)."""
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def require_terminal(what: str) -> None:
    """Refuse at once, changing nothing, when a question cannot be asked (stdin is a pipe or a file)."""
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"{what} not confirmed: stdin is not a terminal, so it cannot ask; nothing was "
                                   "changed (pass --yes to go ahead without the question)")


def restore_question(plan: dict[str, Any], create: bool) -> str:
    """The confirmation naming the backup (id, time, size) and the target (alias, engine, where, size now)."""
    b, t = plan["backup"], plan["target"]
    if t["exists"]:
        now = f"its current contents ({human_size(t['size'])}) will be replaced"
    else:
        now = "it does not exist yet and will be created" if create else "it does not exist (pass --create)"
    return (f"Restore backup {b['id']} (taken {utc(b['finished_at'])} UTC from {b['database']}, "
            f"{human_size(b['size'])}, checksum verified in {b['verified_in']})\n"
            f"   into {t['alias']} ({t['engine']} at {t['where']}): {now}. Continue?")


def cmd_restore(args: argparse.Namespace) -> int:
    """Find and verify the backup, ask about exactly what will be replaced (unless --yes), then restore.

    `--undo` swaps the newest pre-restore copy back in instead (nothing to find or verify)."""
    if args.undo:
        if args.backup or not args.database:
            raise ConfigError("--undo takes --database ALIAS and no backup")
        if not args.yes:
            require_terminal("undo")
            if not confirm(f"Swap the newest pre-restore copy of {args.database} back in? Its current contents "
                           "are kept as a pre-restore copy themselves"):
                raise ConfirmationRequired("undo not confirmed; nothing was changed (pass --yes to skip the question)")
        return submit(args, "dbjobs.restore", {"database": args.database, "undo": True, "copy": args.copy,
                                               "confirmed": True}, render_restore)
    if not args.backup:
        raise ConfigError("name the backup to restore (see list-backups), or pass --undo --database ALIAS")
    kwargs = {"backup": args.backup, "database": args.database, "backup_dir": args.backup_dir}
    if not args.yes:
        require_terminal("restore")
        settings = load_settings()
        plan = execute(settings, "dbjobs.restore_preview", kwargs, argparse.Namespace(wait=True, json=False))
        if not confirm(restore_question(plan or {}, args.create)):
            raise ConfirmationRequired("restore not confirmed; nothing was changed (pass --yes to skip the question)")
    strategy = {"strategy": args.strategy} if args.strategy != "auto" else {}
    return submit(args, "dbjobs.restore", {**kwargs, "confirmed": True, "create": args.create, **strategy},
                  render_restore)


def cmd_list_backups(args: argparse.Namespace) -> int:
    kwargs = {"backup_dir": args.backup_dir, "limit": args.limit, "database": args.database}
    return submit(args, "dbjobs.list_backups", kwargs, render_list)


def cmd_detect_migrations(args: argparse.Namespace) -> int:
    kwargs = {"database": args.database, "schema_dir": args.schema_dir, "backup": args.backup, "apply": args.apply,
              "allow_destructive": args.allow_destructive, "schemas": args.schema,
              "exclude_schemas": args.exclude_schema}
    return submit(args, "dbjobs.detect_migrations", kwargs, render_detect)


def cmd_apply_migration(args: argparse.Namespace) -> int:
    action = "Stamp" if args.stamp else "Revert" if args.reverse else "Apply"
    what = args.file or "the pending migrations"
    if not args.yes:
        require_terminal("migration")
    if not args.yes and not confirm(f"{action} {what} on {args.database}?"):
        raise ConfirmationRequired("migration not confirmed; nothing was changed (pass --yes to skip the question)")
    kwargs = {"file": args.file, "database": args.database, "schema_dir": args.schema_dir, "backup": args.backup,
              "allow_destructive": args.allow_destructive, "reverse": args.reverse, "confirmed": True,
              "allow_unsupported": args.allow_unsupported, "stamp": args.stamp}
    return submit(args, "dbjobs.apply_migration", kwargs, render_apply)


def render_cleanup(r: dict[str, Any]) -> str:
    """Each deleted (or, in a dry run, doomed and kept) backup with its reasons, then a summary line."""
    verb = "would delete" if r["dry_run"] else "deleted"
    lines = [f"{verb:<12} {d['id']}  ({'; '.join(d['reasons'])})" for d in r["deleted"]]
    summary = "would be deleted" if r["dry_run"] else "deleted"
    if r["dry_run"]:
        lines += [f"{'keep':<12} {k['id']}  ({'; '.join(k['reasons'])})" for k in r["kept"]]
    lines += [f"{'finished' if not r['dry_run'] else 'would finish'} interrupted deletion of {i}"
              for i in r["interrupted_deletions"]]
    lines += [f"{'removed' if not r['dry_run'] else 'would remove'} unfinished file {p} (its writer is gone)"
              for p in r["stale_partials"]]
    lines += [f"skipped: {p}" for p in r["skipped"]]
    lines += [f"warning: {u['where']} could not be listed ({u['error']}); its backups are left for the next cleanup"
              for u in r.get("unreadable", [])]
    lines += [f"refused      every backup of {db} would go: cleanup refuses that without --allow-empty"
              for db in r.get("emptied", [])]
    lines.append(f"{len(r['deleted'])} backup(s) {summary} ({human_size(r['freed_bytes'])}), {len(r['kept'])} kept"
                 + (" (dry run: nothing was changed)" if r["dry_run"] else ""))
    return "\n".join(lines)


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Submit `dbjobs.cleanup`; unset keep options fall back to BACKUP_KEEP_DAYS/BACKUP_MIN_KEEP in the job."""
    kwargs = {"database": args.database, "backup_dir": args.backup_dir, "keep_days": args.keep_days,
              "min_keep": args.min_keep, "keep_last": args.keep_last, "keep_daily": args.keep_daily,
              "keep_weekly": args.keep_weekly, "keep_monthly": args.keep_monthly, "dry_run": args.dry_run,
              "allow_empty": args.allow_empty}
    return submit(args, "dbjobs.cleanup", kwargs, render_cleanup)


def render_status(r: dict[str, Any]) -> str:
    """The report for a person: one line per database, backups and disk, broker, then every finding."""
    lines = []
    for db in r["databases"]:
        state = (f"{db['engine']} {db['version']}, {human_size(db['size'])}" if db["reachable"]
                 else f"UNREACHABLE: {db['error']}")
        b = r["backups"]["databases"].get(db["alias"])
        if b is None:
            backups = "scratch alias of restore drills"
        else:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(b["kinds"].items())) or "none"
            newest = f"newest full {b['newest_age_hours']} h old" if b["newest"] else "no full backup"
            backups = f"{b['count']} backup{'' if b['count'] == 1 else 's'} ({kinds}), {newest}"
        lines.append(f"database {db['alias']:<12} {state}; {backups}")
    for alias, d in r.get("drills", {}).items():
        last = d["last"]
        outcome = (f"{'ok' if last['ok'] else 'FAILED'} at {last['finished_at'][:19].replace('T', ' ')}" if last
                   else "never ran")
        into = f" into {d['into']}" if d["into"] else ""
        lines.append(f"drill    {alias:<12} last restore drill{into}: {outcome}")
    ignored = r.get("jobs", {}).get("ignored_aliases") or []
    if ignored:
        lines.append(f"ignored  job records of aliases no longer configured: {', '.join(ignored)}")
    lines.append(f"backups  {r['backups']['count']} in all, {human_size(r['backups']['total_size'])}; "
                 f"disk {r['disk']['free_percent']}% free ({human_size(r['disk']['free'])}) at {r['disk']['path']}")
    broker = r.get("broker", {})
    if broker.get("configured"):
        lines.append(f"broker   {'reachable' if broker['reachable'] else 'UNREACHABLE'}; "
                     f"workers: {', '.join(broker.get('workers', [])) or 'none'}")
    else:
        lines.append("broker   not configured: jobs run in-process")
    lines += render_copies(r.get("pre_restore_copies", []))
    lines += [f"{c['level']:<8} {c['message']}" for c in r["checks"]]
    lines.append(f"health: {r['health']}")
    return "\n".join(lines)


def ping_broker(url: str) -> None:
    """Raise a DbjobsError unless the Redis broker answers a PING within two seconds."""
    import redis

    from workers.config import redacted_url

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise DbjobsError(f"broker {redacted_url(url)} is unreachable: {exc}") from None


def ping_workers() -> list[str]:
    """Names of this app's Celery workers that answer a ping within a second."""
    from workers.app import app

    return sorted(name for reply in app.control.ping(timeout=1) for name in reply)


def cmd_status(args: argparse.Namespace) -> int:
    """Report health and exit with its code (0 ok, 1 warning, 2 critical).

    With a live broker and workers the report is made by a worker, where the backups are; with
    none configured, or when they are down, it is made here, so a monitor always gets an answer.
    """
    from dbjobs.jobs import run_job
    from dbjobs.status import add_section, broker_section, exit_code

    settings = load_settings()
    url = settings.broker_url or ""
    broker = broker_section(bool(url), lambda: ping_broker(url), ping_workers)
    kwargs = {"database": args.database, "backup_dir": args.backup_dir, "min_free_percent": args.min_free_percent}
    if url and not broker[1]:
        report = execute(settings, "dbjobs.status", kwargs, argparse.Namespace(wait=True, json=args.json))
    else:
        report = run_job("dbjobs.status", settings, kwargs)
    report = add_section(report, "broker", *broker)  # type: ignore[arg-type]
    show(args, report, render_status)
    return exit_code(report)


def cmd_metrics(args: argparse.Namespace) -> int:
    """Write the metrics once (--textfile), or serve them until interrupted (--port)."""
    from prometheus_client import write_to_textfile
    from prometheus_client.exposition import start_wsgi_server

    from dbjobs.metrics import registry
    from dbjobs.storage import storages

    settings = load_settings()
    directory = Path(args.backup_dir) if args.backup_dir else settings.backup_dir
    metrics = registry(storages(settings, directory), directory, sorted(settings.databases))
    if args.textfile:
        try:
            write_to_textfile(args.textfile, metrics)
        except OSError as exc:
            raise ConfigError(f"cannot write the metrics to {args.textfile}: {exc.strerror}") from None
        print(f"wrote the metrics to {args.textfile}", file=sys.stderr)
        return 0
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    try:
        server, thread = start_wsgi_server(args.port, args.address, metrics, certfile=args.tls_cert,
                                           keyfile=args.tls_key)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.address}:{args.port}: {exc.strerror}") from None
    scheme = "https" if args.tls_cert else "http"
    print(f"serving metrics on {scheme}://{args.address}:{server.server_port}/metrics", file=sys.stderr, flush=True)
    thread.join()
    return 0


def bounded(kind: type[int] | type[float], low: float, *, inclusive: bool = True,
            high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` at least `low` (or, not inclusive, above it) and at most `high`,
    with a clear message."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not (value >= low if inclusive else value > low) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} must be {'at least' if inclusive else 'greater than'} {low:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be at most {high:g}")
        return value

    return parse


positive_int = bounded(int, 1)
positive_float = bounded(float, 0, inclusive=False)  # fractions allowed, so tests can schedule in seconds
non_negative_int = bounded(int, 0)
port_number = bounded(int, 0, high=65535)


def job_options(p: argparse.ArgumentParser) -> None:
    """Options every job command shares."""
    p.add_argument("--wait", action="store_true",
                   help="wait for the task to finish, showing progress, and print its result "
                        "(without it, print the task id and return; always waits when running in-process)")
    p.add_argument("--json", action="store_true", help="print the result as JSON for scripts")


class Parser(argparse.ArgumentParser):
    """argparse, except that `worker` passes every option on to Celery and bad usage is one `error:` line.

    argparse cannot give a REMAINDER positional options that come first (`worker --loglevel
    INFO`); it reports them as unknown, in order and ahead of the rest, so they are put back.
    """

    def error(self, message: str) -> NoReturn:
        """Print what was wrong and where to look (not argparse's usage dump), then exit 2 like argparse."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown and getattr(parsed, "celery_args", None) is not None:
            parsed.celery_args = unknown + parsed.celery_args
        elif unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar fixed by the spec."""
    parser = Parser(
        prog="dbjobs", description="Back up, restore and migrate SQL databases with Celery jobs. "
        "Configuration comes from DBJOBS_* environment variables or a .env file.")
    parser.add_argument("--version", action="version", version=f"dbjobs {__version__}")
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
                       description="Verify a backup's checksum and engine, then replace the target's contents. "
                       "PostgreSQL loads a shadow database in parallel, checks it against the manifest and swaps "
                       "it in by renaming: the old database is kept as a pre-restore copy (undo with --undo). "
                       "Elsewhere a safety backup is taken first. A failed restore leaves the database as it was.")
    p.add_argument("backup", metavar="BACKUP", nargs="?",
                   help="backup id (see list-backups) or path to a .dump.zst file")
    p.add_argument("--strategy", choices=["auto", "swap", "in-place"], default="auto",
                   help="swap: shadow database and rename (no safety dump); in-place: one transaction after a "
                        "safety backup; auto (default): swap where the database allows it, else in place with a note")
    p.add_argument("--undo", action="store_true",
                   help="swap the newest pre-restore copy of --database back in (the replaced one is kept as a copy)")
    p.add_argument("--copy", metavar="NAME", help="with --undo: the pre-restore copy to swap back (see status)")
    p.add_argument("--database", metavar="ALIAS",
                   help="alias to restore into (default: the alias the backup was taken from)")
    p.add_argument("--backup-dir", metavar="DIR", help="where to find backups by id and put the safety backup "
                   "(default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed when stdin is not a "
                   "terminal)")
    p.add_argument("--create", action="store_true", help="create the target database (PostgreSQL, MariaDB) if it "
                   "does not exist")
    job_options(p)
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser("list-backups", help="list complete backups, newest first",
                       description="List backups that have a valid manifest, newest first.")
    p.add_argument("--backup-dir", metavar="DIR", help="directory to list (default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--limit", type=positive_int, default=10, metavar="N", help="show at most N backups (default: 10)")
    p.add_argument("--database", metavar="ALIAS", help="only backups of this alias")
    job_options(p)
    p.set_defaults(handler=cmd_list_backups)

    p = sub.add_parser("detect-migrations", help="snapshot the schema and write a migration if it changed",
                       description="Snapshot the schema and compare it with the models in $DBJOBS_MODELS (or, "
                       "without models, with the previous snapshot); if anything changed, write a numbered .sql "
                       "file with forward and reverse statements and warnings for destructive or locking changes.")
    schema_options(p)
    p.add_argument("--apply", action="store_true", help="apply the new migration right away (without models, "
                   "record it as applied: the database already has the changes)")
    p.add_argument("--schema", action="append", metavar="NAME",
                   help="PostgreSQL: compare only this schema (repeatable; default: every non-system schema; "
                   "remembered in the snapshot for later runs)")
    p.add_argument("--exclude-schema", action="append", metavar="NAME",
                   help="PostgreSQL: compare every non-system schema but this one (repeatable)")
    p.set_defaults(handler=cmd_detect_migrations)

    p = sub.add_parser("apply-migration", help="apply a migration file safely and record it",
                       description="Apply a migration file under a lock, in a transaction where the engine "
                       "allows (not MySQL/MariaDB DDL), and record it in the dbjobs_migrations ledger; an applied "
                       "file is skipped, an edited applied file is reported as drift. Without --file, apply every "
                       "pending file of the schema directory in order.")
    p.add_argument("--file", metavar="FILE",
                   help="the migration .sql file to apply (default: every pending file of --schema-dir, in order)")
    schema_options(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--reverse", action="store_true",
                   help="run the file's reverse section and remove it from the ledger")
    p.add_argument("--stamp", action="store_true",
                   help="record the file (or every pending file) as applied without running it, for a database "
                   "that already has the changes (like Alembic's stamp)")
    p.add_argument("--allow-unsupported", action="store_true",
                   help="apply a file whose header lists warning[unsupported] changes (objects dbjobs cannot "
                   "migrate; add them to the file by hand first)")
    p.set_defaults(handler=cmd_apply_migration)

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
    p.add_argument("--allow-empty", action="store_true",
                   help="allow deleting every backup of a database (otherwise such a cleanup is refused)")
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

    p = sub.add_parser("verify", help="re-hash backups where they are kept; --deep drills a restore",
                       description="Re-hash every backup (or BACKUP, or those of --database) against its manifest, "
                       "here and in Supabase Storage, and report each copy as ok, damaged or missing. With --deep, "
                       "restore the backup (default: the newest full backup of --database) into the scratch alias "
                       "--into, then check every table's row count and the schema fingerprint against the "
                       "manifest. Exit code 1 when anything is damaged or missing or the drill failed.")
    p.add_argument("backup", nargs="?", metavar="BACKUP", help="backup id or .dump.zst path (default: every backup)")
    p.add_argument("--database", metavar="ALIAS", help="only backups of this alias (with --deep: drill its newest "
                   "full backup; default: default)")
    p.add_argument("--deep", action="store_true", help="restore into --into and compare row counts and schema")
    p.add_argument("--into", metavar="ALIAS", help="scratch alias a --deep drill restores into; its contents are "
                   "replaced (default: from BACKUP_VERIFY_INTO)")
    p.add_argument("--backup-dir", metavar="DIR", help="backup directory (default: $DBJOBS_BACKUP_DIR or ./backups)")
    job_options(p)
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("metrics", help="serve (or write) Prometheus metrics of backups, drills and jobs",
                       description="Prometheus metrics per database alias: the newest full backup's time, size and "
                       "duration, backups and bytes per storage and kind, the last verify, drill and cleanup (time "
                       "and outcome), and job failures. Read from the backup directory and Supabase Storage at "
                       "every scrape: run it where the backups are (a worker host).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=port_number, metavar="P", help="serve /metrics on this port (0: any "
                       "free port, printed)")
    where.add_argument("--textfile", metavar="FILE", help="write the metrics once to FILE (atomically) for "
                       "node-exporter's textfile collector, then exit")
    p.add_argument("--address", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default: 127.0.0.1; see the README before exposing it)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    p.add_argument("--backup-dir", metavar="DIR", help="backup directory (default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.set_defaults(handler=cmd_metrics)

    add_celery_commands(sub)
    add_key_commands(sub)
    return parser


def schema_options(p: argparse.ArgumentParser) -> None:
    """Options the two schema commands share."""
    p.add_argument("--database", default="default", metavar="ALIAS", help="database alias (default: default)")
    p.add_argument("--backup", action="store_true", help="take a full backup before changing anything")
    p.add_argument("--allow-destructive", action="store_true",
                   help="allow statements that drop tables or columns or narrow types")
    p.add_argument("--schema-dir", metavar="DIR",
                   help="where migrations and snapshots live (default: $DBJOBS_SCHEMA_DIR or ./migrations)")
    job_options(p)


def add_celery_commands(sub: Any) -> None:
    """`result`, `worker` and `start-scheduler`: the commands that only exist with a broker."""
    p = sub.add_parser("result", help="show (or wait for) the result of a submitted task",
                       description="Show the state or result of a task submitted without --wait.")
    p.add_argument("task_id", metavar="ID", help="the task id a command printed when it submitted the task")
    p.add_argument("--wait", action="store_true", help="wait for the task to finish, showing progress")
    p.add_argument("--json", action="store_true", help="print the state or result as JSON for scripts")
    p.set_defaults(handler=cmd_result)

    p = sub.add_parser("worker", add_help=False, help="start a Celery worker (options go to `celery worker`)",
                       description="Start a Celery worker for dbjobs; every option is passed to `celery worker` "
                       "(`dbjobs worker --help` shows them).")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, metavar="CELERY_WORKER_OPTIONS",
                   help="options of `celery worker`, e.g. --concurrency 2 --loglevel INFO")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("start-scheduler", help="run Celery beat: scheduled backups and cleanups",
                       description="Run Celery beat, enqueueing a backup of every database alias every --interval "
                       "hours and a cleanup of its backups every --cleanup-interval days; workers do the jobs.")
    p.add_argument("--backup-dir", metavar="DIR", help="where scheduled backups go and cleanup looks "
                   "(default: $DBJOBS_BACKUP_DIR or ./backups)")
    p.add_argument("--interval", type=positive_float, metavar="H",
                   help="hours between backups; fractions allowed (default: $BACKUP_INTERVAL_HOURS or 24)")
    p.add_argument("--cleanup-interval", type=positive_float, metavar="D",
                   help="days between cleanups; fractions allowed (default: $BACKUP_CLEANUP_INTERVAL_DAYS or 1)")
    p.add_argument("--keep-days", type=non_negative_int, metavar="N",
                   help="cleanup deletes backups older than N days (default: $BACKUP_KEEP_DAYS or 30)")
    p.add_argument("--min-keep", type=non_negative_int, metavar="N",
                   help="cleanup always keeps the N newest backups of each database (default: $BACKUP_MIN_KEEP or 5)")
    p.add_argument("--schedule-file", default="celerybeat-schedule", metavar="FILE",
                   help="where beat remembers when each entry last ran (default: ./celerybeat-schedule)")
    p.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="beat's log level (default: INFO)")
    p.set_defaults(handler=cmd_start_scheduler)


def cmd_rekey(args: argparse.Namespace) -> int:
    return submit(args, "dbjobs.rekey", {"backup": args.backup, "backup_dir": args.backup_dir}, render_rekey)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write an age key pair here, never through a worker: the private key must not travel through Redis."""
    from dbjobs.crypto import keygen

    public = keygen(Path(args.file))
    show(args, {"identity_file": args.file, "recipient": public},
         lambda r: f"wrote the age identity {r['identity_file']} (mode 0600: keep it on the host that restores)\n"
                   f"public key, for DBJOBS_ENCRYPT_TO:\n{r['recipient']}")
    return 0


def add_key_commands(sub: Any) -> None:
    """`keygen` and `rekey`: the encryption keys of backups (age)."""
    p = sub.add_parser("keygen", help="write a new age key pair for encrypted backups",
                       description="Write a new age identity (private key) to FILE, mode 0600, and print its public "
                       "key: put the public key in DBJOBS_ENCRYPT_TO everywhere backups are taken, and the file "
                       "(as DBJOBS_AGE_IDENTITY_FILE) only where restores run. Never overwrites a file.")
    p.add_argument("file", metavar="FILE", help="where to write the identity (must not exist)")
    p.add_argument("--json", action="store_true", help="print the file and public key as JSON")
    p.set_defaults(handler=cmd_keygen)

    p = sub.add_parser("rekey", help="re-encrypt a backup to the current recipients (key rotation)",
                       description="Decrypt a backup with DBJOBS_AGE_IDENTITY_FILE and encrypt it to the current "
                       "DBJOBS_ENCRYPT_TO, without decompressing it; the result is a new backup (new id, same "
                       "contents and times) in every store that held the old one, which is then deleted. An "
                       "unencrypted backup is encrypted.")
    p.add_argument("backup", metavar="BACKUP", help="backup id (see list-backups) or path to a .dump.zst file")
    p.add_argument("--backup-dir", metavar="DIR", help="where to find backups by id "
                   "(default: $DBJOBS_BACKUP_DIR or ./backups)")
    job_options(p)
    p.set_defaults(handler=cmd_rekey)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python cli.py` and the `dbjobs` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DbjobsError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "task_id": getattr(exc, "task_id", None)}))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
