"""Resumable uploads (TUS 1.0.0), as Supabase Storage speaks them, for dumps over the standard-upload limit.

The file goes up in large chunks, each streamed from disk, never held whole (a proxy that
refuses a body that large with 413 gets Supabase's usual 6 MiB chunks instead). After any failure
(a 5xx, a 409 offset conflict, a dropped connection, the server restarting) the client asks the
server how much it has (`HEAD` -> `Upload-Offset`) and continues from there, so a flaky link
costs a chunk's unsent rest, not the upload. Failures in a row are retried for a time window
(`retry.Patience`); a chunk that gets through starts it again.

Supabase checks `x-upsert: true` on every TUS request, not only the creating `POST`: without
it each `PATCH` for a name that exists is refused `409 The resource already exists`, the same
status as an offset conflict. So every request carries it, and that 409 is a refusal, never retried.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import httpx

from dbjobs.errors import StorageError
from dbjobs.progress import Progress, ProgressCallback
from dbjobs.storage.retry import Patience, Tries

TUS_VERSION = "1.0.0"
CHUNK_SIZE = 128 * 1024 * 1024  # measured in bench_ops: with 20 ms a request, 6 MiB chunks cost half the speed
SMALL_CHUNK = 6 * 1024 * 1024  # what Supabase's own clients send: the fallback when a proxy refuses a large body
PIECE = 1 << 20
RETRYABLE = frozenset({409, 423, 429, 500, 502, 503, 504})
ALREADY_EXISTS = "already exists"


def _pieces(f: BinaryIO, length: int) -> Iterator[bytes]:
    """`length` bytes of `f` in 1 MiB reads: a chunk streams out as it is read, never held whole."""
    while length > 0:
        piece = f.read(min(PIECE, length))
        if not piece:
            raise StorageError("the file being uploaded shrank while it was read")
        length -= len(piece)
        yield piece


class TransientError(Exception):
    """A failure worth retrying after re-reading the server's offset."""


class TooLargeError(StorageError):
    """HTTP 413: the object is over a size limit, or a proxy in front refuses a request body that large."""


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """TUS `Upload-Metadata`: comma-separated `key base64(value)` pairs."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


def describe(status: int, body: str) -> str:
    """One line for an HTTP failure: a gateway 502 says what it means, a JSON body gives its message."""
    text = body.strip().replace("\n", " ")
    try:
        parsed = json.loads(text)
        text = str(parsed.get("message") or text) if isinstance(parsed, dict) else text
    except ValueError:
        pass
    text = text[:200]
    if status == 502:
        return ("HTTP 502 from the Supabase gateway: the storage server behind it is down or restarting"
                + (f" ({text})" if text else ""))
    return f"HTTP {status}" + (f": {text}" if text else "")


def check(response: httpx.Response, *expected: int, what: str) -> httpx.Response:
    """The response if its status is expected; TransientError if retryable; StorageError otherwise."""
    if response.status_code in expected:
        return response
    reason = describe(response.status_code, response.text)
    if response.status_code == 409 and ALREADY_EXISTS in response.text:
        raise StorageError(f"{what} refused: the object already exists and the server would not overwrite it "
                           f"({reason}); dbjobs sends x-upsert: true with every request, so check that no proxy "
                           "drops that header")
    if response.status_code in RETRYABLE:
        raise TransientError(reason)
    raise (TooLargeError if response.status_code == 413 else StorageError)(f"{what} refused: {reason}")


class ResumableUpload:
    """One file to one object through a TUS endpoint, resumed from the server's offset after failures."""

    def __init__(self, session: httpx.Client, endpoint: str, headers: Mapping[str, str], *, what: str,
                 chunk_size: int = CHUNK_SIZE, patience: Patience | None = None, tries: Tries | None = None) -> None:
        self.session = session
        self.endpoint = endpoint
        self.headers = {**headers, "Tus-Resumable": TUS_VERSION, "x-upsert": "true"}
        self.what = what
        self.chunk_size = chunk_size
        self.tries = tries or Tries(patience or Patience())

    def _create(self, size: int, metadata: Mapping[str, str], f: BinaryIO) -> tuple[str, int]:
        """Create the upload carrying the first chunk (TUS creation-with-upload): one round trip saved."""
        length = min(self.chunk_size, size)
        f.seek(0)
        response = check(self.session.post(self.endpoint, content=_pieces(f, length), headers={
            **self.headers, "Upload-Length": str(size), "Upload-Metadata": encode_metadata(metadata),
            "Content-Length": str(length), "Content-Type": "application/offset+octet-stream"}),
            201, what=self.what)
        location = response.headers.get("Location")
        if not location:
            raise StorageError(f"{self.what} refused: the server sent no upload location")
        return urljoin(self.endpoint, location), int(response.headers.get("Upload-Offset", 0))

    def _offset(self, location: str) -> int | None:
        response = self.session.head(location, headers=self.headers)
        if response.status_code in (404, 410):  # the server forgot the upload: start a new one
            return None
        return int(check(response, 200, 204, what=self.what).headers["Upload-Offset"])

    def _patch(self, location: str, offset: int, f: BinaryIO, length: int) -> int:
        f.seek(offset)
        response = check(self.session.patch(location, content=_pieces(f, length), headers={
            **self.headers, "Upload-Offset": str(offset), "Content-Length": str(length),
            "Content-Type": "application/offset+octet-stream"}), 204, what=self.what)
        return int(response.headers["Upload-Offset"])

    def upload(self, path: Path, metadata: Mapping[str, str], progress: ProgressCallback) -> int:
        """Send `path`; return how many failures were survived. StorageError when patience runs out.

        Done means the server holds every byte; whether it also finalised the object is for the
        caller to check (a server that dies between the two reports the full offset, no object).
        """
        size = path.stat().st_size
        location: str | None = None
        offset = 0
        survived = 0
        resync = False
        with open(path, "rb") as f:
            while True:
                try:
                    if location is None:
                        location, offset = self._create(size, metadata, f)
                        self.tries.succeeded()
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
                    self.tries.succeeded()
                    progress(Progress("upload", offset, size))
                except TooLargeError:
                    if self.chunk_size <= SMALL_CHUNK:
                        raise
                    self.chunk_size = SMALL_CHUNK  # a proxy's body limit, or the object's: small chunks tell
                    resync = location is not None
                except (TransientError, httpx.TransportError) as exc:
                    survived += 1
                    if not self.tries.again():
                        reason = str(exc) or type(exc).__name__
                        raise StorageError(f"{self.what} stopped at byte {offset} of {size} after "
                                           f"{self.tries.failures} failed attempts in {self.tries.waited:.0f} s: "
                                           f"{reason}") from None
                    resync = location is not None
