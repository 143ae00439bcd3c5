"""Who reaches the admin endpoints, and where: admin_allow, --admin-listen, metrics = false."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from mirror.api.admin import ADMIN_CONNECTIONS, is_allowed
from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.support.clients import is_closed_by_server
from tests.support.metrics import Scrape
from tests.support.oci import assert_oci_error, wait_until
from tests.support.processes import free_port
from tests.support.registry import Registry


def _settings(registry: Registry, cache_dir: Path, **fields: object) -> Settings:
    upstream = UpstreamSettings(default=True, url=registry.url)
    return dataclasses.replace(Settings(cache_dir=cache_dir, upstreams=(upstream,)), **fields)


@pytest.mark.parametrize(
    ("remote", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack socket
        ("10.1.2.3", False),
        ("::2", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
        (None, False),
    ],
)
def test_the_default_allows_loopback_only(remote: str | None, allowed: bool) -> None:
    """Loopback in both families is let in by default, nothing else."""
    assert is_allowed(remote, Settings().admin_allow) is allowed


async def test_addresses_outside_admin_allow_get_403_and_probes_stay_open(
    mirror_from: MirrorFromSettings, registry: Registry, cache_dir: Path
) -> None:
    """With loopback not allowed, the page and /metrics answer 403 DENIED, naming the option;
    health probes and the registry API still answer."""
    only_elsewhere = (ipaddress.ip_network("10.0.0.0/8"),)
    client = await mirror_from(_settings(registry, cache_dir, admin_allow=only_elsewhere))
    for path in ("/metrics", "/"):
        document = await assert_oci_error(await client.get(path), 403, "DENIED")
        assert "admin_allow" in document["errors"][0]["message"]
    for path in ("/healthz", "/readyz", "/v2/"):
        assert (await client.get(path)).status == 200, path


async def test_the_admin_endpoints_are_served_on_the_default_listener(
    mirror_from: MirrorFromSettings, registry: Registry, cache_dir: Path
) -> None:
    """By default the page and /metrics answer on the registry's port, to loopback."""
    client = await mirror_from(_settings(registry, cache_dir))
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert (await client.get("/metrics")).status == 200


async def test_a_separate_admin_listener_serves_them_alone(
    mirror_from: MirrorFromSettings, registry: Registry, cache_dir: Path
) -> None:
    """With --admin-listen the admin endpoints answer there and only there; the registry API
    does not answer there, and the admin address keeps to admin_allow."""
    port = free_port()
    client = await mirror_from(_settings(registry, cache_dir, admin_listen=("127.0.0.1", port)))
    assert (await client.get("/v2/")).status == 200
    for path in ("/metrics", "/"):
        await assert_oci_error(await client.get(path), 404, "NAME_UNKNOWN")
    admin = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        async with session.get(f"{admin}/") as response:
            assert response.status == 200
            assert "<h1>mirror" in await response.text()
        async with session.get(f"{admin}/v2/") as response:
            assert response.status == 404
    assert "mirror_upstream_bytes_total" in Scrape.parse(text).names()


async def test_the_admin_listener_keeps_to_admin_allow(
    mirror_from: MirrorFromSettings, registry: Registry, cache_dir: Path
) -> None:
    """A client outside admin_allow gets 403 from the admin listener too."""
    port = free_port()
    settings = _settings(
        registry,
        cache_dir,
        admin_listen=("127.0.0.1", port),
        admin_allow=(ipaddress.ip_network("192.0.2.0/24"),),
    )
    await mirror_from(settings)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 403


async def test_metrics_off_removes_the_admin_endpoints(
    mirror_from: MirrorFromSettings, registry: Registry, cache_dir: Path
) -> None:
    """`metrics = false`: no /metrics, no page, pulls as usual."""
    client = await mirror_from(_settings(registry, cache_dir, metrics=False))
    for path in ("/metrics", "/"):
        await assert_oci_error(await client.get(path), 404, "NAME_UNKNOWN")
    assert (await client.get("/v2/")).status == 200


async def test_the_admin_listener_holds_to_a_connection_cap_and_answers_bad_bytes_in_oci(
    mirror_from: MirrorFromSettings, registry: Registry, cache_dir: Path
) -> None:
    """Clients that open many connections to the admin address and never finish a request
    hold at most ADMIN_CONNECTIONS of them (the longest idle are closed for newcomers, as on
    the registry's port), and a scrape is still answered; bytes that are not HTTP get the OCI
    400 that quotes nothing."""
    port = free_port()
    await mirror_from(_settings(registry, cache_dir, admin_listen=("127.0.0.1", port)))
    held = []
    try:
        for _ in range(ADMIN_CONNECTIONS + 20):
            held.append(await _send(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"))  # unfinished
        scraped = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert scraped.startswith(b"HTTP/1.1 200 "), scraped[:200]
        assert await wait_until(lambda: sum(map(is_closed_by_server, held)) >= 21)
        raw = await _exchange(port, b"G<script>ET / HTTP/1.1\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b" 400 " in head.split(b"\r\n")[0], raw
        assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
        assert b"script" not in body
    finally:
        for sock in held:
            sock.close()


async def _send(port: int, data: bytes) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, data)
    return sock


async def _exchange(port: int, request: bytes) -> bytes:
    """One request with `Connection: close` added, and all the answer."""
    loop = asyncio.get_running_loop()
    sock = await _send(port, request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
    with contextlib.closing(sock):
        raw = b""
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(sock, 65536):
                raw += chunk
        return raw
