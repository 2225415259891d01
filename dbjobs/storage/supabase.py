"""Supabase Storage as a storage: the shared catalog every worker on every host can see.

Listing, small uploads (manifests, small dumps) and deletes go through the official `supabase`
client (`storage.from_(bucket)`); dumps over 6 MiB go up through the TUS endpoint
(`/storage/v1/upload/resumable`) in large chunks that resume after failures, and are checked to
be stored whole (object info) before their manifest goes up; dumps come down streamed through
the client's own HTTP session, so memory stays flat at any size, and a download cut short is
continued, not restarted, by the next try. Every failure is one line naming the bucket; a
refused key and a missing bucket are ConfigErrors that say so.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt

from dbjobs.errors import BackupNotFoundError, ConfigError, DbjobsError, StorageError
from dbjobs.manifest import DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest
from dbjobs.pipeline import private_dir
from dbjobs.progress import ProgressCallback
from dbjobs.storage.base import Scan, attempt, receive_resuming, scan_names
from dbjobs.storage.retry import CALL_WINDOW, TRANSFER_WINDOW, Patience, Tries
from dbjobs.storage.tus import CHUNK_SIZE, ResumableUpload, TransientError, check, describe

PAGE = 1000
READERS = 8
ZSTD = {"content-type": "application/zstd", "upsert": "true"}
JSON = {"content-type": "application/json", "upsert": "true"}
T = TypeVar("T")
TIMEOUT = 120.0
REMOVE_BATCH = 500
SMALL = 6 * 1024 * 1024  # dumps up to this size take one standard upload, held in memory
UNPARSED = "Unable to parse error message: "
SERVICE_KEY_HINT = "set SUPABASE_KEY to the project's service_role (secret) key, Project Settings > API"


def key_role(key: str) -> str | None:
    """The role an API key claims: read from the JWT without verifying it (only the server can), or from the
    prefix of the newer `sb_publishable_`/`sb_secret_` keys; None when the key says nothing."""
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    try:
        role = jwt.decode(key, options={"verify_signature": False}).get("role")
    except jwt.InvalidTokenError:
        return None
    return str(role) if role else None


def _status(exc: Exception) -> int | None:
    """The HTTP status a client error stands for: Storage puts the real one in the body of its 400s."""
    status = str(getattr(exc, "status", ""))
    return int(status) if status.isdigit() else None


def _transient(exc: Exception) -> bool:
    """A dropped connection or a 5xx/429: worth another try (every call retried here is idempotent)."""
    if isinstance(exc, httpx.TransportError):
        return True
    status = _status(exc)
    return status is not None and (status >= 500 or status == 429)


def _not_found(exc: Exception) -> bool:
    return _status(exc) == 404 or "not found" in str(getattr(exc, "message", "")).lower()


def _bucket_missing(exc: Exception) -> bool:
    return "bucket not found" in str(getattr(exc, "message", "")).lower()


class SupabaseStorage:
    """Backups as objects `<id>.dump.zst` and `<id>.manifest.json` at the root of one bucket."""

    def __init__(self, url: str, key: str, bucket: str, *, chunk_size: int = CHUNK_SIZE, retry_delay: float = 0.5,
                 transfer_window: float = TRANSFER_WINDOW, call_window: float = CALL_WINDOW,
                 cache_dir: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self.bucket_name = bucket
        self.chunk_size = chunk_size
        self.transfers = Patience(transfer_window, first=retry_delay)
        self.calls = Patience(call_window, first=retry_delay)
        self.cache = cache_dir / bucket if cache_dir else None
        self._bucket_seen = False

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

    def _explain(self, what: str, exc: Exception) -> DbjobsError:
        """One line naming the bucket and what went wrong; a refused key or a missing bucket as a ConfigError."""
        where = f"Supabase Storage {what} in bucket {self.bucket_name!r}"
        if isinstance(exc, httpx.TransportError):
            return StorageError(f"{where} failed: cannot reach {self.url} ({str(exc) or type(exc).__name__})")
        message = str(getattr(exc, "message", None) or exc or type(exc).__name__)
        status = _status(exc)
        if message.startswith(UNPARSED):  # a body that is not Storage's own: the gateway's 502, a proxy's page
            message = describe(status or 0, message.removeprefix(UNPARSED))
        if status == 403:
            return ConfigError(f"{where} failed: SUPABASE_KEY was refused ({message}); {SERVICE_KEY_HINT}")
        if _bucket_missing(exc):
            return self._no_bucket()
        return StorageError(f"{where} failed: {message}")

    def _no_bucket(self) -> ConfigError:
        return ConfigError(f"Supabase bucket {self.bucket_name!r} does not exist (or SUPABASE_KEY cannot see it): "
                           "create it in the Supabase dashboard or fix SUPABASE_BUCKET")

    @contextlib.contextmanager
    def _api(self, what: str) -> Iterator[None]:
        """Turn the client's and httpx's exceptions into one-line errors naming the bucket."""
        from storage3.utils import StorageException

        try:
            yield
        except (StorageException, httpx.HTTPError) as exc:
            raise self._explain(what, exc) from None

    def _retry(self, call: Callable[[], T]) -> T:
        """Run an idempotent client call, retrying transient failures for the calls' patience window."""
        tries = Tries(self.calls)
        while True:
            try:
                return call()
            except Exception as exc:
                if not _transient(exc) or not tries.again():
                    raise

    def check_bucket(self) -> None:
        """ConfigError unless the key is a service key and SUPABASE_BUCKET names a bucket it sees.

        Both need asking: a listing of a missing bucket answers `200 []`, and a non-service key
        sees no private bucket, so either would pass for an empty bucket.
        """
        if self._bucket_seen:
            return
        if key_role(self._key) == "anon":
            raise ConfigError(f"SUPABASE_KEY is the project's anon (public) key, which sees no private bucket: "
                              f"{SERVICE_KEY_HINT}")
        with self._api("bucket lookup"):
            self._retry(lambda: self._client.storage.get_bucket(self.bucket_name))
        self._bucket_seen = True

    def scan(self) -> Scan:
        """All object names, a page of 1000 at a time (folders skipped); an empty bucket is checked to exist."""
        names: list[str] = []
        seen = 0
        with self._api("listing"):
            while True:
                options = {"limit": PAGE, "offset": seen, "sortBy": {"column": "name", "order": "asc"}}
                page = self._retry(lambda options=options: self._bucket.list("", options))
                seen += len(page)
                names.extend(item["name"] for item in page if item.get("id") is not None)
                if len(page) < PAGE:
                    break
        if not seen:
            self.check_bucket()
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
        """Upload the dump (resumable when over one chunk), check it is stored whole, then upload the manifest."""
        self.check_bucket()
        with self._api("upload"):
            try:
                if dump.stat().st_size > SMALL:
                    self._put_resumable(dump, manifest, progress)
                else:
                    data = dump.read_bytes()
                    self._retry(lambda: self._bucket.upload(manifest.file, data, ZSTD))
            except OSError as exc:
                raise StorageError(f"cannot read {dump} to upload it: {exc.strerror}") from None
            self._retry(lambda: self._bucket.upload(manifest.manifest_name, manifest.to_json().encode(), JSON))

    def _put_resumable(self, dump: Path, manifest: Manifest, progress: ProgressCallback) -> None:
        """TUS upload, then object info: a server that died between taking the last byte and creating the
        object reports the full offset with no object behind it, so the dump is sent again (once)."""
        endpoint = f"{self.url}/storage/v1/upload/resumable"
        metadata = {"bucketName": self.bucket_name, "objectName": manifest.file,
                    "contentType": "application/zstd", "cacheControl": "3600"}
        what = f"resumable upload of {manifest.file} to bucket {self.bucket_name!r}"
        tries = Tries(self.transfers)
        for _ in range(2):
            ResumableUpload(self._session, endpoint, self._auth, what=what, chunk_size=self.chunk_size,
                            tries=tries).upload(dump, metadata, progress)
            stored = self._stored_size(manifest.file)
            if stored == manifest.size:
                return
        raise StorageError(f"{what} failed: the server took every byte but holds "
                           f"{'no object' if stored is None else f'{stored} bytes'} under that name, twice")

    def _stored_size(self, name: str) -> int | None:
        """The size Storage has for an object (object info), None if it has no such object."""
        from storage3.exceptions import StorageApiError

        try:
            info = self._retry(lambda: self._bucket.info(name))
        except StorageApiError as exc:
            if _not_found(exc) and not _bucket_missing(exc):
                return None
            raise
        size = info.get("size", (info.get("metadata") or {}).get("size"))
        return int(size) if size is not None else None

    def _chunks(self, name: str, start: int) -> Iterator[bytes]:
        """The object's bytes from `start`; a dropped or failed transfer resumes with a Range request where it
        stopped, for as long as the transfers' patience lasts (a server restart is ridden out)."""
        url = f"{self.url}/storage/v1/object/{self.bucket_name}/{name}"
        done = start
        tries = Tries(self.transfers)
        while True:
            try:
                headers = {**self._auth, "Range": f"bytes={done}-"} if done else self._auth
                with self._session.stream("GET", url, headers=headers) as response:
                    expected = 206 if done else 200
                    if response.status_code != expected:
                        response.read()
                        check(response, expected, what=f"download of {name} from bucket {self.bucket_name!r}")
                    for piece in response.iter_bytes(1 << 20):
                        done += len(piece)
                        tries.succeeded()
                        yield piece
                return
            except (TransientError, httpx.TransportError) as exc:
                if not tries.again():
                    raise StorageError(f"download of {name} from bucket {self.bucket_name!r} stopped at byte {done} "
                                       f"after {tries.failures} failed attempts in {tries.waited:.0f} s: "
                                       f"{str(exc) or type(exc).__name__} (a retry resumes from there)") from None

    def fetch(self, manifest: Manifest, directory: Path, progress: ProgressCallback) -> Path:
        """Stream the dump into `directory`, verifying size and SHA-256 before it gets its name; what a failed
        download got is kept, so the next try continues after it."""
        with self._api("download"):
            return receive_resuming(lambda start: self._chunks(manifest.file, start), manifest, directory, progress)

    def read_dump(self, manifest: Manifest) -> Iterator[bytes]:
        """The object's bytes, streamed (resuming like a download), for verify to re-hash in place."""
        with self._api("download"):
            yield from self._chunks(manifest.file, 0)

    def delete(self, backup_ids: Sequence[str]) -> None:
        """Remove dumps, then their manifests, in batches; Supabase ignores names that are gone."""
        with self._api("delete"):
            for start in range(0, len(backup_ids), REMOVE_BATCH):
                batch = backup_ids[start: start + REMOVE_BATCH]
                for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX):
                    names = [i + suffix for i in batch]
                    self._retry(lambda names=names: self._bucket.remove(names))
