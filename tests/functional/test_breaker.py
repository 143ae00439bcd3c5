"""The circuit breaker: a blackholed upstream costs one timeout, then answers come at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.faults import FakeFactory, FakeUpstream, api_root, content, hanging
from tests.support.images import Image, make_image
from tests.support.oci import ACCEPT_ALL, assert_oci_error

Client = TestClient[Any, Any]
BreakerMirror = Callable[..., Awaitable[Client]]
READ_TIMEOUT = 1.0
# Answers with the circuit open take milliseconds; anything near READ_TIMEOUT means it was tried.
IMMEDIATE = READ_TIMEOUT / 2
TAG_PATH = "/v2/lib/app/manifests/v1"
MISS_PATH = "/v2/lib/other/manifests/v1"


@pytest.fixture
def breaker_mirror(mirror_from: MirrorFromSettings, cache_dir: Path) -> BreakerMirror:
    """A factory: a mirror over one upstream at `url`, short timeouts; tags always stale."""

    async def make(url: str, *others: UpstreamSettings, **options: Any) -> Client:
        upstream = UpstreamSettings(
            name="dead.test",
            url=url,
            default=True,
            connect_timeout=READ_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            **options,
        )
        return await mirror_from(
            Settings(cache_dir=cache_dir, upstreams=(upstream, *others), tag_ttl=0.0)
        )

    return make


@pytest.fixture
async def blackhole() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that accepts and never answers: (its URL, a one-item connection counter)."""
    connections = [0]
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def serve_healthy(fake: FakeUpstream, image: Image, repo: str = "lib/app") -> None:
    fake.route("/v2/", api_root)
    for reference in ("v1", image.digest):
        fake.route(f"/v2/{repo}/manifests/{reference}", content(image.manifest, image.media_type))


def blackhole_all(fake: FakeUpstream, *paths: str) -> None:
    for path in ("/v2/", *paths):
        fake.route(path, hanging(fake))


def api_calls(fake: FakeUpstream) -> list[str]:
    """Requests other than the `/v2/` probe."""
    return [r.path for r in fake.requests if r.path.split("?")[0] != "/v2/"]


async def timed(client: Client, method: str, path: str) -> tuple[Any, float, bytes]:
    started = time.monotonic()
    response = await asyncio.wait_for(
        client.request(method, path, headers={"Accept": ACCEPT_ALL}), timeout=READ_TIMEOUT * 8
    )
    body = await response.read()
    return response, time.monotonic() - started, body


async def test_cached_tag_is_served_within_the_timeout_then_at_once_while_the_circuit_is_open(
    breaker_mirror: BreakerMirror, make_fake_upstream: FakeFactory
) -> None:
    """One read timeout opens the circuit; then stale answers are immediate and nothing is sent."""
    image = make_image(seed="breaker-stale")
    fake = await make_fake_upstream()
    serve_healthy(fake, image)
    client = await breaker_mirror(fake.url, breaker_failures=1, breaker_reset=30.0)
    response, _, body = await timed(client, "GET", TAG_PATH)
    assert response.status == 200 and body == image.manifest
    blackhole_all(fake, TAG_PATH, f"/v2/lib/app/manifests/{image.digest}", MISS_PATH)

    with structlog.testing.capture_logs() as logs:
        response, elapsed, body = await timed(client, "GET", TAG_PATH)
        assert response.status == 200 and body == image.manifest
        assert elapsed < READ_TIMEOUT + 1, f"first stale answer took {elapsed:.2f}s"
        sent = len(api_calls(fake))
        for method in ("GET", "HEAD", "GET"):
            response, elapsed, body = await timed(client, method, TAG_PATH)
            assert response.status == 200
            assert response.headers["Docker-Content-Digest"] == image.digest
            assert elapsed < IMMEDIATE, f"{method} with the circuit open took {elapsed:.2f}s"
        assert body == image.manifest
    assert len(api_calls(fake)) == sent, "requests went to an upstream whose circuit is open"
    lines = [e for e in logs if e.get("event") == "request"]
    assert [line["cache"] for line in lines] == ["stale"] * 4
    assert {line.get("upstream") for line in lines} == {"dead.test"}


async def test_a_miss_while_the_circuit_is_open_is_a_quick_503(
    breaker_mirror: BreakerMirror, make_fake_upstream: FakeFactory
) -> None:
    """Nothing cached and the upstream known dead: 503 UNAVAILABLE now, not after a timeout."""
    image = make_image(seed="breaker-miss")
    fake = await make_fake_upstream()
    serve_healthy(fake, image)
    client = await breaker_mirror(fake.url, breaker_failures=1, breaker_reset=30.0)
    assert (await timed(client, "GET", TAG_PATH))[0].status == 200
    blob_path = f"/v2/lib/app/blobs/{image.layers[0].digest}"
    blackhole_all(fake, TAG_PATH, f"/v2/lib/app/manifests/{image.digest}", MISS_PATH, blob_path)
    assert (await timed(client, "GET", TAG_PATH))[0].status == 200  # opens the circuit
    sent = len(api_calls(fake))
    for path in (MISS_PATH, blob_path):
        started = time.monotonic()
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        await assert_oci_error(response, 503, "UNAVAILABLE")
        elapsed = time.monotonic() - started
        assert elapsed < IMMEDIATE, f"{path} took {elapsed:.2f}s with the circuit open"
    assert len(api_calls(fake)) == sent


