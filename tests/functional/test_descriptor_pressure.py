"""A real `mirror serve` under `prlimit --nofile`: the excess is refused, the rest served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Seeded
from tests.support.clients import (
    exchange,
    open_connection,
    read_answer,
    request_bytes,
    stalled_get,
)
from tests.support.images import DOCKER_MANIFEST
from tests.support.mirror_process import MirrorProcess, start_mirror
from tests.support.oci import cached_blob, wait_until
from tests.support.registry import Registry


@pytest.fixture
def mirror_under_limit(
    tmp_path: Path, registry: Registry, request: pytest.FixtureRequest
) -> Iterator[MirrorProcess]:
    """`mirror serve` under the descriptor limit ("soft:hard") and with the flags the test's
    parameter names."""
    open_files, *flags = request.param
    mirror = start_mirror(tmp_path, registry.url, *flags, open_files=open_files)
    try:
        yield mirror
    finally:
        mirror.stop()


async def _ask(mirror: MirrorProcess, path: str, **headers: str) -> tuple[int | None, bytes]:
    """One request on a connection of its own: (status or None if cut off, raw answer)."""
    sock = await open_connection("127.0.0.1", mirror.port)
    with contextlib.closing(sock):
        request = request_bytes(path, close=True)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        await asyncio.get_running_loop().sock_sendall(sock, request[:-2] + extra + b"\r\n")
        return await read_answer(sock)


def _body(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[2]


def _assert_refused_cleanly(status: int | None, raw: bytes) -> None:
    """A 503 OCI error telling when to retry (or, with no descriptor to answer on, a close)."""
    if status is None:
        return
    assert status == 503, raw[:300]
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nRetry-After: " in head, head
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"


def _assert_clean_log(mirror: MirrorProcess) -> None:
    text = mirror.log_text()
    assert "Traceback" not in text, text[-3000:]
    entries = mirror.entries()
    assert not [e for e in entries if e.get("status", 0) >= 500 and e.get("status") != 503]
    assert not [e for e in entries if e.get("event") == "unexpected error"], text[-3000:]


def _sending(mirror: MirrorProcess, blob: Path) -> int:
    """How many descriptors the mirror holds on this blob file (one per send in progress)."""
    count = 0
    for fd in os.listdir(f"/proc/{mirror.pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{mirror.pid}/fd/{fd}") == str(blob)
    return count


async def _warm(mirror: MirrorProcess, seeded: Seeded) -> tuple[str, str, Path]:
    """Cache the big layer and the schema2 manifest: (blob path, manifest path, blob file)."""
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    blob_path = f"/v2/{repo}/blobs/{layer.digest}"
    manifest_path = "/v2/{}/manifests/{}".format(*seeded.schema2_ref)
    status, raw = await _ask(mirror, blob_path)
    assert status == 200 and _body(raw) == layer.data
    status, raw = await _ask(mirror, manifest_path, Accept=DOCKER_MANIFEST)
    assert status == 200 and _body(raw) == seeded.schema2.manifest
    blob_file = cached_blob(mirror.log.parent / "cache", layer.digest).resolve()
    assert await wait_until(blob_file.exists)
    return blob_path, manifest_path, blob_file


async def _served_again(mirror: MirrorProcess, seeded: Seeded, blob: str, manifest: str) -> None:
    status, raw = await _ask(mirror, blob)
    assert status == 200 and _body(raw) == seeded.big.layers[0].data
    status, raw = await _ask(mirror, manifest, Accept=DOCKER_MANIFEST)
    assert status == 200 and _body(raw) == seeded.schema2.manifest


# A soft limit of 128 is raised to the hard 256, which leaves the default cap at its floor of
# 16 connections (one upstream's two pools of 100 and a reserve of 128 take the rest).
@pytest.mark.parametrize("mirror_under_limit", [("128:256",)], indirect=True)
async def test_busy_connections_beyond_the_default_cap_are_refused_then_served(
    mirror_under_limit: MirrorProcess, seeded: Seeded
) -> None:
    """Start-up raises the soft descriptor limit to the hard one; 16 stalled downloads fill the
    cap derived from it, the 17th client gets 503 + Retry-After, and once they leave the cached
    blob and manifest are served."""
    mirror = mirror_under_limit
    starting = next(e for e in mirror.entries() if e.get("event") == "starting")
    assert (starting["open_files"], starting["max_connections"]) == (256, 16)
    assert mirror.open_files_limit() == (256, 256)
    blob, manifest, blob_file = await _warm(mirror, seeded)
    held = [await stalled_get("127.0.0.1", mirror.port, blob) for _ in range(16)]
    try:
        assert await wait_until(lambda: _sending(mirror, blob_file) == 16, within=30)
        for path in (blob, manifest, "/v2/"):
            status, raw = await _ask(mirror, path)
            assert status == 503, raw[:300]  # over the cap, there is a descriptor to answer on
            _assert_refused_cleanly(status, raw)
    finally:
        for sock in held:
            sock.close()
    assert await wait_until(lambda: _sending(mirror, blob_file) == 0, within=30)
    await _served_again(mirror, seeded, blob, manifest)
    _assert_clean_log(mirror)


# A cap far above what 64 descriptors allow: the process itself runs out.
@pytest.mark.directory_only(
    reason="it steers the process's descriptors one by one (64 taken, then one freed); the "
    "connections to a bucket take and free descriptors of their own"
)
@pytest.mark.parametrize(
    "mirror_under_limit", [("64:64", "--max-connections", "1000")], indirect=True
)
async def test_out_of_descriptors_the_excess_is_refused_and_serving_goes_on(
    mirror_under_limit: MirrorProcess, seeded: Seeded
) -> None:
    """Idle connections take every descriptor: a new connection is turned away, and a blob
    that cannot be opened, locked or spooled is 503 + Retry-After (never 500, no traceback);
    once the idle connections go, everything is served again."""
    mirror = mirror_under_limit
    blob, manifest, _ = await _warm(mirror, seeded)
    repo, _ = seeded.oci_ref
    uncached = f"/v2/{repo}/blobs/{seeded.oci.layers[0].digest}"
    held: list[socket.socket] = []
    try:
        for _ in range(80):
            held.append(await open_connection("127.0.0.1", mirror.port))
        assert await wait_until(
            lambda: any(e.get("event") == "refusing connections" for e in mirror.entries()),
            within=30,
        ), mirror.log_text()[-2000:]
        assert await wait_until(lambda: mirror.open_descriptors() == 64)
        _assert_refused_cleanly(*await _ask(mirror, "/v2/"))
        # held[0] was accepted before the descriptors ran out; it keeps its connection.
        for path in (blob, uncached):  # no descriptor for the cached file, for the fill lock
            status, head, body = await exchange(held[0], path)
            _assert_refused_cleanly(status, head + b"\r\n\r\n" + body)
            assert status == 503
        # One descriptor free: the fill takes its lock, and finds none for its spool file.
        held[1].close()
        assert await wait_until(lambda: mirror.open_descriptors() == 63)
        status, head, body = await exchange(held[0], uncached)
        assert status == 503, head + body
        status, _, _ = await exchange(held[0], manifest)
        assert status in (200, 503)
    finally:
        for sock in held:
            sock.close()
    assert await wait_until(lambda: mirror.open_descriptors() < 32, within=30)
    await _served_again(mirror, seeded, blob, manifest)
    status, raw = await _ask(mirror, uncached)
    assert status == 200 and _body(raw) == seeded.oci.layers[0].data
    _assert_clean_log(mirror)
