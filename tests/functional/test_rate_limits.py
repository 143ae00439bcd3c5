"""Docker Hub's pull limits: HEAD to revalidate, no calls near the limit, 429 only when uncached."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    RateLimit,
    bearer_auth,
    content,
    rate_limited,
    status,
)
from tests.support.images import Image, make_image
from tests.support.oci import ACCEPT_ALL, assert_oci_error

Client = TestClient[Any, Any]
HubMirror = Callable[..., Awaitable[Client]]
TAG_PATH = "/v2/lib/app/manifests/v1"


@pytest.fixture
def hub_mirror(mirror_from: MirrorFromSettings, cache_dir: Path) -> HubMirror:
    """A factory: a mirror whose default upstream, named docker.io, is the given fake.

    Every tag is stale at once (tag_ttl 0), so each request is a revalidation decision.
    """

    async def make(fake: FakeUpstream, *others: UpstreamSettings, **options: Any) -> Client:
        upstream = UpstreamSettings(
            name="docker.io", url=fake.url, default=True, rate_limit_reserve=10, **options
        )
        return await mirror_from(
            Settings(cache_dir=cache_dir, upstreams=(upstream, *others), tag_ttl=0.0)
        )

    return make


def serve(fake: FakeUpstream, image: Image, limit: RateLimit, tag: str = "v1") -> None:
    """The tag and its digest, both behind the same pull accounting."""
    for reference in (tag, image.digest):
        fake.route(
            f"/v2/lib/app/manifests/{reference}",
            rate_limited(image.manifest, image.media_type, limit),
        )


def manifest_requests(fake: FakeUpstream, method: str | None = None) -> list[str]:
    return [r.path for r in fake.seen(method) if "/manifests/" in r.path]


def request_lines(
    logs: list[MutableMapping[str, Any]], path: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "request" and e.get("path") == path]


async def get_tag(client: Client, image: Image, method: str = "GET", path: str = TAG_PATH) -> None:
    response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, (method, path, await response.text())
    assert response.headers["Docker-Content-Digest"] == image.digest
    if method == "GET":
        assert await response.read() == image.manifest


async def test_stale_tag_is_revalidated_with_head_never_get(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """HEADs are free on Docker Hub and GETs are pulls: an unchanged tag costs no GET."""
    image = make_image(seed="ratelimit-head")
    limit = RateLimit(remaining=50)
    fake = await make_fake_upstream()
    serve(fake, image, limit)
    client = await hub_mirror(fake)
    await get_tag(client, image)
    fake.requests.clear()
    for method in ("GET", "HEAD", "GET"):
        await get_tag(client, image, method)
    assert manifest_requests(fake, "GET") == []
    assert manifest_requests(fake, "HEAD") == [TAG_PATH] * 3


async def test_near_the_limit_cached_tags_are_served_stale_without_asking_until_the_window_ends(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """Under the reserve, cached tags cost no upstream call (logged stale) for w seconds."""
    image = make_image(seed="ratelimit-reserve")
    limit = RateLimit(remaining=50, window=1)
    fake = await make_fake_upstream()
    serve(fake, image, limit)
    client = await hub_mirror(fake)
    await get_tag(client, image)
    limit.remaining = 5
    await get_tag(client, image, "HEAD")  # the revalidation that learns how little is left
    fake.requests.clear()
    with structlog.testing.capture_logs() as logs:
        for method in ("GET", "HEAD", "GET"):
            await get_tag(client, image, method)
    assert fake.requests == [], "a cached tag was revalidated with the limit nearly spent"
    lines = request_lines(logs, TAG_PATH)
    assert [line["cache"] for line in lines] == ["stale"] * 3, lines
    assert {line.get("upstream") for line in lines} == {"docker.io"}
    await asyncio.sleep(1.2)  # the window (w=1) has passed: revalidation resumes, once
    for method in ("GET", "GET"):
        await get_tag(client, image, method)
    assert manifest_requests(fake) == [TAG_PATH]
    assert fake.seen("HEAD", TAG_PATH) and not fake.seen("GET")


async def test_near_the_limit_an_uncached_tag_is_still_fetched(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """Saving pulls never means refusing one that has no cached answer."""
    cached = make_image(seed="ratelimit-cached")
    fresh = make_image(seed="ratelimit-new")
    limit = RateLimit(remaining=3)
    fake = await make_fake_upstream()
    serve(fake, cached, limit)
    serve(fake, fresh, limit, tag="v2")
    client = await hub_mirror(fake)
    await get_tag(client, cached)
    await get_tag(client, fresh, path="/v2/lib/app/manifests/v2")
    assert fake.seen("GET", "/v2/lib/app/manifests/v2") or fake.seen(
        "GET", f"/v2/lib/app/manifests/{fresh.digest}"
    )


async def test_429_with_nothing_cached_reaches_the_client_with_retry_after(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """Nothing to fall back on: the client gets 429 TOOMANYREQUESTS and when to come back."""
    image = make_image(seed="ratelimit-429-cold")
    limit = RateLimit(remaining=0, throttled=True, retry_after=120)
    fake = await make_fake_upstream()
    serve(fake, image, limit)
    client = await hub_mirror(fake)
    response = await client.get(TAG_PATH, headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 429, "TOOMANYREQUESTS")
    assert 0 < int(response.headers["Retry-After"]) <= 120
    head = await client.head(TAG_PATH, headers={"Accept": ACCEPT_ALL})
    assert head.status == 429
    assert 0 < int(head.headers["Retry-After"]) <= 120


async def test_a_throttled_token_service_reaches_the_client_as_429_with_retry_after(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """auth.docker.io limits token requests too: its 429 is the client's, with its wait."""
    image = make_image(seed="ratelimit-token-429")
    fake = await make_fake_upstream()
    fake.route("/token", status(429, "TOOMANYREQUESTS", {"Retry-After": "120"}))
    served = content(image.manifest, image.media_type)
    fake.route(TAG_PATH, bearer_auth(f"{fake.url}/token", "hub", "t", "x", served))
    client = await hub_mirror(fake)
    response = await client.get(TAG_PATH, headers={"Accept": ACCEPT_ALL})
    document = await assert_oci_error(response, 429, "TOOMANYREQUESTS")
    assert "token" in document["errors"][0]["message"], document
    assert response.headers["Retry-After"] == "120"