async def test_consecutive_timeouts_open_the_circuit_against_a_silent_server(
    breaker_mirror: BreakerMirror, blackhole: tuple[str, list[int]]
) -> None:
    """A server that accepts and never answers: two timeouts, then immediate 503s, no connection."""
    url, connections = blackhole
    client = await breaker_mirror(url, breaker_failures=2, breaker_reset=30.0)
    for _ in range(2):
        response, elapsed, _ = await timed(client, "GET", MISS_PATH)
        assert response.status in (503, 504), response.status
        assert elapsed < READ_TIMEOUT + 1, f"a hung upstream held the client {elapsed:.2f}s"
    opened_at = connections[0]
    assert opened_at >= 1
    for path in (MISS_PATH, "/v2/lib/third/manifests/v1"):
        response, elapsed, _ = await timed(client, "GET", path)
        assert response.status == 503
        assert elapsed < IMMEDIATE, f"{path} took {elapsed:.2f}s with the circuit open"
    assert connections[0] == opened_at, "the mirror connected to an upstream whose circuit is open"


async def test_a_background_probe_closes_the_circuit_once_the_upstream_answers(
    breaker_mirror: BreakerMirror, make_fake_upstream: FakeFactory
) -> None:
    """After breaker_reset a GET /v2/ probe finds the upstream back; misses are fetched again."""
    image = make_image(seed="breaker-probe")
    other = make_image(seed="breaker-probe-other")
    fake = await make_fake_upstream()
    serve_healthy(fake, image)
    # Long enough that a busy machine cannot let the circuit close before the miss below.
    client = await breaker_mirror(fake.url, breaker_failures=1, breaker_reset=2.0)
    assert (await timed(client, "GET", TAG_PATH))[0].status == 200
    blackhole_all(fake, TAG_PATH, f"/v2/lib/app/manifests/{image.digest}", MISS_PATH)
    assert (await timed(client, "GET", TAG_PATH))[0].status == 200  # stale; circuit opens
    response, elapsed, _ = await timed(client, "GET", MISS_PATH)
    assert response.status == 503 and elapsed < IMMEDIATE

    serve_healthy(fake, image)
    serve_healthy(fake, other, repo="lib/other")
    probes_before = len(fake.seen("GET", "/v2/"))
    heads_before = len(fake.seen("HEAD", TAG_PATH))
    deadline = time.monotonic() + 10
    while True:
        response, _, body = await timed(client, "GET", MISS_PATH)
        if response.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert response.status == 200, "the circuit never closed after the upstream came back"
    assert body == other.manifest
    assert len(fake.seen("GET", "/v2/")) > probes_before, "no GET /v2/ probe was sent"
    assert fake.seen("GET", MISS_PATH) or fake.seen("HEAD", MISS_PATH)
    response, elapsed, body = await timed(client, "GET", TAG_PATH)
    assert response.status == 200 and body == image.manifest
    assert len(fake.seen("HEAD", TAG_PATH)) > heads_before, "the tag was not revalidated again"


async def test_only_consecutive_failures_open_the_circuit(
    breaker_mirror: BreakerMirror, make_fake_upstream: FakeFactory
) -> None:
    """A success in between resets the count: timeout, success, timeout leaves it closed."""
    image = make_image(seed="breaker-consecutive")
    fake = await make_fake_upstream()
    serve_healthy(fake, image)
    fake.route(MISS_PATH, hanging(fake))
    client = await breaker_mirror(fake.url, breaker_failures=2, breaker_reset=30.0)
    digest_path = f"/v2/lib/app/manifests/{image.digest}"
    for path in (MISS_PATH, digest_path, MISS_PATH):
        response, elapsed, _ = await timed(client, "GET", path)
        if path == digest_path:
            assert response.status == 200
        else:
            assert response.status in (503, 504), response.status
            assert elapsed >= READ_TIMEOUT * 0.8, "the upstream was not even tried"
    sent = len(fake.seen("GET", TAG_PATH)) + len(fake.seen("HEAD", TAG_PATH))
    response, _, body = await timed(client, "GET", TAG_PATH)
    assert response.status == 200, "two failures that were not consecutive opened the circuit"
    assert body == image.manifest
    assert len(fake.seen("GET", TAG_PATH)) + len(fake.seen("HEAD", TAG_PATH)) > sent


async def test_an_open_circuit_belongs_to_one_upstream(
    breaker_mirror: BreakerMirror, make_fake_upstream: FakeFactory
) -> None:
    """Another upstream of the same mirror keeps being asked while dead.test is cut off."""
    image = make_image(seed="breaker-per-upstream")
    dead = await make_fake_upstream()
    alive = await make_fake_upstream()
    serve_healthy(dead, image)
    serve_healthy(alive, image)
    alive_settings = UpstreamSettings(name="alive.test", url=alive.url)
    client = await breaker_mirror(dead.url, alive_settings, breaker_failures=1, breaker_reset=30.0)
    blackhole_all(dead, TAG_PATH, f"/v2/lib/app/manifests/{image.digest}", MISS_PATH)
    response, _, _ = await timed(client, "GET", MISS_PATH)  # times out: dead.test's circuit opens
    assert response.status in (503, 504)
    response, elapsed, _ = await timed(client, "GET", MISS_PATH)
    assert response.status == 503 and elapsed < IMMEDIATE
    for _ in range(2):
        response, _, body = await timed(client, "GET", f"{TAG_PATH}?ns=alive.test")
        assert response.status == 200
        assert body == image.manifest
    assert len(alive.seen(path=TAG_PATH)) >= 2, "alive.test was cut off with dead.test"
