"""An upstream that answers, but too slowly ever to finish: headers or bodies trickled a byte at
a time, each byte inside the read timeout. Manifests, revalidations and tokens are bounded as a
whole (`api_timeout`): a cached tag is served stale, a miss is a clean 504; blob bodies are not
(only the head of their answer is), since a big layer on a slow link takes long."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    Handler,
    bearer_auth,
    content,
    trickling_body,
    trickling_head,
)
from tests.support.images import make_image, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_oci_error

Client = TestClient[Any, Any]
SlowMirror = Callable[..., Awaitable[Client]]
READ_TIMEOUT = 1.0
DEADLINE = 2 * READ_TIMEOUT  # api_timeout left unset: two read timeouts
# Past this the mirror would have hung, but for the test giving up.
PATIENCE = DEADLINE * 4
TAG_PATH = "/v2/lib/app/manifests/v1"
TOKEN_PATH = "/token"


@pytest.fixture
def slow_mirror(mirror_from: MirrorFromSettings, cache_dir: Path) -> SlowMirror:
    """A factory: a mirror over the fake with a short read timeout; tags always stale."""

    async def make(fake: FakeUpstream, **options: Any) -> Client:
        upstream = UpstreamSettings(
            url=fake.url, default=True, connect_timeout=1.0, read_timeout=READ_TIMEOUT, **options
        )
        return await mirror_from(Settings(cache_dir=cache_dir, upstreams=(upstream,), tag_ttl=0))

    return make


async def timed(client: Client, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = await asyncio.wait_for(
        client.get(path, headers={"Accept": ACCEPT_ALL}), timeout=PATIENCE
    )
    await response.read()
    return response, time.monotonic() - started


def behind_token(fake: FakeUpstream, inner: Handler) -> Handler:
    """`inner` behind a Bearer challenge whose realm is the fake's `TOKEN_PATH`."""
    return bearer_auth(f"{fake.url}{TOKEN_PATH}", "fake", "t", "repository:lib/app:pull", inner)


def trickled_token(fake: FakeUpstream) -> Handler:
    """A token realm whose answer would take about a minute."""
    body = json.dumps({"token": "t", "expires_in": 300, "padding": "a" * 300}).encode()
    return trickling_body(fake, body, "application/json")


def request_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "request" and e.get("path") == TAG_PATH]


@pytest.mark.parametrize("where", ["revalidation-head", "token"])
async def test_a_cached_tag_is_served_stale_when_its_revalidation_trickles(
    slow_mirror: SlowMirror, make_fake_upstream: FakeFactory, where: str
) -> None:
    """A HEAD whose headers, or a token whose body, never end: stale-if-error, in bounded time."""
    image = make_image(seed=f"trickled-{where}")
    fake = await make_fake_upstream()
    fake.route(TAG_PATH, content(image.manifest, image.media_type))
    client = await slow_mirror(fake)
    response, _ = await timed(client, TAG_PATH)
    assert response.status == 200
    if where == "token":
        fake.route(TAG_PATH, behind_token(fake, content(image.manifest, image.media_type)))
        fake.route(TOKEN_PATH, trickled_token(fake))
    else:
        fake.route(TAG_PATH, trickling_head(fake))
    with structlog.testing.capture_logs() as logs:
        response, elapsed = await timed(client, TAG_PATH)
    assert response.status == 200
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert elapsed < DEADLINE + 1.5, f"the stale answer took {elapsed:.1f}s"
    assert [line["cache"] for line in request_lines(logs)] == ["stale"]
    if where == "token":
        assert fake.seen("GET", TOKEN_PATH), "the token was not asked for"


