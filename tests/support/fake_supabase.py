"""A local stand-in for Supabase Storage behind its gateway, written from what the real server was seen to do.

Observed on supabase/storage 1.11.2 (file backend) behind a gateway that strips `/storage/v1` as
Kong does, and modelled here because each one changes what dbjobs must do:

- Errors of the REST API are HTTP 400 with a JSON body whose `statusCode` is the real code as a
  string: `"404"` `Bucket not found` / `Object not found`, `"409"` `The resource already exists`
  (a standard upload of an existing name without `x-upsert`), `"413"` over the size limit, `"415"` a
  content type the bucket does not allow.
- Keys are JWTs signed with the project's secret and carry a `role`. The `service_role` key sees
  every bucket. The `anon` key sees no private bucket: bucket info answers `Bucket not found`, a
  listing `200 []`, uploads are refused by row-level security (`"403"`). A key whose signature does
  not verify: HTTP 400, `statusCode: "403"`, `code: "AccessDenied"`.
- A listing of a missing bucket is `200 []`, not an error. A listing shows one level under
  `prefix`: objects, and folders as entries with `id: null` and `metadata: null`.
- Object info (`GET /object/info/<bucket>/<name>`) has the stored `size`; a missing object is
  `"404"` `not_found`.
- TUS (`/upload/resumable`): creation (with the first bytes riding along), `HEAD` and `PATCH`.
  Once the name exists as an object, every `POST` and `PATCH` needs `x-upsert: true`, else `409`
  with the `text/plain` body `The resource already exists`; `409` also answers a `PATCH` whose
  `Upload-Offset` is not the server's. `Upload-Length` over the size limit (the server's or the
  bucket's) is `413`; a content type the bucket does not allow is `415`. The bytes of a `PATCH`
  cut off part-way are kept. When the last byte arrives the upload is finalised (the object is
  created) and only then answered `204` with `Tus-Complete: 1`: a crash in between leaves an
  upload whose `HEAD` shows the full offset while object info says not found. Upload state is
  kept on disk, so an upload resumes across a restart of the server.
- When the storage behind the gateway is down, the gateway answers every request `502` with
  `{"message": "An invalid response was received from the upstream server"}`; a restart of the
  whole service refuses connections for a while, then it is back on the same port.

Faults are injected on demand (500s, connections cut part-way through a body, a crash before
the finalise step), `latency` delays every answer as a real network and server do, and
`body_limit` puts a proxy in front that refuses larger request bodies with 413, as CDNs do (not
seen on the self-hosted server; there to prove the client copes with one). A plain
`PUT /plain/<name>` stores a request body as is, written and renamed into place as the finalise
step stores an object, so the two differ only in protocol: the benchmark's anchor.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt

BLOCK = 1 << 20
SECRET = "fake-supabase-jwt-secret-for-tests-only"
GATEWAY_DOWN = {"message": "An invalid response was received from the upstream server"}
EXISTS = "The resource already exists"


def make_key(role: str, secret: str = SECRET) -> str:
    """A project API key as Supabase issues them: an HS256 JWT whose `role` claim says what it may see."""
    return jwt.encode({"iss": "supabase", "role": role, "iat": 1_700_000_000, "exp": 4_000_000_000}, secret,
                      algorithm="HS256")


@dataclass
class Fault:
    """Fail the next `times` requests whose method matches and whose path contains `path`.

    Kinds: "500"; "drop" (cut the connection after `after` bytes of the body, which are kept, or of
    a download); "unfinalised" (take every byte of a TUS PATCH, then die before the object is
    created). With `down_for`, the server then restarts and refuses connections that long.
    """

    method: str
    path: str
    kind: str
    times: int = 1
    after: int = 0
    down_for: float = 0.0


@dataclass
class Bucket:
    """A bucket's settings, as the dashboard sets them."""

    public: bool = False
    file_size_limit: int | None = None
    allowed_mime_types: list[str] | None = None