async def test_429_with_a_cached_tag_is_served_stale(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """Stale-if-error covers the rate limit: the cached tag is served, the line says stale."""
    image = make_image(seed="ratelimit-429-warm")
    limit = RateLimit(remaining=50)
    fake = await make_fake_upstream()
    serve(fake, image, limit)
    client = await hub_mirror(fake)
    await get_tag(client, image)
    limit.throttled = True
    with structlog.testing.capture_logs() as logs:
        for method in ("GET", "HEAD"):
            await get_tag(client, image, method)
    assert [line["cache"] for line in request_lines(logs, TAG_PATH)] == ["stale", "stale"]


async def test_one_upstreams_spent_limit_does_not_stop_revalidation_elsewhere(
    hub_mirror: HubMirror, make_fake_upstream: FakeFactory
) -> None:
    """The rate limit is Docker Hub's: another registry's stale tags are still revalidated."""
    image = make_image(seed="ratelimit-per-upstream")
    hub_limit = RateLimit(remaining=5)
    other_limit = RateLimit(remaining=1000, limit=5000)
    hub = await make_fake_upstream()
    other = await make_fake_upstream()
    serve(hub, image, hub_limit)
    serve(other, image, other_limit)
    client = await hub_mirror(hub, UpstreamSettings(name="other.test", url=other.url))
    other_path = f"{TAG_PATH}?ns=other.test"
    await get_tag(client, image)
    await get_tag(client, image, path=other_path)
    hub.requests.clear()
    other.requests.clear()
    for method in ("GET", "HEAD"):
        await get_tag(client, image, method)
        await get_tag(client, image, method, path=other_path)
    assert manifest_requests(hub) == []
    assert manifest_requests(other, "HEAD") == [TAG_PATH] * 2
