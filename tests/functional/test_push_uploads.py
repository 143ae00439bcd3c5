"""Blob uploads into a local namespace: monolithic, chunked, resumed, cancelled, mounted, expired;
every wrong one a clear OCI error with nothing stored."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirror.api.keys import LOCAL as LOCAL_KEY
from mirror.local import receive, uploads
from tests.conftest import LocalMirrorFactory, Seeded
from tests.support.images import Blob, sha256_digest
from tests.support.oci import assert_oci_error, cached_blob, wait_until
from tests.support.push import LOCAL, Pusher, basic
from tests.support.registry import Registry

REPO = f"{LOCAL}/team/app"
OCTETS = {"Content-Type": "application/octet-stream"}


def _blob(size: int, seed: int = 0) -> Blob:
    data = bytes((seed + i * 7) % 251 for i in range(size))
    return Blob.of(data, "application/octet-stream")


async def _eventually(check: Any, within: float = 20.0) -> bool:
    """Poll an async condition (the server's progress, seen through the API)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _uploads(cache_dir: Path) -> list[str]:
    root = cache_dir / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def test_a_monolithic_upload_is_served_byte_exact(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """POST ?digest= with the body: 201 with Location and digest; HEAD and GET serve it."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(70_000)
    response = await pusher.request(
        "POST", f"/v2/{REPO}/blobs/uploads/", params={"digest": blob.digest}, data=blob.data
    )
    assert response.status == 201
    assert response.headers["Location"] == f"/v2/{REPO}/blobs/{blob.digest}"
    assert response.headers["Docker-Content-Digest"] == blob.digest
    head = await pusher.request("HEAD", f"/v2/{REPO}/blobs/{blob.digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(blob.size)
    assert head.headers["Docker-Content-Digest"] == blob.digest
    got = await pusher.request("GET", f"/v2/{REPO}/blobs/{blob.digest}")
    assert await got.read() == blob.data
    ranged = await pusher.request(
        "GET", f"/v2/{REPO}/blobs/{blob.digest}", headers={"Range": "bytes=10-19"}
    )
    assert ranged.status == 206 and await ranged.read() == blob.data[10:20]
    assert cached_blob(cache_dir, blob.digest).read_bytes() == blob.data
    # Another repository does not hold it.
    other = await pusher.request("GET", f"/v2/{LOCAL}/team/other/blobs/{blob.digest}")
    await assert_oci_error(other, 404, "BLOB_UNKNOWN")


async def test_a_monolithic_upload_with_a_wrong_digest_stores_nothing(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """The body does not hash to ?digest=: 400 DIGEST_INVALID, no blob, no spool file."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob, claimed = _blob(5000), _blob(5000, seed=1)
    response = await pusher.request(
        "POST", f"/v2/{REPO}/blobs/uploads/", params={"digest": claimed.digest}, data=blob.data
    )
    await assert_oci_error(response, 400, "DIGEST_INVALID")
    for digest in (blob.digest, claimed.digest):
        assert not cached_blob(cache_dir, digest).exists()
        head = await pusher.request("HEAD", f"/v2/{REPO}/blobs/{digest}")
        assert head.status == 404
    assert list((cache_dir / "spool").iterdir()) == []


async def test_a_chunked_upload_reports_its_range_and_finishes_with_the_last_chunk(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """POST 202 (Location, Range 0-0, Docker-Upload-UUID), PATCH chunks with Content-Range,
    GET status 204, PUT ?digest= carrying the last chunk: 201, and the blob is whole."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(3000)
    started = await pusher.request("POST", f"/v2/{REPO}/blobs/uploads/")
    assert started.status == 202
    location = started.headers["Location"]
    uuid = started.headers["Docker-Upload-UUID"]
    assert location == f"/v2/{REPO}/blobs/uploads/{uuid}"
    assert started.headers["Range"] == "0-0"
    assert not cached_blob(cache_dir, blob.digest).exists()
    for start, end in ((0, 999), (1000, 1999)):
        patched = await pusher.request(
            "PATCH",
            location,
            data=blob.data[start : end + 1],
            headers={**OCTETS, "Content-Range": f"{start}-{end}"},
        )
        assert patched.status == 202, await patched.text()
        assert patched.headers["Range"] == f"0-{end}"
        assert patched.headers["Location"] == location
    status = await pusher.request("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == "0-1999"
    assert status.headers["Docker-Upload-UUID"] == uuid
    assert not cached_blob(cache_dir, blob.digest).exists()  # nothing visible before the end
    finished = await pusher.request(
        "PUT",
        location,
        params={"digest": blob.digest},
        data=blob.data[2000:],
        headers={**OCTETS, "Content-Range": "2000-2999"},
    )
    assert finished.status == 201, await finished.text()
    assert finished.headers["Location"] == f"/v2/{REPO}/blobs/{blob.digest}"
    assert cached_blob(cache_dir, blob.digest).read_bytes() == blob.data
    assert _uploads(cache_dir) == []
    gone = await pusher.request("GET", location)
    await assert_oci_error(gone, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_a_streamed_patch_then_an_empty_put_is_what_docker_sends(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """PATCH with a chunked body and no Content-Range, then PUT ?digest= with no body."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(2_500_000)

    async def pieces() -> Any:
        for at in range(0, blob.size, 300_000):
            yield blob.data[at : at + 300_000]

    location = await pusher.start_upload(REPO)
    patched = await pusher.request("PATCH", location, data=pieces(), headers=OCTETS)
    assert patched.status == 202
    assert patched.headers["Range"] == f"0-{blob.size - 1}"
    finished = await pusher.request(
        "PUT", patched.headers["Location"], params={"digest": blob.digest}
    )
    assert finished.status == 201
    got = await pusher.request("GET", f"/v2/{REPO}/blobs/{blob.digest}")
    assert await got.read() == blob.data


async def test_a_chunk_out_of_order_is_416_with_the_current_range(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """A chunk that does not start where the upload stands: 416, Range and Location say where
    it stands, and the upload is unchanged."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(2000)
    location = await pusher.start_upload(REPO)
    skipped = await pusher.request(
        "PATCH", location, data=blob.data[1000:], headers={**OCTETS, "Content-Range": "1000-1999"}
    )
    await assert_oci_error(skipped, 416, "RANGE_INVALID")
    assert skipped.headers["Range"] == "0-0"
    assert skipped.headers["Location"] == location
    first = await pusher.request(
        "PATCH", location, data=blob.data[:1000], headers={**OCTETS, "Content-Range": "0-999"}
    )
    assert first.status == 202
    again = await pusher.request(
        "PATCH", location, data=blob.data[:1000], headers={**OCTETS, "Content-Range": "0-999"}
    )
    await assert_oci_error(again, 416, "RANGE_INVALID")
    assert again.headers["Range"] == "0-999"
    malformed = await pusher.request(
        "PATCH", location, data=b"x", headers={**OCTETS, "Content-Range": "bytes 9"}
    )
    assert malformed.status == 416
    assert malformed.headers["Range"] == "0-999"
    status = await pusher.request("GET", location)
    assert status.headers["Range"] == "0-999"


async def test_a_declared_length_that_the_body_does_not_have_is_size_invalid(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """Content-Range and Content-Length that disagree: 400 SIZE_INVALID, nothing appended."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    location = await pusher.start_upload(REPO)
    response = await pusher.request(
        "PATCH", location, data=b"x" * 10, headers={**OCTETS, "Content-Range": "0-99"}
    )
    await assert_oci_error(response, 400, "SIZE_INVALID")
    status = await pusher.request("GET", location)
    assert status.headers["Range"] == "0-0"


async def test_a_wrong_digest_at_put_ends_the_upload_and_stores_nothing(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """PUT ?digest= naming other content: 400 DIGEST_INVALID; no blob, the session is gone."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob, other = _blob(4000), _blob(4000, seed=3)
    location = await pusher.start_upload(REPO)
    patched = await pusher.request("PATCH", location, data=blob.data, headers=OCTETS)
    assert patched.status == 202
    finished = await pusher.request("PUT", location, params={"digest": other.digest})
    await assert_oci_error(finished, 400, "DIGEST_INVALID")
    assert not cached_blob(cache_dir, blob.digest).exists()
    assert not cached_blob(cache_dir, other.digest).exists()
    assert _uploads(cache_dir) == []
    missing = await pusher.request("PUT", location, params={"digest": blob.digest})
    await assert_oci_error(missing, 404, "BLOB_UPLOAD_UNKNOWN")
    no_digest_location = await pusher.start_upload(REPO)
    no_digest = await pusher.request("PUT", no_digest_location)
    await assert_oci_error(no_digest, 400, "DIGEST_INVALID")


async def test_a_chunked_upload_resumes_after_a_cut_connection(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """A PATCH whose connection breaks mid-body keeps what arrived; the client asks for the
    status and sends the rest from there, and the finished blob is whole."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(3_000_000, seed=5)
    location = await pusher.start_upload(REPO)
    sent = 1_800_000
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: mirror\r\n"
        f"Authorization: {basic('ci')['Authorization']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Range: 0-{blob.size - 1}\r\n"
        f"Content-Length: {blob.size}\r\n\r\n"
    )
    writer.write(head.encode() + blob.data[:sent])
    await writer.drain()

    async def received() -> int:
        status = await pusher.request("GET", location)
        return int(status.headers["Range"].split("-")[1]) + 1

    # Once the server has written part of it, cut the connection.
    async def some_written() -> bool:
        return await received() >= 1 << 20

    assert await _eventually(some_written)
    writer.transport.abort()
    deadline = time.monotonic() + 20
    while True:  # as a client does: ask where the upload stands, send the rest from there
        offset = await received()
        assert 0 < offset <= sent
        resumed = await pusher.request(
            "PATCH",
            location,
            data=io.BytesIO(blob.data[offset:]),
            headers={**OCTETS, "Content-Range": f"{offset}-{blob.size - 1}"},
        )
        # 416 while the server still holds the session for the broken request.
        if resumed.status != 416 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert resumed.status == 202, await resumed.text()
    finished = await pusher.request("PUT", location, params={"digest": blob.digest})
    assert finished.status == 201, await finished.text()
    got = await pusher.request("GET", f"/v2/{REPO}/blobs/{blob.digest}")
    assert await got.read() == blob.data
    reader.feed_eof()


async def test_a_cancelled_upload_is_gone(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """DELETE on the upload: 204, its data removed, then 404 BLOB_UPLOAD_UNKNOWN."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    location = await pusher.start_upload(REPO)
    await pusher.request("PATCH", location, data=b"partial", headers=OCTETS)
    assert len(_uploads(cache_dir)) == 1
    cancelled = await pusher.request("DELETE", location)
    assert cancelled.status == 204
    assert _uploads(cache_dir) == []
    await assert_oci_error(await pusher.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    await assert_oci_error(await pusher.request("DELETE", location), 404, "BLOB_UPLOAD_UNKNOWN")
    bogus = f"/v2/{REPO}/blobs/uploads/not-an-upload"
    await assert_oci_error(await pusher.request("GET", bogus), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_an_upload_belongs_to_its_repository(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """A session started in one repository is unknown through another."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    location = await pusher.start_upload(REPO)
    other = location.replace("/team/app/", "/team/other/")
    await assert_oci_error(await pusher.request("GET", other), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_abandoned_uploads_expire(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """A session with no request for upload_expiry seconds is removed; a fresh one stays."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    old = await pusher.start_upload(REPO)
    fresh = await pusher.start_upload(REPO)
    old_id = old.rsplit("/", 1)[1]
    long_ago = time.time() - 2 * 3600
    os.utime(cache_dir / "uploads" / old_id / "data", (long_ago, long_ago))
    removed = await client.app[LOCAL_KEY].expire_uploads()
    assert removed == 1
    assert _uploads(cache_dir) == [fresh.rsplit("/", 1)[1]]
    await assert_oci_error(await pusher.request("GET", old), 404, "BLOB_UPLOAD_UNKNOWN")
    assert (await pusher.request("GET", fresh)).status == 204


async def test_a_mount_links_a_blob_without_its_bytes(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """?mount=&from= a local repository holding the blob, or a Docker Hub repository whose
    blob the mirror cached: 201 and no bytes; a blob the source lacks, or a source the user
    may not pull, falls back to an upload session (202)."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(1000)
    await pusher.push_blob(f"{LOCAL}/team/base", blob)
    mounted = await pusher.request(
        "POST",
        f"/v2/{REPO}/blobs/uploads/",
        params={"mount": blob.digest, "from": f"{LOCAL}/team/base"},
    )
    assert mounted.status == 201
    assert mounted.headers["Location"] == f"/v2/{REPO}/blobs/{blob.digest}"
    assert await (await pusher.request("GET", f"/v2/{REPO}/blobs/{blob.digest}")).read() == (
        blob.data
    )

    # A layer of a Docker Hub image, pulled through the mirror (so cached).
    hub_repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[0]
    pulled = await pusher.request("GET", f"/v2/docker.io/{hub_repo}/blobs/{layer.digest}")
    assert await pulled.read() == layer.data
    assert await wait_until(cached_blob(cache_dir, layer.digest).exists)
    stored = cached_blob(cache_dir, layer.digest).stat()
    from_hub = await pusher.request(
        "POST",
        f"/v2/{REPO}/blobs/uploads/",
        params={"mount": layer.digest, "from": f"docker.io/{hub_repo}"},
    )
    assert from_hub.status == 201
    assert cached_blob(cache_dir, layer.digest).stat().st_ino == stored.st_ino
    assert (await pusher.request("HEAD", f"/v2/{REPO}/blobs/{layer.digest}")).status == 200

    # Not cached: no mount.
    uncached = seeded.schema2.layers[1]
    fallback = await pusher.request(
        "POST",
        f"/v2/{REPO}/blobs/uploads/",
        params={"mount": uncached.digest, "from": f"docker.io/{hub_repo}"},
    )
    assert fallback.status == 202
    assert "/blobs/uploads/" in fallback.headers["Location"]
    # reader may pull team/* but not push: refused before any mount.
    refused = await Pusher(client, "reader").request(
        "POST",
        f"/v2/{REPO}/blobs/uploads/",
        params={"mount": blob.digest, "from": f"{LOCAL}/team/base"},
    )
    await assert_oci_error(refused, 403, "DENIED")
    # ci may push to team/* but not pull from other/*: the mount falls back.
    await Pusher(client, "admin").push_blob(f"{LOCAL}/other/secret", _blob(10, seed=9))
    secret = _blob(10, seed=9)
    not_yours = await pusher.request(
        "POST",
        f"/v2/{REPO}/blobs/uploads/",
        params={"mount": secret.digest, "from": f"{LOCAL}/other/secret"},
    )
    assert not_yours.status == 202
    assert (await pusher.request("HEAD", f"/v2/{REPO}/blobs/{secret.digest}")).status == 404


async def test_a_blob_delete_unlinks_it_from_the_repository(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """DELETE /blobs/<digest>: 202, then 404 through that repository; a second DELETE is 404."""
    client = await local_mirror(registry)
    admin = Pusher(client, "admin")
    blob = _blob(100)
    await admin.push_blob(REPO, blob)
    deleted = await admin.request("DELETE", f"/v2/{REPO}/blobs/{blob.digest}")
    assert deleted.status == 202
    assert (await admin.request("HEAD", f"/v2/{REPO}/blobs/{blob.digest}")).status == 404
    again = await admin.request("DELETE", f"/v2/{REPO}/blobs/{blob.digest}")
    await assert_oci_error(again, 404, "BLOB_UNKNOWN")


async def test_uploads_go_through_a_path_prefix_or_ns_alike(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """With ?ns=<local name> the repository is named without the prefix, and every Location
    keeps the ns."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    blob = _blob(500)
    started = await pusher.request("POST", "/v2/team/app/blobs/uploads/", params={"ns": LOCAL})
    assert started.status == 202
    location = started.headers["Location"]
    assert location.startswith("/v2/team/app/blobs/uploads/") and f"ns={LOCAL}" in location
    finished = await pusher.request(
        "PUT", location, params={"ns": LOCAL, "digest": blob.digest}, data=blob.data
    )
    assert finished.status == 201, await finished.text()
    via_prefix = await pusher.request("GET", f"/v2/{REPO}/blobs/{blob.digest}")
    assert await via_prefix.read() == blob.data
    assert sha256_digest(blob.data) == blob.digest


async def test_an_upload_goes_on_in_another_process(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """A session started and fed through one mirror is finished through another on the same
    cache directory (another worker or replica), which hashes the data it did not see."""
    first = Pusher(await local_mirror(registry))
    second = Pusher(await local_mirror(registry))
    blob = _blob(2_000_000, seed=11)
    location = await first.start_upload(REPO)
    half = blob.size // 2
    patched = await first.request(
        "PATCH", location, data=io.BytesIO(blob.data[:half]), headers=OCTETS
    )
    assert patched.status == 202
    status = await second.request("GET", location)
    assert status.headers["Range"] == f"0-{half - 1}"
    finished = await second.request(
        "PUT",
        location,
        params={"digest": blob.digest},
        data=io.BytesIO(blob.data[half:]),
        headers={**OCTETS, "Content-Range": f"{half}-{blob.size - 1}"},
    )
    assert finished.status == 201, await finished.text()
    assert cached_blob(cache_dir, blob.digest).read_bytes() == blob.data


async def test_uploads_beyond_the_cap_wait_then_get_503(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """With max_uploads = 1, a second body while one streams waits fill_wait, then 503 with
    Retry-After; once the first is done, uploads go through again."""
    client = await local_mirror(registry, max_uploads=1, fill_wait=0.5)
    pusher = Pusher(client)
    release = asyncio.Event()
    streaming = asyncio.Event()

    async def slow() -> Any:
        yield b"first"
        streaming.set()
        await release.wait()
        yield b" and the rest"

    location = await pusher.start_upload(REPO)
    held = asyncio.ensure_future(pusher.request("PATCH", location, data=slow(), headers=OCTETS))
    await asyncio.wait_for(streaming.wait(), 10)
    second = await pusher.start_upload(REPO)
    busy = await pusher.request("PATCH", second, data=b"x", headers=OCTETS)
    await assert_oci_error(busy, 503, "UNAVAILABLE")
    assert busy.headers["Retry-After"] == "1"
    message = (await busy.json())["errors"][0]["message"]
    assert "upload slot" in message and "download" not in message, message
    release.set()
    assert (await held).status == 202
    assert (await pusher.request("PATCH", second, data=b"x", headers=OCTETS)).status == 202


async def test_a_body_that_stalls_is_cut_and_frees_its_slot(
    local_mirror: LocalMirrorFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunked PATCH that sends one byte and then nothing is answered 400
    BLOB_UPLOAD_INVALID after the idle timeout, keeping that byte: the only upload slot is free
    again for another push before its wait ends, and the stalled upload resumes from there."""
    monkeypatch.setattr(receive, "IDLE_TIMEOUT", 0.5)
    client = await local_mirror(registry, max_uploads=1, fill_wait=3)
    pusher = Pusher(client)
    blob = _blob(1000, seed=9)
    location = await pusher.start_upload(REPO)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: mirror\r\n"
            f"Authorization: {basic('ci')['Authorization']}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(head.encode() + b"1\r\n" + blob.data[:1] + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)  # the stalled body has the slot
        other = _blob(500, seed=10)
        await pusher.push_blob(REPO, other)  # within fill_wait: the stalled body was cut
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        length = int(answer.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        assert b"BLOB_UPLOAD_INVALID" in body and b"sent nothing" in body, body
    finally:
        writer.close()
    status = await pusher.request("GET", location)
    assert status.headers["Range"] == "0-0"
    resumed = await pusher.request(
        "PATCH",
        location,
        data=blob.data[1:],
        headers={**OCTETS, "Content-Range": f"1-{blob.size - 1}"},
    )
    assert resumed.status == 202, await resumed.text()
    finished = await pusher.request("PUT", location, params={"digest": blob.digest})
    assert finished.status == 201, await finished.text()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_refuses_the_body_and_keeps_the_upload_as_it_was(
    local_mirror: LocalMirrorFactory, registry: Registry, small_disk: Path
) -> None:
    """On a 4 MiB file system: a body declared bigger than the free space is 507 before a
    byte is read; one of unknown length that fills the disk is 507 and cut back; what the
    upload held before stays, and it can still be finished."""
    cache_dir = small_disk / "cache"
    client = await local_mirror(registry, cache_dir=cache_dir)
    pusher = Pusher(client)
    blob = _blob(1000, seed=13)
    location = await pusher.start_upload(REPO)
    first = await pusher.request("PATCH", location, data=blob.data[:500], headers=OCTETS)
    assert first.status == 202
    declared = await pusher.request(
        "PATCH", location, data=io.BytesIO(b"\0" * (8 << 20)), headers=OCTETS
    )
    await assert_oci_error(declared, 507, "UNAVAILABLE")

    async def endless() -> Any:
        for _ in range(16):
            yield b"\0" * (512 << 10)

    filled = await pusher.request("PATCH", location, data=endless(), headers=OCTETS)
    await assert_oci_error(filled, 507, "UNAVAILABLE")
    assert (await pusher.request("GET", location)).headers["Range"] == "0-499"
    finished = await pusher.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data[500:]
    )
    assert finished.status == 201, await finished.text()


async def test_upload_sessions_are_capped(
    local_mirror: LocalMirrorFactory,
    registry: Registry,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pusher starting sessions it never uses cannot fill the file system with them: past
    the cap a new one is 503 with Retry-After, and one ended makes room again."""
    monkeypatch.setattr(uploads, "MAX_SESSIONS", 5)
    client = await local_mirror(registry)
    pusher = Pusher(client)
    started = [await pusher.start_upload(REPO) for _ in range(5)]
    refused = await pusher.request("POST", f"/v2/{REPO}/blobs/uploads/")
    await assert_oci_error(refused, 503, "UNAVAILABLE")
    assert refused.headers["Retry-After"]
    assert len(os.listdir(cache_dir / "uploads")) == 5
    cancelled = await pusher.request("DELETE", started[0])
    assert cancelled.status == 204
    await pusher.start_upload(REPO)
