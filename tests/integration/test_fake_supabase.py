"""The test server answers as the real Supabase Storage was seen to: raw HTTP, no dbjobs code in between.

If one of these changes, the stand-in no longer models the real server, and the tests built on it
prove less than they claim.
"""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from tests.support.fake_supabase import Bucket, FakeSupabase, make_key

MB = 1 << 20


@pytest.fixture
def fake(tmp_path):
    buckets = {"backups": Bucket(), "limited": Bucket(file_size_limit=MB, allowed_mime_types=["image/png"])}
    with FakeSupabase(tmp_path / "supabase", buckets=buckets) as server:
        yield server


def client(fake: FakeSupabase, key: str = FakeSupabase.KEY) -> httpx.Client:
    return httpx.Client(base_url=f"{fake.url}/storage/v1", headers={"Authorization": f"Bearer {key}", "apikey": key})


def tus_headers(name: str, length: int, bucket: str = "backups", content_type: str = "application/zstd") -> dict:
    meta = {"bucketName": bucket, "objectName": name, "contentType": content_type}
    encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
    return {"Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Upload-Metadata": encoded}


def patch(http: httpx.Client, location: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
    return http.patch(location, content=data, headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                                                       "Content-Type": "application/offset+octet-stream", **headers})


def test_errors_are_http_400_with_the_real_status_in_the_body(fake):
    refused = client(fake, make_key("service_role", "not this project's secret, 32 bytes long")).get("/bucket/backups")
    assert refused.status_code == 400
    assert refused.json() | {"message": ""} == {"statusCode": "403", "code": "AccessDenied", "error": "Unauthorized",
                                                "message": ""}
    missing = client(fake).get("/bucket/nope")
    assert (missing.status_code, missing.json()["statusCode"], missing.json()["message"]) == (400, "404",
                                                                                             "Bucket not found")


def test_a_missing_bucket_and_the_anon_key_list_as_empty(fake):
    fake.object_path("backups", "a.dump.zst").write_bytes(b"x")
    assert client(fake).post("/object/list/nope", json={"prefix": ""}).json() == []
    anon = client(fake, FakeSupabase.ANON_KEY)
    assert anon.post("/object/list/backups", json={"prefix": ""}).json() == []
    assert anon.get("/bucket/backups").json()["message"] == "Bucket not found"
    assert [e["name"] for e in client(fake).post("/object/list/backups", json={"prefix": ""}).json()] == ["a.dump.zst"]


def test_listings_show_folders_with_a_null_id_and_honour_the_prefix(fake):
    (fake.root / "backups" / "old").mkdir()
    fake.object_path("backups", "old/b.dump.zst").write_bytes(b"yy")
    fake.object_path("backups", "a.dump.zst").write_bytes(b"x")
    root = client(fake).post("/object/list/backups", json={"prefix": ""}).json()
    assert [(e["name"], e["id"] is None, e["metadata"]) for e in root] == [
        ("a.dump.zst", False, {"size": 1, "mimetype": "application/octet-stream"}), ("old", True, None)]
    inside = client(fake).post("/object/list/backups", json={"prefix": "old/"}).json()
    assert [(e["name"], e["metadata"]["size"]) for e in inside] == [("b.dump.zst", 2)]


def test_tus_needs_x_upsert_on_every_request_for_a_name_that_exists(fake):
    http = client(fake)
    fake.object_path("backups", "a.dump.zst").write_bytes(b"old")
    refused = http.post("/upload/resumable", headers=tus_headers("a.dump.zst", 4))
    assert (refused.status_code, refused.headers["content-type"], refused.text) == (
        409, "text/plain", "The resource already exists")
    created = http.post("/upload/resumable", headers={**tus_headers("a.dump.zst", 4), "x-upsert": "true"})
    location = created.headers["Location"]
    no_upsert = patch(http, location, 0, b"ne")
    assert (no_upsert.status_code, no_upsert.text) == (409, "The resource already exists")
    assert patch(http, location, 0, b"ne", **{"x-upsert": "true"}).status_code == 204
    conflict = patch(http, location, 0, b"w!", **{"x-upsert": "true"})  # the server is at offset 2
    assert conflict.status_code == 409 and conflict.headers["Upload-Offset"] == "2"
    done = patch(http, location, 2, b"w!", **{"x-upsert": "true"})
    assert (done.status_code, done.headers["Tus-Complete"]) == (204, "1")
    assert fake.object_path("backups", "a.dump.zst").read_bytes() == b"new!"


def test_tus_refuses_what_is_over_the_limit_or_of_a_type_the_bucket_does_not_allow(fake):
    http = client(fake)
    too_big = http.post("/upload/resumable", headers=tus_headers("a.png", 2 * MB, "limited", "image/png"))
    wrong_type = http.post("/upload/resumable", headers=tus_headers("a.dump.zst", 10, "limited"))
    assert (too_big.status_code, wrong_type.status_code) == (413, 415)
    assert wrong_type.text == "mime type application/zstd is not supported"
    files = {"file": ("a.dump.zst", b"x", "application/zstd")}
    standard = http.post("/object/limited/a.dump.zst", files=files).json()
    assert (standard["statusCode"], standard["message"]) == ("415", "mime type application/zstd is not supported")
    assert http.post("/object/limited/a.png", files={"file": ("a.png", b"x", "image/png")}).status_code == 200


def test_an_upload_killed_before_its_finalise_step_has_every_byte_and_no_object(fake):
    http = client(fake)
    fake.fail("PATCH", "/upload/resumable/", "unfinalised")
    location = http.post("/upload/resumable", headers=tus_headers("a.dump.zst", 4)).headers["Location"]
    with pytest.raises(httpx.TransportError):
        patch(http, location, 0, b"data")
    assert http.head(location, headers={"Tus-Resumable": "1.0.0"}).headers["Upload-Offset"] == "4"
    info = http.get("/object/info/backups/a.dump.zst").json()
    assert (info["statusCode"], info["error"]) == ("404", "not_found")


def test_tus_state_survives_a_restart_and_the_gateway_answers_502_while_storage_is_down(fake):
    location = client(fake).post("/upload/resumable", headers=tus_headers("a.dump.zst", 4)).headers["Location"]
    assert patch(client(fake), location, 0, b"da").status_code == 204
    http = client(fake)
    back = fake.restart(down_for=2)
    with pytest.raises(httpx.ConnectError):
        http.head(location)
    back.join()
    time.sleep(0.1)
    assert client(fake).head(location, headers={"Tus-Resumable": "1.0.0"}).headers["Upload-Offset"] == "2"
    with fake.storage_down():
        down = client(fake).get("/bucket/backups")
    assert (down.status_code, down.json()) == (502, {"message": "An invalid response was received from the "
                                                                "upstream server"})
