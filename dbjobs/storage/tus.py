"""Resumable uploads (TUS 1.0.0), as Supabase Storage speaks them, for dumps over the standard-upload limit.

The file goes up in fixed chunks (Supabase requires 6 MiB for every chunk but the last). After
any failure (a 5xx, a 409 lock conflict, a dropped connection) the client asks the server how
much it has (`HEAD` -> `Upload-Offset`) and continues from there, so a flaky link costs a
chunk, not the upload. Consecutive failures are bounded; a success resets the count.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import httpx

from dbjobs.errors import StorageError
from dbjobs.progress import Progress, ProgressCallback

TUS_VERSION = "1.0.0"
CHUNK_SIZE = 6 * 1024 * 1024
PIECE = 1 << 18
RETRYABLE = frozenset({409, 423, 429, 500, 502, 503, 504})


def _pieces(f: BinaryIO, length: int) -> Iterator[bytes]:
    """`length` bytes of `f` in 256 KiB reads: a chunk streams out as it is read, never held whole."""
    while length > 0:
        piece = f.read(min(PIECE, length))
        if not piece:
            raise StorageError("the file being uploaded shrank while it was read")
        length -= len(piece)
        yield piece


class TransientError(Exception):
    """A failure worth retrying after re-reading the server's offset."""


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """TUS `Upload-Metadata`: comma-separated `key base64(value)` pairs."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


def _reason(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")[:200]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def check(response: httpx.Response, *expected: int, what: str = "resumable upload") -> httpx.Response:
    """The response if its status is expected; TransientError if retryable; StorageError otherwise."""
    if response.status_code in expected:
        return response
    if response.status_code in RETRYABLE:
        raise TransientError(_reason(response))
    raise StorageError(f"{what} refused: {_reason(response)}")


class ResumableUpload:
    """One file to one object through a TUS endpoint, resumed from the server's offset after failures."""

    def __init__(self, session: httpx.Client, endpoint: str, headers: Mapping[str, str], *,
                 chunk_size: int = CHUNK_SIZE, attempts: int = 6, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.session = session
        self.endpoint = endpoint
        self.headers = {**headers, "Tus-Resumable": TUS_VERSION}
        self.chunk_size = chunk_size
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep

    def _create(self, size: int, metadata: Mapping[str, str], f: BinaryIO) -> tuple[str, int]:
        """Create the upload carrying the first chunk (TUS creation-with-upload): one round trip saved."""
        length = min(self.chunk_size, size)
        f.seek(0)
        response = check(self.session.post(self.endpoint, content=_pieces(f, length), headers={
            **self.headers, "Upload-Length": str(size), "Upload-Metadata": encode_metadata(metadata),
            "x-upsert": "true", "Content-Length": str(length), "Content-Type": "application/offset+octet-stream"}),
            201)
        location = response.headers.get("Location")
        if not location:
            raise StorageError("resumable upload refused: the server sent no upload location")
        return urljoin(self.endpoint, location), int(response.headers.get("Upload-Offset", 0))

    def _offset(self, location: str) -> int | None:
        response = self.session.head(location, headers=self.headers)
        if response.status_code in (404, 410):  # the server forgot the upload: start a new one
            return None
        return int(check(response, 200, 204).headers["Upload-Offset"])

    def _patch(self, location: str, offset: int, f: BinaryIO, length: int) -> int:
        f.seek(offset)
        response = check(self.session.patch(location, content=_pieces(f, length), headers={
            **self.headers, "Upload-Offset": str(offset), "Content-Length": str(length),
            "Content-Type": "application/offset+octet-stream"}), 204)
        return int(response.headers["Upload-Offset"])

    def upload(self, path: Path, metadata: Mapping[str, str], progress: ProgressCallback) -> int:
        """Send `path`; return how many failures were survived. StorageError when retries run out."""
        size = path.stat().st_size
        location: str | None = None
        offset = 0
        failures = survived = 0
        resync = False
        with open(path, "rb") as f:
            while True:
                try:
                    if location is None:
                        location, offset = self._create(size, metadata, f)
                        progress(Progress("upload", offset, size))
                    if resync:
                        resync = False
                        known = self._offset(location)
                        if known is None:
                            location, offset = None, 0
                            continue
                        offset = known
                    if offset >= size:
                        return survived
                    offset = self._patch(location, offset, f, min(self.chunk_size, size - offset))
                    failures = 0
                    progress(Progress("upload", offset, size))
                except (TransientError, httpx.TransportError) as exc:
                    failures += 1
                    survived += 1
                    if failures >= self.attempts:
                        reason = str(exc) or type(exc).__name__
                        raise StorageError(f"resumable upload stopped at byte {offset} of {size} after "
                                           f"{failures} failed attempts in a row: {reason}") from None
                    self.sleep(self.backoff * 2 ** (failures - 1))
                    resync = location is not None
