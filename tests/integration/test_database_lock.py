"""The in-database job lock on every engine: exclusive across processes, naming its holder, waiting its
turn, and released by the server (or kernel) the moment its holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dbjobs.dburl import parse_url
from dbjobs.engines import connector_for
from dbjobs.errors import JobLockedError
from tests.celery_support import ROOT

HOLD = """
import sys, time
from dbjobs.dburl import parse_url
from dbjobs.engines import connector_for
with connector_for(parse_url("db", sys.argv[1])).exclusive("dbjobs.restore task-held", wait=5):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_exclusive_across_processes_and_released_when_the_holder_is_killed(db_url: str, tmp_path) -> None:
    if db_url.startswith("sqlite"):
        import sqlite3

        sqlite3.connect(db_url.removeprefix("sqlite:///")).close()
    connector = connector_for(parse_url("db", db_url))
    holder = _holder(db_url)
    try:
        started = time.monotonic()
        with pytest.raises(JobLockedError) as busy, connector.exclusive("dbjobs.apply_migration t2", wait=0.5):
            pass
        assert time.monotonic() - started >= 0.5
        assert "'db' is busy" in str(busy.value)
        if not db_url.startswith("mysql"):  # MariaDB's GET_LOCK cannot name its holder
            assert "dbjobs.restore task-held" in str(busy.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with connector.exclusive("dbjobs.apply_migration t2", wait=10):
            waited = time.monotonic() - started
            other = connector_for(parse_url("db", db_url))
            with pytest.raises(JobLockedError), other.exclusive("dbjobs.restore t3", wait=0):
                pass  # one holder at a time, also within one process
        assert waited < 2, f"a killed holder's lock took {waited:.1f} s to go"
        with connector.exclusive("dbjobs.restore t3", wait=0):
            pass  # released on exit
    finally:
        holder.kill()
        holder.wait(10)