@pytest.mark.parametrize("where", ["headers", "body", "token"])
async def test_an_uncached_tag_that_trickles_is_a_504_in_bounded_time(
    slow_mirror: SlowMirror, make_fake_upstream: FakeFactory, where: str
) -> None:
    """Nothing cached: a manifest's headers, its body or its token trickling is a clean 504."""
    image = make_image(seed=f"trickled-miss-{where}")
    fake = await make_fake_upstream()
    if where == "headers":
        fake.route(TAG_PATH, trickling_head(fake))
    elif where == "body":
        fake.route(TAG_PATH, trickling_body(fake, image.manifest, image.media_type))
    else:
        fake.route(TAG_PATH, behind_token(fake, content(image.manifest, image.media_type)))
        fake.route(TOKEN_PATH, trickled_token(fake))
    client = await slow_mirror(fake)
    response, elapsed = await timed(client, TAG_PATH)
    await assert_oci_error(response, 504, "UNAVAILABLE")
    assert elapsed < DEADLINE + 1.5, f"the error took {elapsed:.1f}s"


async def test_api_timeout_bounds_manifests_but_not_a_steady_blob_body(
    slow_mirror: SlowMirror, make_fake_upstream: FakeFactory
) -> None:
    """A blob arriving slowly but steadily takes longer than `api_timeout` and is served whole:
    only the read timeout bounds a blob body."""
    layer = b"a slow layer"
    image = make_image(seed="trickled-blob")
    fake = await make_fake_upstream()
    blob_path = f"/v2/lib/app/blobs/{sha256_digest(layer)}"
    fake.route(blob_path, trickling_body(fake, layer, "application/octet-stream"))
    fake.route(TAG_PATH, trickling_body(fake, image.manifest, image.media_type))
    client = await slow_mirror(fake, api_timeout=0.5)
    response, elapsed = await timed(client, TAG_PATH)
    await assert_oci_error(response, 504, "UNAVAILABLE")
    assert elapsed < 0.5 + 1.5, f"the manifest error took {elapsed:.1f}s"
    started = time.monotonic()
    response = await asyncio.wait_for(client.get(blob_path), timeout=PATIENCE * 2)
    assert response.status == 200
    assert await response.read() == layer
    assert time.monotonic() - started > 0.5 * 4, "the blob did not outlast api_timeout"


async def test_a_blob_whose_answer_head_trickles_is_a_504_in_bounded_time(
    slow_mirror: SlowMirror, make_fake_upstream: FakeFactory
) -> None:
    """Only a blob's body may take long: headers that never end are held to `api_timeout`
    like any other answer, and the client gets a clean 504 rather than a wait without end."""
    fake = await make_fake_upstream()
    blob_path = f"/v2/lib/app/blobs/{sha256_digest(b'never')}"
    fake.route(blob_path, trickling_head(fake))
    client = await slow_mirror(fake)
    response, elapsed = await timed(client, blob_path)
    await assert_oci_error(response, 504, "UNAVAILABLE")
    assert elapsed < DEADLINE + 1.5, f"the error took {elapsed:.1f}s"


async def test_a_tag_list_of_endless_slow_pages_is_a_504_within_api_timeout(
    slow_mirror: SlowMirror, make_fake_upstream: FakeFactory
) -> None:
    """Each page of a tag list within `api_timeout`, but page after page with a new tag each:
    the pages together are held to `api_timeout`, not one upstream connection for as long as
    a thousand pages take."""
    fake = await make_fake_upstream()
    path = "/v2/lib/app/tags/list"

    async def endless(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.1)
        page = int(request.query.get("last", "p0")[1:]) + 1
        body = json.dumps({"name": "lib/app", "tags": [f"p{page}"]}).encode()
        link = f'<{path}?n=1&last=p{page}>; rel="next"'
        return web.Response(body=body, content_type="application/json", headers={"Link": link})

    fake.route(path, endless)
    client = await slow_mirror(fake, api_timeout=1.0)
    response = await asyncio.wait_for(client.get(path), timeout=PATIENCE)
    await assert_oci_error(response, 504, "UNAVAILABLE")
    assert len(fake.seen("GET", path)) < 20, "the pages went on past api_timeout"
