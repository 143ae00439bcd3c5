"""`/healthz` and `/readyz`: what load balancers and Kubernetes probes are told, and when."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFactory, MirrorFromSettings, Seeded
from tests.support import storage
from tests.support.oci import ACCEPT_ALL, assert_oci_error
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry

Client = TestClient[Any, Any]


async def readiness(client: Client) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def test_healthz_answers_ok_while_the_process_serves(
    make_mirror: MirrorFactory, registry: Registry
) -> None:
    """GET /healthz is 200 with a small JSON body; HEAD is 200 too."""
    client = await make_mirror(registry)
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert (await client.head("/healthz")).status == 200


async def test_readyz_is_ready_with_and_without_redis(
    make_mirror: MirrorFactory, registry: Registry, metadata: tuple[str | None, str]
) -> None:
    """A writable cache is ready; Redis is checked when configured and reported as such."""
    client = await make_mirror(registry)
    status, body = await readiness(client)
    assert status == 200, body
    redis = "ok" if metadata[0] else "not configured"
    assert body == {"status": "ready", "checks": {"cache": "ok", "redis": redis}}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, since the test kills it."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_readyz_says_degraded_but_stays_ready_while_redis_is_down(
    aiohttp_client: Any, own_redis: RedisServer, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Redis stopped: 200 with status degraded and the reason; manifests still serve; back after."""
    from mirror.app import create_app

    upstream = UpstreamSettings(default=True, url=registry.url, connect_timeout=2.0)
    settings = Settings(cache_dir=cache_dir, upstreams=(upstream,), redis_url=own_redis.url)
    client = await aiohttp_client(create_app(storage.current().applied(settings)))
    assert (await readiness(client))[1]["status"] == "ready"

    own_redis.stop()
    status, body = await readiness(client)
    assert status == 200, body
    assert body["status"] == "degraded"
    assert body["checks"]["cache"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")
    assert "in-process store" in body["message"]
    repo, tag = seeded.schema2_ref
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    assert await response.read() == seeded.schema2.manifest

    own_redis.start()
    status, body = await readiness(client)
    assert (status, body["status"]) == (200, "ready"), body


@pytest.fixture
def own_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of this test's own, which the test may fill or make read-only."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write one file until the disk refuses more; returns it."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


async def test_readyz_is_not_ready_while_the_cache_is_read_only(
    mirror_from: MirrorFromSettings, registry: Registry, own_disk: Path
) -> None:
    """A cache remounted read-only: 503 naming the cache; /healthz stays 200; ready once rw."""
    upstream = UpstreamSettings(default=True, url=registry.url)
    client = await mirror_from(Settings(cache_dir=own_disk / "cache", upstreams=(upstream,)))
    assert (await readiness(client))[0] == 200

    remount(own_disk, "ro")
    status, body = await readiness(client)
    assert status == 503, body
    assert body["status"] == "not ready"
    assert body["checks"]["cache"] == "not writable: Read-only file system"
    assert (await client.get("/healthz")).status == 200

    remount(own_disk, "rw")
    assert (await readiness(client))[0] == 200


async def test_readyz_is_not_ready_while_the_cache_disk_is_full(
    mirror_from: MirrorFromSettings, registry: Registry, own_disk: Path
) -> None:
    """A full cache disk: 503 with "No space left on device"; ready again once space is freed."""
    upstream = UpstreamSettings(default=True, url=registry.url)
    client = await mirror_from(Settings(cache_dir=own_disk / "cache", upstreams=(upstream,)))
    filler = fill(own_disk)
    status, body = await readiness(client)
    assert status == 503, body
    assert body["checks"]["cache"] == "not writable: No space left on device"
    assert list((own_disk / "cache" / "spool").iterdir()) == []  # the probe left nothing

    filler.unlink()
    assert (await readiness(client))[0] == 200


async def test_health_requests_are_logged_and_not_rendered_as_registry_errors(
    make_mirror: MirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """Probes get one request line each with the bytes sent; a 503 keeps its readiness body;
    a wrong method is an OCI error, and so is a path next to them that does not exist."""
    client = await make_mirror(registry)
    with structlog.testing.capture_logs() as logs:
        body = await (await client.get("/healthz")).read()
        # Break the spool so the write check fails without any privilege.
        shutil.rmtree(cache_dir / "spool")
        (cache_dir / "spool").write_text("not a directory")
        status, ready = await readiness(client)
    lines = [e for e in logs if e.get("event") == "request"]
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/healthz", 200),
        ("/readyz", 503),
    ]
    assert lines[0]["bytes"] == len(body)
    assert lines[0]["cache"] is None and lines[0]["upstream"] is None
    assert (status, ready["status"]) == (503, "not ready")
    assert ready["checks"]["cache"] == "not writable: Not a directory"
    changes = [e for e in logs if e.get("event") == "readiness changed"]
    assert [(e["log_level"], e["status"]) for e in changes] == [("warning", "not ready")]

    await assert_oci_error(await client.post("/healthz"), 405, "UNSUPPORTED")
    await assert_oci_error(await client.get("/health"), 404, "NAME_UNKNOWN")
