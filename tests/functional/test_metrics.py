"""`/metrics` after known pulls: requests by kind, status and cache result, bytes served and
fetched, downloads and slots while a blob streams, upstream answers, failures and limits."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp.test_utils import TestClient

from tests.conftest import MirrorFactory, Seeded
from tests.faults import FakeFactory, RateLimit, Stall, rate_limited, slow_content
from tests.support.images import sha256_digest
from tests.support.metrics import Scrape, scrape
from tests.support.oci import ACCEPT_ALL, cached_blob, wait_until
from tests.support.processes import free_port
from tests.support.registry import Registry

BLOB = hashlib.sha256(b"metrics").digest() * (2 * 1024 * 1024 // 32)  # 2 MiB
DIGEST = sha256_digest(BLOB)
PATH = f"/v2/lib/app/blobs/{DIGEST}"
READERS = 5


async def _get(client: TestClient[Any, Any], path: str) -> bytes:
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    body = await response.read()
    assert response.status == 200, (response.status, body[:300])
    return body


async def _eventually(
    client: TestClient[Any, Any], check: Callable[[Scrape], bool], within: float = 10.0
) -> Scrape:
    """Scrape until `check` holds: a request is counted once its body has gone out."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await scrape(client)
        if check(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_hits_misses_and_bytes_after_known_pulls(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """A manifest and a blob pulled twice: one miss and one hit each; the bytes served by cache
    result are those the log lines give, and the upstream sent each body once."""
    repo, tag = seeded.schema2_ref
    layer = seeded.schema2.layers[0]
    manifest_path = f"/v2/{repo}/manifests/{tag}"
    blob_path = f"/v2/{repo}/blobs/{layer.digest}"
    client = await make_mirror(registry)
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            assert await _get(client, manifest_path) == seeded.schema2.manifest
            assert await _get(client, blob_path) == layer.data
        head = await client.head(blob_path)
        assert head.status == 200
    found = await scrape(client)
    # One process exports the series several workers do: no `_created` besides.
    assert not {name for name in found.names() if name.endswith("_created")}
    requests = "mirror_requests_total"
    for kind in ("manifest", "blob"):
        for cache in ("miss", "hit"):
            assert found.get(requests, kind=kind, status="200", cache=cache) == (
                2 if (kind, cache) == ("blob", "hit") else 1  # the HEAD is a hit too
            ), (kind, cache)
    both = len(seeded.schema2.manifest) + layer.size
    assert found.get("mirror_served_bytes_total", cache="miss") == both
    assert found.get("mirror_served_bytes_total", cache="hit") == both
    assert found.get("mirror_upstream_bytes_total", registry="docker.io") == both
    lines = [e for e in logs if e.get("event") == "request"]
    for cache in ("miss", "hit"):
        logged = sum(e["bytes"] for e in lines if e["cache"] == cache)
        assert found.get("mirror_served_bytes_total", cache=cache) == logged, cache
    # The health probe and the scrapes themselves are no registry traffic.
    assert (await client.get("/healthz")).status == 200
    again = await scrape(client)
    assert again.total(requests) == found.total(requests) == 5


async def test_coalesced_readers_of_one_download(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """Five clients of one stalled download: the gauges show one download, five readers and
    one slot; afterwards one miss, four coalesced, every byte served, the blob fetched once."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(PATH, slow_content(BLOB, stall, first=256 * 1024))
    client = await make_mirror(fake)
    first = await client.get(PATH)
    assert first.status == 200
    assert await first.content.readexactly(1024)
    others = await asyncio.gather(*(client.get(PATH) for _ in range(READERS - 1)))
    for response in others:
        assert await response.content.readexactly(1024)
    during = await scrape(client)
    assert during.get("mirror_fills_in_flight") == 1
    assert during.get("mirror_fill_readers") == READERS
    assert during.get("mirror_download_slots_used") == 1
    assert during.get("mirror_download_slots_queued") == 0
    stall.resume.set()
    for response in (first, *others):
        await response.read()
    done = await _eventually(
        client,
        lambda s: (
            s.total("mirror_requests_total") == READERS and not s.get("mirror_fills_in_flight")
        ),
    )
    assert done.get("mirror_requests_total", kind="blob", status="200", cache="miss") == 1
    assert done.get("mirror_requests_total", kind="blob", status="200", cache="coalesced") == 4
    served = done.total("mirror_served_bytes_total")
    assert served == READERS * len(BLOB)
    assert done.get("mirror_upstream_bytes_total", registry="docker.io") == len(BLOB)
    assert done.get("mirror_fill_readers") == 0
    assert done.get("mirror_download_slots_used") == 0
    assert len(fake.seen("GET", PATH)) == 1


async def test_upstream_answers_latency_and_rate_limit(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, seeded: Seeded
) -> None:
    """Each upstream answer is counted by method and status and timed; Docker Hub's
    RateLimit headers become the remaining and limit gauges."""
    fake = await make_fake_upstream()
    limit = RateLimit(limit=100, remaining=60)
    image = seeded.oci
    fake.route("/v2/lib/app/manifests/v1", rate_limited(image.manifest, image.media_type, limit))
    client = await make_mirror(fake, tag_ttl=0)
    before = await scrape(client)
    assert before.get("mirror_upstream_ratelimit_remaining", registry="docker.io") is None
    await _get(client, "/v2/lib/app/manifests/v1")  # a GET: a pull
    await _get(client, "/v2/lib/app/manifests/v1")  # stale at once: revalidated with a HEAD
    found = await scrape(client)
    upstream = "mirror_upstream_requests_total"
    assert found.get(upstream, registry="docker.io", method="GET", status="200") == 1
    assert found.get(upstream, registry="docker.io", method="HEAD", status="200") == 1
    count = "mirror_upstream_request_duration_seconds_count"
    assert found.get(count, registry="docker.io") == 2
    assert found.get("mirror_upstream_ratelimit_remaining", registry="docker.io") == 59
    assert found.get("mirror_upstream_ratelimit_limit", registry="docker.io") == 100
    assert found.get("mirror_upstream_errors_total", registry="docker.io", kind="connect") is None


async def test_unreachable_upstream_counts_errors_and_opens_the_breaker(
    make_mirror: MirrorFactory,
) -> None:
    """Connections refused are errors of kind `connect`; at the threshold the breaker gauge
    reads 1 and misses fail with 503 without a connection."""
    client = await make_mirror(f"http://127.0.0.1:{free_port()}")
    statuses = []
    for _ in range(4):  # breaker_failures is 3 by default
        response = await client.get("/v2/lib/app/manifests/v1")
        statuses.append(response.status)
    assert statuses[-1] == 503, statuses
    found = await scrape(client)
    assert found.get("mirror_upstream_errors_total", registry="docker.io", kind="connect") == 3
    assert found.get("mirror_upstream_breaker_open", registry="docker.io") == 1
    assert found.get("mirror_requests_total", kind="manifest", status="503", cache="miss") == 4


async def test_every_request_kind_is_labelled(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Requests are labelled by what their path addresses (a refused push to a manifest is a
    manifest request); the API root, the catalog and upload sessions are "other"."""
    repo, _ = seeded.schema2_ref
    client = await make_mirror(registry)
    assert (await client.get(f"/v2/{repo}/tags/list")).status == 200
    referrers = await client.get(f"/v2/{repo}/referrers/{seeded.schema2.digest}")
    assert referrers.status == 200
    assert (await client.get("/v2/")).status == 200
    assert (await client.get("/v2/_catalog")).status == 200
    assert (await client.post(f"/v2/{repo}/blobs/uploads/")).status == 405
    assert (await client.put(f"/v2/{repo}/manifests/v9")).status == 405
    assert (await client.get(f"/v2/{repo}/manifests/nope")).status == 404
    found = await scrape(client)

    def kind(name: str) -> float:
        return found.total("mirror_requests_total", kind=name)

    assert (kind("tags"), kind("referrers"), kind("other"), kind("manifest")) == (1, 1, 3, 2)
    assert found.get("mirror_requests_total", kind="manifest", status="404", cache="miss") == 1
    assert found.get("mirror_requests_total", kind="manifest", status="405", cache="none") == 1
    assert found.get("mirror_requests_total", kind="other", status="405", cache="none") == 1


async def test_counting_costs_no_sendfile(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A cached blob still goes out through loop.sendfile, whole, and is counted as served."""
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    client = await make_mirror(registry)
    await _get(client, path)
    assert await wait_until(lambda: cached_blob(cache_dir, layer.digest).exists())
    loop = asyncio.get_running_loop()
    real = loop.sendfile
    sent: list[int] = []

    async def spy(transport: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
        done = await real(transport, file, offset, count)
        sent.append(done)
        return done

    loop.sendfile = spy  # type: ignore[method-assign]
    try:
        body = await _get(client, path)
    finally:
        loop.sendfile = real  # type: ignore[method-assign]
    assert body == layer.data
    assert sum(sent) == layer.size, sent
    found = await scrape(client)
    assert found.get("mirror_served_bytes_total", cache="hit") == layer.size
