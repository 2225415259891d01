"""Prometheus metrics of backups, verifies, drills, cleanups and job failures, per database alias.

Everything is read at scrape time from where the backups are (the storages and the job records
in `<backup dir>/.last-jobs/`), so the exporter holds no state of its own and any number of them
report the same figures. Served over HTTP by `dbjobs metrics --port`, or written once as a
node-exporter textfile (`--textfile`). Flower's own `/metrics` (task counts of the workers) is
separate and stays Flower's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dbjobs.catalog import Backup, list_scanned
from dbjobs.errors import DbjobsError
from dbjobs.jobstate import DRILL_JOB, JobOutcome, outcomes
from dbjobs.status import finished_time, latest_outcomes
from dbjobs.storage.base import Scan, Storage
from dbjobs.verify import VERIFY_JOB

PREFIX = "dbjobs_"
LAST_OUTCOMES = {VERIFY_JOB: "verify", DRILL_JOB: "drill", "dbjobs.cleanup": "cleanup"}


def _gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=list(labels))


def backup_metrics(backups: Sequence[Backup], aliases: Sequence[str]) -> list[Metric]:
    """Newest full backup per alias (time, size, duration), and count and bytes of every kind per storage."""
    last_time = _gauge("backup_last_success_timestamp_seconds", "When the newest full backup finished (Unix time)",
                       ["database"])
    last_size = _gauge("backup_last_size_bytes", "Compressed size of the newest full backup", ["database"])
    last_duration = _gauge("backup_last_duration_seconds", "How long the newest full backup took", ["database"])
    count = _gauge("backups", "Complete backups held, per storage and kind", ["database", "storage", "kind"])
    size = _gauge("backups_bytes", "Bytes of complete backups held, per storage", ["database", "storage"])
    newest: dict[str, Backup] = {}
    counts: Counter[tuple[str, str, str]] = Counter()
    sizes: Counter[tuple[str, str]] = Counter()
    for b in backups:
        m = b.manifest
        if m.database not in aliases:
            continue
        if m.kind == "full":
            newest.setdefault(m.database, b)
        for where in ([str(b.path.parent)] if b.path else []) + list(b.remotes):
            counts[(m.database, where, m.kind)] += 1
            sizes[(m.database, where)] += m.size
    for alias, b in sorted(newest.items()):
        m = b.manifest
        last_time.add_metric([alias], m.finished.timestamp())
        last_size.add_metric([alias], m.size)
        last_duration.add_metric([alias], (m.finished - datetime.fromisoformat(m.started_at)).total_seconds())
    for key, n in sorted(counts.items()):
        count.add_metric(list(key), n)
    for key, n in sorted(sizes.items()):
        size.add_metric(list(key), n)
    return [last_time, last_size, last_duration, count, size]


def outcome_metrics(recorded: Sequence[JobOutcome], aliases: Sequence[str]) -> list[Metric]:
    """Last verify, drill and cleanup per alias (time and success), and failures of every job so far."""
    latest, _ = latest_outcomes(recorded, aliases, aliases)
    families = []
    for job, what in LAST_OUTCOMES.items():
        when = _gauge(f"{what}_last_timestamp_seconds", f"When the last {what} of the database finished (Unix time)",
                      ["database"])
        ok = _gauge(f"{what}_last_success", f"1 if the last {what} of the database succeeded, else 0", ["database"])
        for o in latest:
            if o.job == job:
                when.add_metric([o.database], finished_time(o).timestamp())
                ok.add_metric([o.database], 1 if o.ok else 0)
        families += [when, ok]
    failures = CounterMetricFamily(PREFIX + "job_failures", "Failed runs of each job on each database",
                                   labels=["job", "database"])
    for o in recorded:  # per record: a job over every alias (`all`) keeps its own count
        if o.database in aliases or o.database == "all":
            failures.add_metric([o.job, o.database], o.failures)
    return [*families, failures]


class DbjobsCollector(Collector):
    """Collects every figure afresh on each scrape: a storage that cannot be listed is `storage_up 0`, not an error."""

    def __init__(self, storages: Sequence[Storage], state_dir: Path, aliases: Sequence[str]) -> None:
        self.storages = storages
        self.state_dir = state_dir
        self.aliases = list(aliases)

    def collect(self) -> Iterator[Metric]:
        up = _gauge("storage_up", "1 if the storage could be listed at this scrape, else 0", ["storage"])
        scanned: list[tuple[Storage, Scan]] = []
        for storage in self.storages:
            try:
                scanned.append((storage, storage.scan()))
            except DbjobsError:
                up.add_metric([storage.where], 0)
                continue
            up.add_metric([storage.where], 1)
        backups, _ = list_scanned(scanned)
        yield up
        yield from backup_metrics(backups, self.aliases)
        yield from outcome_metrics(outcomes(self.state_dir), self.aliases)


def registry(storages: Sequence[Storage], state_dir: Path, aliases: Sequence[str]) -> CollectorRegistry:
    """A registry holding only dbjobs' collector (no process or platform metrics of the exporter itself)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DbjobsCollector(storages, state_dir, aliases))
    return reg
