"""Supabase Storage as a storage: the shared catalog every worker on every host can see.

Listing, small uploads (manifests, small dumps) and deletes go through the official `supabase`
client (`storage.from_(bucket)`); dumps over the standard-upload limit go up through the TUS
endpoint (`/storage/v1/upload/resumable`) in 6 MiB chunks that resume after failures; dumps
come down streamed through the client's own HTTP session, so memory stays flat at any size.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dbjobs.errors import BackupNotFoundError, ConfigError, StorageError
from dbjobs.manifest import DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest
from dbjobs.pipeline import private_dir
from dbjobs.progress import ProgressCallback
from dbjobs.storage.base import Scan, attempt, receive, scan_names
from dbjobs.storage.tus import CHUNK_SIZE, ResumableUpload, TransientError, check

PAGE = 1000
READERS = 8
ATTEMPTS = 4
ZSTD = {"content-type": "application/zstd", "upsert": "true"}
JSON = {"content-type": "application/json", "upsert": "true"}
T = TypeVar("T")
TIMEOUT = 120.0
REMOVE_BATCH = 500


def _transient(exc: Exception) -> bool:
    """A dropped connection or a 5xx/429: worth another try (every call retried here is idempotent)."""
    if isinstance(exc, httpx.TransportError):
        return True
    status = str(getattr(exc, "status", ""))
    return status.isdigit() and (int(status) >= 500 or int(status) == 429)


def _not_found(exc: Exception) -> bool:
    status = str(getattr(exc, "status", ""))
    return status == "404" or "not found" in str(getattr(exc, "message", "")).lower()


class SupabaseStorage:
    """Backups as objects `<id>.dump.zst` and `<id>.manifest.json` at the root of one bucket."""

    def __init__(self, url: str, key: str, bucket: str, *, chunk_size: int = CHUNK_SIZE,
                 retry_delay: float = 0.5, cache_dir: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self.bucket_name = bucket
        self.chunk_size = chunk_size
        self.retry_delay = retry_delay
        self.cache = cache_dir / bucket if cache_dir else None

    @property
    def where(self) -> str:
        """`supabase:<bucket>` (the project URL and key stay out of listings)."""
        return f"supabase:{self.bucket_name}"

    def local_path(self, manifest: Manifest) -> None:
        """Nothing in a bucket is a local file."""
        return None

    @cached_property
    def _client(self) -> Any:
        from supabase import ClientOptions, create_client

        nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        http = httpx.Client(transport=nodelay, timeout=httpx.Timeout(TIMEOUT, connect=10), follow_redirects=True)
        try:
            return create_client(self.url, self._key, ClientOptions(httpx_client=http))
        except Exception as exc:  # the client raises plain exceptions for a malformed URL or key
            raise ConfigError(f"SUPABASE_URL/SUPABASE_KEY rejected by the supabase client: {exc}") from None

    @property
    def _bucket(self) -> Any:
        return self._client.storage.from_(self.bucket_name)

    @property
    def _session(self) -> httpx.Client:
        return self._client.storage.session

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}", "apikey": self._key}

    @contextlib.contextmanager
    def _api(self, what: str) -> Iterator[None]:
        """Turn the client's and httpx's exceptions into one-line StorageErrors naming the bucket."""
        from storage3.utils import StorageException

        try:
            yield
        except (StorageException, httpx.HTTPError) as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise StorageError(f"Supabase Storage {what} in bucket {self.bucket_name!r} failed: {message}") from None

    def _retry(self, call: Callable[[], T]) -> T:
        """Run an idempotent client call, retrying transient failures with exponential backoff."""
        for tries in range(1, ATTEMPTS + 1):
            try:
                return call()
            except Exception as exc:
                if tries == ATTEMPTS or not _transient(exc):
                    raise
                time.sleep(self.retry_delay * 2 ** (tries - 1))
        raise AssertionError("unreachable")

    def check_bucket(self) -> None:
        """Fail early, as a configuration error, when SUPABASE_BUCKET names no bucket."""
        from storage3.exceptions import StorageApiError

        try:
            with self._api("bucket lookup"):
                self._retry(lambda: self._client.storage.get_bucket(self.bucket_name))
        except StorageError as exc:
            if isinstance(exc.__context__, StorageApiError) and _not_found(exc.__context__):
                raise ConfigError(f"Supabase bucket {self.bucket_name!r} does not exist: create it in the "
                                  "Supabase dashboard or fix SUPABASE_BUCKET") from None
            raise

    def scan(self) -> Scan:
        """All object names, a page of 1000 at a time."""
        names: list[str] = []
        with self._api("listing"):
            while True:
                options = {"limit": PAGE, "offset": len(names), "sortBy": {"column": "name", "order": "asc"}}
                page = self._retry(lambda options=options: self._bucket.list("", options))
                names.extend(item["name"] for item in page)
                if len(page) < PAGE:
                    break
        scan = scan_names(names)
        self._prune_cache(scan.manifests)
        return scan

    def _prune_cache(self, present: frozenset[str]) -> None:
        """Forget cached manifests of backups deleted from the bucket (by any host)."""
        if self.cache is None or not self.cache.is_dir():
            return
        for entry in os.scandir(self.cache):
            if entry.name.endswith(MANIFEST_SUFFIX) and entry.name[: -len(MANIFEST_SUFFIX)] not in present:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def _cached(self, backup_id: str) -> bytes:
        """A manifest from the local cache, else downloaded and cached (manifests never change once written)."""
        assert self.cache is not None
        path = self.cache / (backup_id + MANIFEST_SUFFIX)
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            if data:
                return data
        data = self.read_manifest(backup_id)
        private_dir(self.cache)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data

    def read_manifests(self, backup_ids: Iterable[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Cached manifests at once, the others downloaded by a few threads in parallel."""
        read = self._cached if self.cache is not None else self.read_manifest
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            yield from pool.map(lambda backup_id: attempt(read, backup_id), backup_ids)

    def read_manifest(self, backup_id: str) -> bytes:
        """Download one manifest (a few kB) with the client."""
        from storage3.exceptions import StorageApiError

        try:
            with self._api("manifest download"):
                return self._retry(lambda: self._bucket.download(backup_id + MANIFEST_SUFFIX))
        except StorageError as exc:
            if isinstance(exc.__context__, StorageApiError) and _not_found(exc.__context__):
                raise BackupNotFoundError(f"no backup {backup_id!r} in {self.where}") from None
            raise

    def put(self, dump: Path, manifest: Manifest, progress: ProgressCallback) -> None:
        """Upload the dump (resumable when over one chunk), then the manifest."""
        with self._api("upload"):
            try:
                if dump.stat().st_size > self.chunk_size:
                    endpoint = f"{self.url}/storage/v1/upload/resumable"
                    metadata = {"bucketName": self.bucket_name, "objectName": manifest.file,
                                "contentType": "application/zstd", "cacheControl": "3600"}
                    ResumableUpload(self._session, endpoint, self._auth, chunk_size=self.chunk_size,
                                    backoff=self.retry_delay).upload(dump, metadata, progress)
                else:
                    data = dump.read_bytes()
                    self._retry(lambda: self._bucket.upload(manifest.file, data, ZSTD))
            except OSError as exc:
                raise StorageError(f"cannot read {dump} to upload it: {exc.strerror}") from None
            self._retry(lambda: self._bucket.upload(manifest.manifest_name, manifest.to_json().encode(), JSON))

    def _chunks(self, name: str) -> Iterator[bytes]:
        """The object's bytes; a dropped or failed transfer resumes with a Range request where it stopped."""
        url = f"{self.url}/storage/v1/object/{self.bucket_name}/{name}"
        done = failures = 0
        while True:
            try:
                headers = {**self._auth, "Range": f"bytes={done}-"} if done else self._auth
                with self._session.stream("GET", url, headers=headers) as response:
                    expected = 206 if done else 200
                    if response.status_code != expected:
                        response.read()
                        check(response, expected, what=f"download of {name}")
                    for piece in response.iter_bytes(1 << 20):
                        done += len(piece)
                        failures = 0
                        yield piece
                return
            except (TransientError, httpx.TransportError) as exc:
                failures += 1
                if failures >= ATTEMPTS:
                    raise StorageError(f"download of {name} stopped at byte {done} after {failures} failed "
                                       f"attempts in a row: {str(exc) or type(exc).__name__}") from None
                time.sleep(self.retry_delay * 2 ** (failures - 1))

    def fetch(self, manifest: Manifest, directory: Path, progress: ProgressCallback) -> Path:
        """Stream the dump into `directory`, verifying size and SHA-256 before it gets its name."""
        with self._api("download"):
            return receive(self._chunks(manifest.file), manifest, directory, progress)

    def read_dump(self, manifest: Manifest) -> Iterator[bytes]:
        """The object's bytes, streamed (resuming like a download), for verify to re-hash in place."""
        with self._api("download"):
            yield from self._chunks(manifest.file)

    def delete(self, backup_ids: Sequence[str]) -> None:
        """Remove dumps, then their manifests, in batches; Supabase ignores names that are gone."""
        with self._api("delete"):
            for start in range(0, len(backup_ids), REMOVE_BATCH):
                batch = backup_ids[start: start + REMOVE_BATCH]
                for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX):
                    names = [i + suffix for i in batch]
                    self._retry(lambda names=names: self._bucket.remove(names))
