"""A local stand-in for Supabase Storage: the REST endpoints the `supabase` client calls and the TUS endpoints.

It stores objects as files under a directory, checks the API key, speaks HTTP/1.1 with
keep-alive like the real service, and fails on demand (HTTP 500s, connections dropped part-way
through a request body) so tests can prove that uploads resume instead of restarting. A plain
`PUT /plain/<name>` endpoint stores a request body as is: the benchmark's anchor.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import shutil
import socket
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

BLOCK = 1 << 20


@dataclass
class Fault:
    """Fail the next `times` requests whose method matches and whose path contains `path`."""

    method: str
    path: str
    kind: str  # "500" or "drop"
    times: int = 1
    after: int = 0  # for "drop": bytes of the body accepted before the connection is cut


@dataclass
class Upload:
    """A resumable upload in progress: where it goes and how much has arrived."""
    bucket: str
    name: str
    length: int
    offset: int = 0


class FakeSupabase:
    """The server; use as a context manager. `url` is what SUPABASE_URL would be, `key` SUPABASE_KEY."""

    KEY = "service-role-test-key"

    def __init__(self, root: Path, key: str = KEY, buckets: tuple[str, ...] = ("backups",)):
        self.root = root
        self.key = key
        self.buckets = set(buckets)
        for b in buckets:
            (root / b).mkdir(parents=True, exist_ok=True)
        (root / ".tus").mkdir(parents=True, exist_ok=True)
        self.faults: list[Fault] = []
        self.uploads: dict[str, Upload] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.tus_bytes = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeSupabase:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, kind: str, times: int = 1, after: int = 0) -> None:
        """Make the next matching requests fail."""
        with self.lock:
            self.faults.append(Fault(method, path, kind, times, after))

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The fault to inject into this request, if one is pending (each fires `times` times)."""
        with self.lock:
            for f in self.faults:
                if f.method == method and f.path in path and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def object_path(self, bucket: str, name: str) -> Path:
        """Where an object is stored on disk."""
        return self.root / bucket / name

    def names(self, bucket: str = "backups") -> list[str]:
        """Object names in a bucket."""
        return sorted(p.name for p in (self.root / bucket).iterdir())