@dataclass
class Upload:
    """A resumable upload, stored as `<id>.json` beside its bytes `<id>.bin` (the offset is their size)."""

    bucket: str
    name: str
    length: int
    content_type: str
    finalised: bool = False


class FakeSupabase:
    """The server; use as a context manager. `url` is what SUPABASE_URL would be, `key` SUPABASE_KEY."""

    KEY = make_key("service_role")
    ANON_KEY = make_key("anon")

    def __init__(self, root: Path, key: str = KEY, buckets: dict[str, Bucket] | tuple[str, ...] = ("backups",),
                 *, latency: float = 0.0, size_limit: int = 50 << 30, body_limit: int | None = None, port: int = 0):
        self.root = root
        self.key = key
        self.buckets = buckets if isinstance(buckets, dict) else {b: Bucket() for b in buckets}
        for b in self.buckets:
            (root / b).mkdir(parents=True, exist_ok=True)
        self.tus = root / ".tus"
        self.tus.mkdir(parents=True, exist_ok=True)
        self.latency = latency
        self.size_limit = size_limit
        self.body_limit = body_limit
        self.storage_up = True
        self.faults: list[Fault] = []
        self.requests: collections.Counter[str] = collections.Counter()
        self.tus_bytes = 0
        self.sent: collections.Counter[str] = collections.Counter()  # bytes downloaded, per object name
        self.lock = threading.Lock()
        self.server = self._listen(port)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread: threading.Thread | None = None
        self.closed = False

    def _listen(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        server.daemon_threads = True
        return server

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop answering and close the port: clients get connection refused (a crash or restart)."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeSupabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True  # a restart still under way does not come back
        self.stop()

    def restart(self, down_for: float) -> threading.Thread:
        """Go away for `down_for` seconds, then come back on the same port with what is on disk."""
        port = self.server.server_address[1]
        self.stop()

        def back() -> None:
            time.sleep(down_for)
            if not self.closed:
                self.server = self._listen(port)
                self.start()

        thread = threading.Thread(target=back, daemon=True)
        thread.start()
        return thread

    @contextlib.contextmanager
    def storage_down(self) -> Any:
        """The gateway stays up while the storage behind it is down: every request gets its 502."""
        self.storage_up = False
        try:
            yield
        finally:
            self.storage_up = True

    def fail(self, method: str, path: str, kind: str, times: int = 1, after: int = 0, down_for: float = 0.0) -> None:
        """Make the next matching requests fail."""
        with self.lock:
            self.faults.append(Fault(method, path, kind, times, after, down_for))

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
        """Object names at the root of a bucket."""
        return sorted(p.name for p in (self.root / bucket).iterdir() if p.is_file())

    def forget_uploads(self) -> None:
        """Lose every resumable upload in progress (the server's TUS state is wiped)."""
        for path in self.tus.iterdir():
            path.unlink()

    def upload_state(self, uid: str) -> Upload | None:
        """A resumable upload as stored on disk, or None if the server does not know it."""
        try:
            return Upload(**json.loads((self.tus / f"{uid}.json").read_bytes()))
        except (FileNotFoundError, ValueError):
            return None

    def role_of(self, key: str | None) -> str | None:
        """The role a key carries if its signature verifies, else None."""
        try:
            return str(jwt.decode(key or "", SECRET, algorithms=["HS256"]).get("role"))
        except jwt.InvalidTokenError:
            return None


def _handler(fake: FakeSupabase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """One connection: routes Storage REST and TUS requests to methods named `_<verb>_<first path part>`."""
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            """Quiet: tests read counters, not logs."""

        def setup(self) -> None:
            """No Nagle, like the real service's proxies: a response's headers and body never wait for an ACK."""
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = memoryview(bytearray(BLOCK))  # one per connection, reused by every request
            self.role: str | None = None

        # -- plumbing ---------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body or status != 204:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode())

        def _error(self, status: str, code: str, error: str, message: str) -> None:
            """Storage's REST error: always HTTP 400, the real status as a string in the body."""
            self._json(400, {"statusCode": status, "code": code, "error": error, "message": message})

        def _text(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            """Storage's TUS error: the real status, a plain-text body."""
            self._send(status, message.encode(), {"Tus-Resumable": "1.0.0", **(headers or {})}, "text/plain")

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

        def _drop(self, fault: Fault) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            if fault.down_for:
                fake.restart(fault.down_for)

        def _dispatch(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            fake.requests[f"{self.command} {path.split('/')[3] if path.count('/') > 2 else path}"] += 1
            if fake.latency:
                time.sleep(fake.latency)
            if not fake.storage_up:
                self._body()
                return self._json(502, GATEWAY_DOWN)
            if fake.body_limit is not None and self._length() > fake.body_limit:
                self._body()
                return self._send(413, b"<html>413 Request Entity Too Large</html>", content_type="text/html")
            fault = fake.take_fault(self.command, path)
            if fault and fault.kind == "500":
                self._body()
                return self._json(500, {"statusCode": "500", "code": "InternalError", "error": "internal",
                                        "message": "injected failure"})
            if path.startswith("/plain/"):
                target = fake.root / path.rsplit("/", 1)[1]
                with open(target.with_name(target.name + ".new"), "wb", buffering=0) as f:
                    self._copy_body(f)
                os.replace(f.name, target)  # stored as every object is: a new file renamed into place
                return self._send(200, b"{}")
            self.role = fake.role_of(self.headers.get("Authorization", "").removeprefix("Bearer "))
            if self.role is None or self.headers.get("apikey") is None:
                self._body()
                return self._error("403", "AccessDenied", "Unauthorized", "invalid signature")
            parts = path.removeprefix("/storage/v1/").split("/")
            route = getattr(self, f"_{self.command.lower()}_{parts[0].replace('-', '_')}", None)
            if route is None:
                self._body()
                return self._error("404", "NotFound", "not_found", f"Route {self.command}:{path} not found")
            route(parts[1:], fault)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch

        # -- buckets and objects ----------------------------------------------------
        def _visible(self, bucket: str) -> Bucket | None:
            """The bucket if it exists and this key may see it (row-level security hides private ones from anon)."""
            found = fake.buckets.get(bucket)
            if found is None or (self.role != "service_role" and not found.public):
                return None
            return found

        def _no_bucket(self) -> None:
            self._error("404", "NoSuchBucket", "Bucket not found", "Bucket not found")

        def _get_bucket(self, parts: list[str], fault: Fault | None) -> None:
            bucket = self._visible(parts[0])
            if bucket is None:
                return self._no_bucket()
            now = datetime.now(UTC).isoformat()
            self._json(200, {"id": parts[0], "name": parts[0], "owner": "", "created_at": now, "updated_at": now,
                             **asdict(bucket)})

        def _post_object(self, parts: list[str], fault: Fault | None) -> None:
            if parts[0] == "list":
                return self._list(parts[1], json.loads(self._body() or b"{}"))
            content_type, data = self._multipart_file(self._body())
            bucket = fake.buckets.get(parts[0])
            if bucket is None:
                return self._no_bucket()
            if self.role != "service_role":
                return self._error("403", "AccessDenied", "Unauthorized", "new row violates row-level security policy")
            refused = self._refusal(bucket, len(data), content_type)
            if refused:
                return self._error(str(refused[0]), refused[1], refused[1], refused[2])
            name = "/".join(parts[1:])
            target = fake.object_path(parts[0], name)
            if target.exists() and self.headers.get("x-upsert") != "true":
                return self._error("409", "Duplicate", "Duplicate", EXISTS)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self._json(200, {"Key": f"{parts[0]}/{name}", "Id": str(uuid.uuid4())})

        _put_object = _post_object

        def _list(self, bucket: str, body: dict[str, Any]) -> None:
            if self._visible(bucket) is None:
                return self._json(200, [])  # a missing (or hidden) bucket lists as empty: no error
            prefix = body.get("prefix", "").strip("/")
            folder = fake.root / bucket / prefix
            entries = sorted(os.scandir(folder), key=lambda e: e.name) if folder.is_dir() else []
            start = int(body.get("offset", 0))
            page = entries[start: start + int(body.get("limit", 100))]
            self._json(200, [self._entry(e) for e in page])

        @staticmethod
        def _entry(entry: os.DirEntry) -> dict[str, Any]:
            if entry.is_dir():
                return {"name": entry.name, "id": None, "updated_at": None, "created_at": None,
                        "last_accessed_at": None, "metadata": None}
            stat = entry.stat()
            when = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
            return {"name": entry.name, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, entry.path)), "updated_at": when,
                    "created_at": when, "last_accessed_at": when,
                    "metadata": {"size": stat.st_size, "mimetype": "application/octet-stream"}}

        @staticmethod
        def _refusal(bucket: Bucket, size: int, content_type: str) -> tuple[int, str, str] | None:
            """Why the bucket or the server refuses an object of this size and type, if it does."""
            limit = min(fake.size_limit, bucket.file_size_limit or fake.size_limit)
            if size > limit:
                return 413, "EntityTooLarge", "The object exceeded the maximum allowed size"
            allowed = bucket.allowed_mime_types
            if allowed and content_type.split(";")[0].strip() not in allowed:
                return 415, "InvalidMimeType", f"mime type {content_type} is not supported"
            return None

        def _multipart_file(self, body: bytes) -> tuple[str, bytes]:
            """The file part of a standard upload: its own content type (what the bucket checks) and bytes."""
            boundary = self.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
            for part in body.split(b"--" + boundary):
                head, _, content = part.partition(b"\r\n\r\n")
                if b'name="file"' in head:
                    types = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                             if line.lower().startswith(b"content-type:")]
                    return (types or ["application/octet-stream"])[0], content[:-2]
            raise ValueError("no file part in the upload")

        def _readable(self, parts: list[str]) -> Path | None:
            """The stored object a GET names, or None after answering the error this key gets."""
            if self._visible(parts[0]) is None:
                self._no_bucket()
                return None
            target = fake.object_path(parts[0], "/".join(parts[1:]))
            if not target.is_file():
                self._error("404", "NoSuchKey", "not_found", "Object not found")
                return None
            return target

        def _get_object(self, parts: list[str], fault: Fault | None) -> None:
            if parts[0] == "info":
                return self._info(parts[1:])
            target = self._readable(parts)
            if target is None:
                return None
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
                    fake.sent[target.name] += fault.after
                    return self._drop(fault)
                shutil.copyfileobj(f, self.wfile, BLOCK)
                fake.sent[target.name] += size - start

        def _info(self, parts: list[str]) -> None:
            target = self._readable(parts)
            if target is None:
                return None
            stat = target.stat()
            when = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
            self._json(200, {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(target))), "name": "/".join(parts[1:]),
                             "bucket_id": parts[0], "version": str(stat.st_mtime_ns), "size": stat.st_size,
                             "content_type": "application/octet-stream", "cache_control": "no-cache",
                             "etag": f'"{stat.st_mtime_ns:x}"', "metadata": {}, "last_modified": when,
                             "created_at": when})

        def _delete_object(self, parts: list[str], fault: Fault | None) -> None:
            prefixes = json.loads(self._body())["prefixes"]
            if self._visible(parts[0]) is None:
                return self._no_bucket()
            deleted = []
            for name in prefixes:
                target = fake.object_path(parts[0], name)
                if target.is_file():
                    target.unlink()
                    deleted.append({"name": name, "bucket_id": parts[0]})
            self._json(200, deleted)

        # -- TUS --------------------------------------------------------------------
        def _tus_headers(self, uid: str, upload: Upload) -> dict[str, str]:
            return {"Tus-Resumable": "1.0.0", "Upload-Offset": str(self._offset(uid)),
                    "Upload-Length": str(upload.length), "Cache-Control": "no-store"}

        @staticmethod
        def _offset(uid: str) -> int:
            upload = fake.upload_state(uid)
            if upload is not None and upload.finalised:
                return upload.length
            try:
                return (fake.tus / f"{uid}.bin").stat().st_size
            except FileNotFoundError:
                return 0

        def _overwrite_refused(self, upload: Upload) -> bool:
            """Answer 409 if the name exists as an object and this request lacks `x-upsert: true`."""
            if self.headers.get("x-upsert") == "true" or not fake.object_path(upload.bucket, upload.name).exists():
                return False
            self._body()
            self._text(409, EXISTS)
            return True

        def _post_upload(self, parts: list[str], fault: Fault | None) -> None:
            meta = dict(item.split(" ", 1) for item in self.headers.get("Upload-Metadata", "").split(",") if item)
            meta = {k: base64.b64decode(v).decode() for k, v in meta.items()}
            bucket = fake.buckets.get(meta.get("bucketName", ""))
            if bucket is None or (self.role != "service_role" and not bucket.public):
                self._body()
                return self._text(404, "Bucket not found")
            if self.role != "service_role":
                self._body()
                return self._text(403, "new row violates row-level security policy")
            upload = Upload(meta["bucketName"], meta["objectName"], int(self.headers["Upload-Length"]),
                            meta.get("contentType", "application/octet-stream"))
            refused = self._refusal(bucket, upload.length, upload.content_type)
            if refused:
                self._body()
                return self._text(refused[0], refused[2])
            if self._overwrite_refused(upload):
                return None
            uid = uuid.uuid4().hex
            (fake.tus / f"{uid}.json").write_text(json.dumps(asdict(upload)))
            (fake.tus / f"{uid}.bin").touch()
            location = {"Location": f"{fake.url}/storage/v1/upload/resumable/{uid}"}
            if self._length():  # creation-with-upload: the first chunk rides along
                return self._receive(uid, upload, fault, 201, location)
            self._send(201, headers={**self._tus_headers(uid, upload), **location})

        def _upload_of(self, parts: list[str]) -> Upload | None:
            upload = fake.upload_state(parts[-1])
            if upload is None:
                self._body()
                self._text(404, "Not Found")
            return upload

        def _head_upload(self, parts: list[str], fault: Fault | None) -> None:
            upload = self._upload_of(parts)
            if upload is not None:
                self._send(200, headers=self._tus_headers(parts[-1], upload))

        def _patch_upload(self, parts: list[str], fault: Fault | None) -> None:
            uid = parts[-1]
            upload = self._upload_of(parts)
            if upload is None or self._overwrite_refused(upload):
                return None
            if int(self.headers["Upload-Offset"]) != self._offset(uid):
                self._body()
                return self._text(409, "file currently being uploaded or Upload-Offset mismatch",
                                  self._tus_headers(uid, upload))
            self._receive(uid, upload, fault, 204, {})

        def _receive(self, uid: str, upload: Upload, fault: Fault | None, status: int,
                     headers: dict[str, str]) -> None:
            cut = fault.after if fault and fault.kind == "drop" else None
            with open(fake.tus / f"{uid}.bin", "ab", buffering=0) as f:
                got = self._copy_body(f, cut)
            fake.tus_bytes += got
            if fault and fault.kind == "unfinalised" and self._offset(uid) < upload.length:
                fault.times += 1  # meant for the request that completes the upload: wait for it
                fault = None
            if fault and fault.kind in ("drop", "unfinalised"):
                return self._drop(fault)
            done = self._offset(uid) == upload.length
            if done:  # finalise: only now does the object exist
                target = fake.object_path(upload.bucket, upload.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(fake.tus / f"{uid}.bin", target)
                upload.finalised = True
                (fake.tus / f"{uid}.json").write_text(json.dumps(asdict(upload)))
            self._send(status, headers={**self._tus_headers(uid, upload), **headers,
                                        **({"Tus-Complete": "1"} if done else {})})

    return Handler


def main() -> None:
    """Serve a directory in its own process until stdin closes.

    `python -m tests.support.fake_supabase DIR [LATENCY_SECONDS]`
    """
    with FakeSupabase(Path(sys.argv[1]), latency=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
