"""Where backups are kept: the local backup directory, and Supabase Storage when it is configured."""

from __future__ import annotations

from pathlib import Path

from dbjobs.errors import ConfigError
from dbjobs.settings import Settings
from dbjobs.storage.base import Scan, Storage
from dbjobs.storage.local import LocalStorage
from dbjobs.storage.retry import CALL_WINDOW
from dbjobs.storage.supabase import SupabaseStorage

__all__ = ["LocalStorage", "Scan", "Storage", "SupabaseStorage", "remote_storage", "require_remote", "storages"]

MANIFEST_CACHE = ".remote-manifests"
SUPABASE_VARIABLES = ("SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET")


def remote_storage(settings: Settings, cache_dir: Path | None = None) -> SupabaseStorage | None:
    """The shared remote store if all SUPABASE_* variables are set, None if none is; half a config is an error.

    With `cache_dir`, manifests read from the bucket are kept there, so a listing downloads only new ones.
    SUPABASE_RETRY_SECONDS bounds how long transfers keep retrying an unreachable store (calls: at most 10 s).
    """
    values = (settings.supabase_url, settings.supabase_key, settings.supabase_bucket)
    if not any(values):
        return None
    missing = [name for name, value in zip(SUPABASE_VARIABLES, values, strict=True) if not value]
    if missing:
        raise ConfigError(f"Supabase Storage is half configured: set {', '.join(missing)} "
                          "(or unset all SUPABASE_* variables)")
    window = settings.supabase_retry_seconds
    return SupabaseStorage(settings.supabase_url, settings.supabase_key, settings.supabase_bucket,  # type: ignore[arg-type]
                           chunk_size=int(settings.supabase_chunk_mb * (1 << 20)), transfer_window=window,
                           call_window=min(CALL_WINDOW, window), cache_dir=cache_dir)


def require_remote(settings: Settings) -> SupabaseStorage:
    """The remote store for `--upload`, or a ConfigError naming what to set."""
    remote = remote_storage(settings)
    if remote is None:
        raise ConfigError("--upload needs Supabase Storage: set SUPABASE_URL, SUPABASE_KEY and SUPABASE_BUCKET")
    return remote


def storages(settings: Settings, directory: Path) -> list[Storage]:
    """Every storage this process sees: the local directory first, then the shared remote store."""
    remote = remote_storage(settings, directory / MANIFEST_CACHE)
    return [LocalStorage(directory)] + ([remote] if remote else [])