def _handler(fake: FakeSupabase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """One connection: routes Storage REST and TUS requests to methods named `_<verb>_<first path part>`."""
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            """Quiet: tests read counters, not logs."""
            pass

        def setup(self) -> None:
            """No Nagle, like the real service's proxies: a response's headers and body never wait for an ACK."""
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = memoryview(bytearray(BLOCK))  # one per connection, reused by every request

        # -- plumbing ---------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body or status not in (204,):
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode())

        def _error(self, http: int, code: str, message: str) -> None:
            self._json(http, {"statusCode": str(http if http != 400 else 404), "error": code, "message": message})

        def _length(self) -> int:
            return int(self.headers.get("Content-Length") or 0)

        def _body(self) -> bytes:
            return self.rfile.read(self._length())

        def _copy_body(self, out: Any, limit: int | None = None) -> int:
            remaining = self._length() if limit is None else min(limit, self._length())
            done = 0
            while remaining:
                n = self.rfile.readinto(self.buffer[: min(BLOCK, remaining)])
                if not n:
                    break
                out.write(self.buffer[:n])
                done += n
                remaining -= n
            return done

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _dispatch(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            fake.requests[f"{self.command} {path.split('/')[3] if path.count('/') > 2 else path}"] += 1
            fault = fake.take_fault(self.command, path)
            if fault and fault.kind == "500":
                self._body() if self.command != "HEAD" else None
                return self._error(500, "InternalError", "injected failure")
            if path.startswith("/plain/"):
                with open(fake.root / path.rsplit("/", 1)[1], "wb", buffering=0) as f:
                    self._copy_body(f)
                return self._send(200, b"{}")
            if self.headers.get("Authorization") != f"Bearer {fake.key}" or self.headers.get("apikey") != fake.key:
                self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else None
                return self._json(400, {"statusCode": "403", "error": "Unauthorized", "message": "Invalid JWT"})
            parts = path.removeprefix("/storage/v1/").split("/")
            route = getattr(self, f"_{self.command.lower()}_{parts[0].replace('-', '_')}", None)
            if route is None:
                self._body()
                return self._error(404, "not_found", f"no route {self.command} {path}")
            route(parts[1:], fault)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch

        # -- buckets and objects ----------------------------------------------------
        def _get_bucket(self, parts: list[str], fault: Fault | None) -> None:
            if parts[0] not in fake.buckets:
                return self._error(400, "Bucket not found", "Bucket not found")
            now = datetime.now(UTC).isoformat()
            self._json(200, {"id": parts[0], "name": parts[0], "owner": "", "public": False, "created_at": now,
                             "updated_at": now, "file_size_limit": None, "allowed_mime_types": None})

        def _bucket_or_404(self, bucket: str) -> bool:
            if bucket in fake.buckets:
                return True
            self._error(400, "Bucket not found", "Bucket not found")
            return False

        def _post_object(self, parts: list[str], fault: Fault | None) -> None:
            if parts[0] == "list":
                body = json.loads(self._body() or b"{}")
                if not self._bucket_or_404(parts[1]):
                    return None
                names = sorted(p.name for p in (fake.root / parts[1]).iterdir())
                start = int(body.get("offset", 0))
                page = names[start: start + int(body.get("limit", 100))]
                return self._json(200, [{"name": n, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, n)),
                                         "metadata": {"size": fake.object_path(parts[1], n).stat().st_size}}
                                        for n in page])
            data = self._multipart_file(self._body())
            if not self._bucket_or_404(parts[0]):
                return None
            target = fake.object_path(parts[0], "/".join(parts[1:]))
            if target.exists() and self.command == "POST" and self.headers.get("x-upsert") != "true":
                return self._json(400, {"statusCode": "409", "error": "Duplicate",
                                        "message": "The resource already exists"})
            target.write_bytes(data)
            self._json(200, {"Key": f"{parts[0]}/{'/'.join(parts[1:])}", "Id": str(uuid.uuid4())})

        _put_object = _post_object

        def _multipart_file(self, body: bytes) -> bytes:
            boundary = self.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
            for part in body.split(b"--" + boundary):
                head, _, content = part.partition(b"\r\n\r\n")
                if b'name="file"' in head:
                    return content[:-2]
            raise ValueError("no file part in the upload")

        def _get_object(self, parts: list[str], fault: Fault | None) -> None:
            if not self._bucket_or_404(parts[0]):
                return None
            target = fake.object_path(parts[0], "/".join(parts[1:]))
            if not target.is_file():
                return self._error(400, "not_found", "Object not found")
            size = target.stat().st_size
            start = int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0])
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            with open(target, "rb") as f:
                f.seek(start)
                if fault and fault.kind == "drop":
                    self.wfile.write(f.read(fault.after))
                    return self._drop()
                shutil.copyfileobj(f, self.wfile, BLOCK)

        def _delete_object(self, parts: list[str], fault: Fault | None) -> None:
            prefixes = json.loads(self._body())["prefixes"]
            if not self._bucket_or_404(parts[0]):
                return None
            deleted = []
            for name in prefixes:
                target = fake.object_path(parts[0], name)
                if target.is_file():
                    target.unlink()
                    deleted.append({"name": name, "bucket_id": parts[0]})
            self._json(200, deleted)

        # -- TUS --------------------------------------------------------------------
        def _tus_headers(self, upload: Upload) -> dict[str, str]:
            return {"Tus-Resumable": "1.0.0", "Upload-Offset": str(upload.offset),
                    "Upload-Length": str(upload.length), "Cache-Control": "no-store"}

        def _post_upload(self, parts: list[str], fault: Fault | None) -> None:
            meta = dict(item.split(" ", 1) for item in self.headers.get("Upload-Metadata", "").split(",") if item)
            meta = {k: base64.b64decode(v).decode() for k, v in meta.items()}
            if meta.get("bucketName") not in fake.buckets:
                return self._error(404, "Bucket not found", "Bucket not found")
            uid = uuid.uuid4().hex
            upload = Upload(meta["bucketName"], meta["objectName"], int(self.headers["Upload-Length"]))
            fake.uploads[uid] = upload
            (fake.root / ".tus" / uid).touch()
            if self._length():  # creation-with-upload: the first chunk rides along
                return self._receive(uid, upload, fault, created=True)
            self._send(201, headers={**self._tus_headers(upload),
                                     "Location": f"{fake.url}/storage/v1/upload/resumable/{uid}"})

        def _upload_of(self, parts: list[str]) -> Upload | None:
            upload = fake.uploads.get(parts[-1])
            if upload is None:
                self._body() if self.command == "PATCH" else None
                self._send(404, headers={"Tus-Resumable": "1.0.0"})
            return upload

        def _head_upload(self, parts: list[str], fault: Fault | None) -> None:
            upload = self._upload_of(parts)
            if upload is not None:
                self._send(200, headers=self._tus_headers(upload))

        def _patch_upload(self, parts: list[str], fault: Fault | None) -> None:
            upload = self._upload_of(parts)
            if upload is None:
                return None
            if int(self.headers["Upload-Offset"]) != upload.offset:
                self._body()
                return self._send(409, headers=self._tus_headers(upload))
            self._receive(parts[-1], upload, fault, created=False)

        def _receive(self, uid: str, upload: Upload, fault: Fault | None, created: bool) -> None:
            with open(fake.root / ".tus" / uid, "ab", buffering=0) as f:
                got = self._copy_body(f, fault.after if fault else None)
            upload.offset += got
            fake.tus_bytes += got
            if fault:
                return self._drop()
            if upload.offset == upload.length:
                (fake.root / ".tus" / uid).replace(fake.object_path(upload.bucket, upload.name))
            location = {"Location": f"{fake.url}/storage/v1/upload/resumable/{uid}"} if created else {}
            self._send(201 if created else 204, headers={**self._tus_headers(upload), **location})

    return Handler


def main() -> None:
    """Serve a directory in its own process until stdin closes: `python -m tests.support.fake_supabase DIR`."""
    with FakeSupabase(Path(sys.argv[1])) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
