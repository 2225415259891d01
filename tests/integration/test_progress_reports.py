"""What a watcher sees of a long job: the bar moves through backup and restore, each phase named, totals honest.

Progress is reported every MiB (the CLI and the worker throttle what they pass on): a restore reports the
bytes of the backup fed to the client tool, its safety backup and verification their own bytes, and a
backup's total is the previous backup's raw size when there is one, so the bar neither stops at 57% nor
passes 100%.
"""

from __future__ import annotations

from pathlib import Path

from dbjobs.jobs import run_job
from dbjobs.progress import Progress
from tests.backup_support import settings_for
from tests.celery_support import make_sqlite


def _recorded(reports: list[Progress]):  # type: ignore[no-untyped-def]
    return reports.append


def test_backup_and_restore_report_bytes_as_they_go(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "app.sqlite3", rows=80, blob_kib=100)  # 8 MiB, half of it incompressible
    make_sqlite(tmp_path / "scratch.sqlite3", rows=5)
    settings = settings_for(tmp_path / "backups", default=f"sqlite:///{tmp_path / 'app.sqlite3'}",
                            scratch=f"sqlite:///{tmp_path / 'scratch.sqlite3'}")
    first: list[Progress] = []
    taken = run_job("dbjobs.backup", settings, {}, _recorded(first))
    second: list[Progress] = []
    run_job("dbjobs.backup", settings, {}, _recorded(second))
    dumps = [p for p in second if p.phase == "dump"]
    assert len(dumps) >= 5 and all(p.total == taken["raw_size"] for p in dumps[:-1])  # the last backup's size
    assert all(p.total is not None and 0 < p.done <= p.total for p in first + second if p.phase == "dump")

    restored: list[Progress] = []
    run_job("dbjobs.restore", settings, {"backup": taken["id"], "database": "scratch", "confirmed": True},
            _recorded(restored))
    phases = [p.phase for p in restored]
    assert phases.index("verify") < phases.index("safety-backup") < phases.index("restore")
    feeding = [p for p in restored if p.phase == "restore"]
    assert {p.total for p in feeding} == {taken["raw_size"]}  # the bytes the client tool is fed
    moving = [p.done for p in feeding if 0 < p.done < taken["raw_size"]]
    assert len(moving) >= 2 and moving == sorted(moving), feeding  # the bar moves while the tool is fed
    assert any(p.phase == "safety-backup" and p.done > 0 for p in restored)

