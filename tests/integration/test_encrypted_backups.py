"""Encrypted backups as a deployment runs them: workers that back up without any key, a host that restores.

Two real workers over Redis share one backup directory: `backup-worker` has only the public
keys (DBJOBS_ENCRYPT_TO), `restore-worker` also the ops identity. The CLI drives both. What
must not be lost: every row of every engine through an encrypted round trip, and the target
database whenever a restore is refused (no key, a wrong key, altered bytes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dbjobs.crypto import keygen
from dbjobs.errors import BackupInvalidError, ConfigError
from dbjobs.jobs import run_job
from dbjobs.manifest import parse_manifest
from dbjobs.pipeline import write_atomic
from dbjobs.settings import load_settings
from dbjobs.storage import SupabaseStorage
from tests.backup_support import backup_files, build_sample, connect, copy_snapshot, mutate, snapshot
from tests.celery_support import Proc, celery_env, cli_json, flushed_redis, redis_values, run_cli, start_worker
from tests.support.fake_supabase import FakeSupabase

pytestmark = pytest.mark.redis
ALIASES = {"postgresql": "pg", "mysql": "maria", "sqlite": "lite"}


@dataclasses.dataclass(frozen=True)
class Deployment:
    base: Path
    backups: Path
    urls: dict[str, str]
    keys: dict[str, tuple[Path, str]]
    backup_env: dict[str, str]
    restore_env: dict[str, str]

    def settings(self, identity: str | None = None, **extra: str) -> Any:
        """In-process settings of a host with the same databases and directory (and, if named, an identity)."""
        env = {"DBJOBS_DATABASES": json.dumps({ALIASES[e]: u for e, u in self.urls.items()}),
               "DBJOBS_BACKUP_DIR": str(self.backups), "DBJOBS_ENCRYPT_TO": self.backup_env["DBJOBS_ENCRYPT_TO"]}
        if identity:
            env["DBJOBS_AGE_IDENTITY_FILE"] = str(self.keys[identity][0])
        return load_settings({**env, **extra}, dotenv=None)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, engine_urls: dict[str, str]) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("encrypted")
    (base / "keys").mkdir()
    keys = {name: (base / "keys" / name, keygen(base / "keys" / name)) for name in ("ops", "glass", "stranger")}
    for url in engine_urls.values():
        build_sample(url)
    common = {"DBJOBS_DATABASES": ";".join(f"{ALIASES[e]}={u}" for e, u in engine_urls.items()),
              "DBJOBS_ENCRYPT_TO": f"{keys['ops'][1]},{keys['glass'][1]}"}
    backup_env = celery_env(base, flushed_redis(4), **common)
    restore_env = celery_env(base, flushed_redis(5), **common, DBJOBS_AGE_IDENTITY_FILE=str(keys["ops"][0]))
    workers: list[Proc] = []
    try:
        workers.append(start_worker(backup_env, base, "backup-worker"))
        workers.append(start_worker(restore_env, base, "restore-worker"))
        yield Deployment(base, base / "backups", engine_urls, keys, backup_env, restore_env)
    finally:
        for worker in workers:
            worker.stop()
        flushed_redis(4)
        flushed_redis(5)


def _change(url: str) -> None:
    """Delete the oldest order: a change every call makes anew, whatever state earlier tests left."""
    with connect(url) as conn:
        oldest = conn.execute(sa.text("SELECT min(id) FROM orders")).scalar()
        conn.execute(sa.text("DELETE FROM orders WHERE id = :id"), {"id": oldest})


def _manifest(d: Deployment, backup_id: str) -> dict[str, Any]:
    return json.loads((d.backups / f"{backup_id}.manifest.json").read_text())


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_a_worker_without_the_identity_backs_up_but_cannot_restore(deployment: Deployment, engine: str) -> None:
    d, alias, url = deployment, ALIASES[engine], deployment.urls[engine]
    before = snapshot(url)
    made = cli_json(d.backup_env, d.base, "backup", "--database", alias, "--wait")
    if engine == "sqlite":  # what a person reads: the recipients, never a key
        shown = run_cli(d.backup_env, d.base, "backup", "--database", alias, "--wait").stdout
        assert f"sealed   age, to {d.keys['ops'][1]}, {d.keys['glass'][1]}" in shown and "AGE-SECRET" not in shown

    stored = Path(made["path"]).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n") and b"customers" not in stored
    assert made["encryption"]["recipients"] == [d.keys["ops"][1], d.keys["glass"][1]]
    assert made["sha256"] == hashlib.sha256(stored).hexdigest() != made["encryption"]["compressed_sha256"]
    assert _manifest(d, made["id"])["encryption"] == made["encryption"] and "age" in made["tools"]
    mutate(url)
    changed = snapshot(url)
    files = backup_files(d.backups)

    refused = run_cli(d.backup_env, d.base, "restore", made["id"], "--yes", "--wait")

    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("error: backup ")
    assert "set DBJOBS_AGE_IDENTITY_FILE" in refused.stderr and "Traceback" not in refused.stderr
    assert snapshot(url) == changed and backup_files(d.backups) == files

    restored = cli_json(d.restore_env, d.base, "restore", made["id"], "--yes", "--wait")

    assert snapshot(url) == before
    if restored["strategy"] == "swap":  # the replaced database itself is kept: no dump to encrypt
        assert restored["safety_backup_id"] is None and copy_snapshot(_copy_url(url, restored)) == changed
    else:
        safety = _manifest(d, restored["safety_backup_id"])
        assert safety["encryption"]["recipients"] == made["encryption"]["recipients"]
    for env in (d.backup_env, d.restore_env):
        queued = redis_values(env["DBJOBS_BROKER_URL"])
        assert "AGE-SECRET-KEY" not in queued and str(d.keys["ops"][0]) not in queued


def _copy_url(url: str, restored: dict) -> str:
    """The URL of the pre-restore copy a swap restore of `url` set aside."""
    return url.rsplit("/", 1)[0] + "/" + restored["pre_restore_copy"]


def test_each_recipient_restores_alone_and_a_stranger_changes_nothing(deployment: Deployment) -> None:
    d, url = deployment, deployment.urls["sqlite"]
    made = run_job("dbjobs.backup", d.settings(), {"database": "lite"})
    before = snapshot(url)
    for identity in ("ops", "glass"):
        _change(url)
        run_job("dbjobs.restore", d.settings(identity), {"backup": made["id"], "confirmed": True})
        assert snapshot(url) == before
    _change(url)
    changed, files = snapshot(url), backup_files(d.backups)

    with pytest.raises(ConfigError, match="identity in DBJOBS_AGE_IDENTITY_FILE is not one of the recipients"):
        run_job("dbjobs.restore", d.settings("stranger"), {"backup": made["id"], "confirmed": True})

    assert snapshot(url) == changed and backup_files(d.backups) == files


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_tampered_ciphertext_is_refused_before_anything_is_dropped(deployment: Deployment, engine: str) -> None:
    """Even when whoever altered the file also rewrote the manifest's storage checksum to match."""
    d, alias, url = deployment, ALIASES[engine], deployment.urls[engine]
    made = run_job("dbjobs.backup", d.settings(), {"database": alias})
    path = Path(made["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    manifest = parse_manifest((d.backups / f"{made['id']}.manifest.json").read_bytes(), "test")
    forged = dataclasses.replace(manifest, sha256=hashlib.sha256(data).hexdigest())
    write_atomic(d.backups / forged.manifest_name, forged.to_json().encode())
    _change(url)
    changed, files = snapshot(url), backup_files(d.backups)

    with pytest.raises(BackupInvalidError, match=r"cannot decrypt and authenticate.*tampered"):
        run_job("dbjobs.restore", d.settings("ops"), {"backup": made["id"], "confirmed": True})

    assert snapshot(url) == changed and backup_files(d.backups) == files


def test_shared_bucket_key_rotation_and_rekey(deployment: Deployment, tmp_path: Path) -> None:
    """Upload, listing, download, cleanup and rekey on encrypted backups in a shared bucket: the backup host
    holds no key; after rotating to a new key, old backups still restore with the old identity until rekeyed."""
    d, url = deployment, deployment.urls["sqlite"]
    with FakeSupabase(tmp_path / "supabase") as fake:
        bucket = {"SUPABASE_URL": fake.url, "SUPABASE_KEY": fake.key, "SUPABASE_BUCKET": "backups"}
        taker = d.settings(**bucket)
        made = run_job("dbjobs.backup", taker, {"database": "lite", "upload": True})
        assert made["upload"]["ok"]
        before = snapshot(url)
        restorer_dir = tmp_path / "restore-host"
        restorer = d.settings("ops", **bucket, DBJOBS_BACKUP_DIR=str(restorer_dir))

        health = run_job("dbjobs.status", taker, {"database": "lite"})["backups"]["databases"]["lite"]
        assert health["newest"] == made["id"]
        listed = run_job("dbjobs.list_backups", restorer, {"database": "lite"})["backups"]
        assert [(b["id"], b["encrypted"], b["locations"]) for b in listed] == [(made["id"], True, ["supabase:backups"])]
        _change(url)
        run_job("dbjobs.restore", restorer, {"backup": made["id"], "confirmed": True})
        assert snapshot(url) == before

        rotated = d.settings("ops", **bucket, DBJOBS_BACKUP_DIR=str(restorer_dir),
                             DBJOBS_ENCRYPT_TO=d.keys["stranger"][1])
        new_backup = run_job("dbjobs.backup", rotated, {"database": "lite", "upload": True})
        assert new_backup["encryption"]["recipients"] == [d.keys["stranger"][1]]
        _change(url)
        run_job("dbjobs.restore", rotated, {"backup": made["id"], "confirmed": True})  # old key, old backup
        assert snapshot(url) == before

        rekeyed = run_job("dbjobs.rekey", rotated, {"backup": made["id"]})

        assert rekeyed["changed"] and rekeyed["old_id"] == made["id"]
        remote = SupabaseStorage(fake.url, fake.key, "backups")
        assert made["id"] not in remote.scan().manifests | remote.scan().dumps
        assert rekeyed["backup_id"] in remote.scan().complete
        copy = parse_manifest(remote.read_manifest(rekeyed["backup_id"]), "remote")
        assert copy.encryption["recipients"] == [d.keys["stranger"][1]]  # type: ignore[index]
        assert copy.encryption["compressed_sha256"] == made["encryption"]["compressed_sha256"]  # type: ignore[index]
        assert (copy.row_counts, copy.started_at) == (made["row_counts"], made["started_at"])
        _change(url)
        with pytest.raises(ConfigError, match="not one of the recipients"):
            run_job("dbjobs.restore", restorer, {"backup": rekeyed["backup_id"], "confirmed": True})
        stranger = d.settings("stranger", **bucket, DBJOBS_BACKUP_DIR=str(tmp_path / "third-host"))
        run_job("dbjobs.restore", stranger, {"backup": rekeyed["backup_id"], "confirmed": True})
        assert snapshot(url) == before
        assert run_job("dbjobs.rekey", rotated, {"backup": rekeyed["backup_id"]})["changed"] is False

        cleaned = run_job("dbjobs.cleanup", taker, {"database": "lite", "keep_days": 0, "min_keep": 1})
        assert rekeyed["backup_id"] in {x["id"] for x in cleaned["deleted"]}
        assert rekeyed["backup_id"] not in remote.scan().manifests and new_backup["id"] in remote.scan().complete


def test_rekey_without_the_old_identity_changes_nothing(deployment: Deployment) -> None:
    d = deployment
    made = run_job("dbjobs.backup", d.settings(), {"database": "lite"})
    files = backup_files(d.backups)
    new_key = {"DBJOBS_ENCRYPT_TO": d.keys["stranger"][1]}
    for identity, message in [(None, "set DBJOBS_AGE_IDENTITY_FILE"), ("stranger", "not one of the recipients")]:
        with pytest.raises(ConfigError, match=message):
            run_job("dbjobs.rekey", d.settings(identity, **new_key), {"backup": made["id"]})
        assert backup_files(d.backups) == files
    with pytest.raises(ConfigError, match="DBJOBS_ENCRYPT_TO is not set"):
        run_job("dbjobs.rekey", d.settings("ops", DBJOBS_ENCRYPT_TO=""), {"backup": made["id"]})
    assert backup_files(d.backups) == files


def test_rekey_through_the_worker_that_holds_the_identity(deployment: Deployment) -> None:
    d, url = deployment, deployment.urls["sqlite"]
    made = run_job("dbjobs.backup", d.settings(DBJOBS_ENCRYPT_TO=d.keys["ops"][1]), {"database": "lite"})
    before = snapshot(url)

    rekeyed = cli_json(d.restore_env, d.base, "rekey", made["id"], "--wait")

    assert rekeyed["changed"] and rekeyed["recipients"] == [d.keys["ops"][1], d.keys["glass"][1]]
    assert not (d.backups / f"{made['id']}.manifest.json").exists()
    _change(url)
    run_job("dbjobs.restore", d.settings("glass"), {"backup": rekeyed["backup_id"], "confirmed": True})
    assert snapshot(url) == before
