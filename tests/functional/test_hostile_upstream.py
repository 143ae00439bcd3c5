"""A hostile or broken upstream: redirects and token realms that leave the upstream's address
class, oversized bodies, numeric headers no parser expects, manifests of no manifest type. Each
is a clean OCI error (or a normal answer), never a 500, and no request reaches a refused
address."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings
from mirror.oci.mediatypes import OCI_INDEX
from mirror.upstream.pool import MAX_MANIFEST_SIZE, MAX_TAG_LIST_SIZE, MAX_TOKEN_SIZE
from tests.conftest import MirrorFactory, MirrorFromSettings
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    bearer_auth,
    content,
    error,
    redirect,
    token_endpoint,
)
from tests.support.cache import cached_tags
from tests.support.images import OCI_MANIFEST, make_image, sha256_digest
from tests.support.network import PRIVATE_LOOPBACK, loopback_network
from tests.support.oci import ACCEPT_ALL, assert_oci_error

Client = TestClient[Any, Any]
BLOB = b"a layer parked somewhere it should not be " * 200
BLOB_PATH = f"/v2/lib/app/blobs/{sha256_digest(BLOB)}"
MANIFEST_PATH = "/v2/lib/app/manifests/v1"


@pytest.fixture
def public_mirror(
    mirror_from: MirrorFromSettings, cache_dir: Path
) -> Callable[..., Awaitable[Client]]:
    """A factory: a mirror whose upstream (the fake, on 127.0.0.1) counts as public; the names
    given resolve to loopback addresses."""

    async def make(
        fake: FakeUpstream, names: dict[str, str] | None = None, **options: Any
    ) -> Client:
        upstream = UpstreamSettings(url=fake.url, default=True, **options)
        settings = Settings(cache_dir=cache_dir, upstreams=(upstream,))
        return await mirror_from(settings, loopback_network(names))

    return make


async def test_a_public_upstream_may_not_redirect_to_a_private_address(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """Literal or by name, a redirect to a non-public address is 502 and never followed."""
    fake = await make_fake_upstream()
    inside = await make_fake_upstream(PRIVATE_LOOPBACK)
    inside.route("/secret", content(BLOB))
    port = inside.host.rsplit(":", 1)[1]
    client = await public_mirror(fake, {"metadata.test": PRIVATE_LOOPBACK})
    for target in (f"{inside.url}/secret", f"http://metadata.test:{port}/secret"):
        fake.route(BLOB_PATH, redirect(target))
        response = await client.get(BLOB_PATH)
        document = await assert_oci_error(response, 502, "UNAVAILABLE")
        message = document["errors"][0]["message"]
        assert "loopback" in message and "allow_private_targets" in message, message
    assert inside.requests == [], "a refused address was contacted"


async def test_allow_private_targets_lets_a_public_upstream_redirect_inside(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """The per-upstream setting allows what is otherwise refused."""
    fake = await make_fake_upstream()
    inside = await make_fake_upstream(PRIVATE_LOOPBACK)
    inside.route("/layer", content(BLOB))
    fake.route(BLOB_PATH, redirect(f"{inside.url}/layer"))
    client = await public_mirror(fake, allow_private_targets=True)
    response = await client.get(BLOB_PATH)
    assert response.status == 200
    assert await response.read() == BLOB


async def test_a_private_upstream_may_redirect_to_another_private_address(
    make_fake_upstream: FakeFactory, mirror_from: MirrorFromSettings, cache_dir: Path
) -> None:
    """A site registry on a private address (here loopback) may send the mirror anywhere."""
    fake = await make_fake_upstream()
    inside = await make_fake_upstream(PRIVATE_LOOPBACK)
    inside.route("/layer", content(BLOB))
    fake.route(BLOB_PATH, redirect(f"{inside.url}/layer"))
    upstream = UpstreamSettings(url=fake.url, default=True)
    client = await mirror_from(Settings(cache_dir=cache_dir, upstreams=(upstream,)))
    response = await client.get(BLOB_PATH)
    assert response.status == 200
    assert await response.read() == BLOB


async def test_a_token_realm_on_a_private_address_is_refused(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """A public upstream's challenge naming a loopback realm gets no request, and a 502."""
    fake = await make_fake_upstream()
    inside = await make_fake_upstream(PRIVATE_LOOPBACK)
    inside.route("/token", token_endpoint("t"))
    image = make_image(seed="hostile-realm")
    served = content(image.manifest, image.media_type)
    fake.route(MANIFEST_PATH, bearer_auth(f"{inside.url}/token", "s", "t", "x", served))
    client = await public_mirror(fake, username="bot", password="s3cret")
    response = await client.get(MANIFEST_PATH, headers={"Accept": ACCEPT_ALL})
    document = await assert_oci_error(response, 502, "UNAVAILABLE")
    assert "token realm" in document["errors"][0]["message"]
    assert inside.requests == []


def huge(size: int, prefix: bytes = b"") -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A 200 whose body is `size` bytes, streamed without a length."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(prefix)
        chunk = b"a" * (1 << 20)
        sent = len(prefix)
        while sent < size:
            await response.write(chunk[: size - sent])
            sent += min(len(chunk), size - sent)
        await response.write_eof()
        return response

    return handler


async def test_bodies_read_into_memory_are_capped(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """A token, a manifest or a tag list past its cap is a clean 502 that names the cap."""
    tokens, manifests, tags = [await make_fake_upstream() for _ in range(3)]
    tokens.route("/token", huge(MAX_TOKEN_SIZE + 1, b'{"token":"'))
    tokens.route(MANIFEST_PATH, bearer_auth(f"{tokens.url}/token", "s", "t", "x", content(b"{}")))
    manifests.route(MANIFEST_PATH, huge(MAX_MANIFEST_SIZE + 1))
    tags.route("/v2/lib/app/tags/list", huge(MAX_TAG_LIST_SIZE + 1, b'{"tags":["'))
    for fake, path, cap in (
        (tokens, MANIFEST_PATH, MAX_TOKEN_SIZE),
        (manifests, MANIFEST_PATH, MAX_MANIFEST_SIZE),
        (tags, "/v2/lib/app/tags/list", MAX_TAG_LIST_SIZE),
    ):
        client = await public_mirror(fake)
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        document = await assert_oci_error(response, 502, "UNAVAILABLE")
        assert f"larger than {cap} bytes" in document["errors"][0]["message"], path
        await client.close()


HTTP_DATE_IN_TWO_MINUTES = "<an HTTP-date two minutes ahead>"


def throttled(headers: dict[str, str]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return error(429, "TOOMANYREQUESTS", headers)

    return handler


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        ("²", 60, 60),  # str.isdigit() is true for it, float() refuses it
        ("9" * 400, 21600, 21600),
        ("-5", 60, 60),
        ("0", 1, 1),
        # RFC 9110 §10.2.3: an HTTP-date, two minutes ahead (written when the test runs).
        (HTTP_DATE_IN_TWO_MINUTES, 61, 120),
    ],
)
async def test_retry_after_is_read_whatever_its_form(
    make_fake_upstream: FakeFactory,
    public_mirror: Callable[..., Awaitable[Client]],
    retry_after: str,
    low: int,
    high: int,
) -> None:
    """A 429's Retry-After reaches the client as whole seconds, clamped to [1 s, 6 h]."""
    if retry_after == HTTP_DATE_IN_TWO_MINUTES:
        retry_after = format_datetime(datetime.now(UTC) + timedelta(minutes=2), usegmt=True)
    fake = await make_fake_upstream()
    fake.route(MANIFEST_PATH, throttled({"Retry-After": retry_after}))
    client = await public_mirror(fake)
    response = await client.get(MANIFEST_PATH, headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 429, "TOOMANYREQUESTS")
    assert low <= int(response.headers["Retry-After"]) <= high


async def test_rate_limit_headers_with_absurd_numbers_are_survived(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """`RateLimit-Remaining: 0;w=<400 digits>` and friends: the answer is served as usual."""
    fake = await make_fake_upstream()
    image = make_image(seed="hostile-ratelimit")
    client = await public_mirror(fake)
    for i, remaining in enumerate(["0;w=" + "9" * 400, "9" * 5000, "²;w=1", "0;w=²"]):

        async def handler(request: web.Request, value: str = remaining) -> web.StreamResponse:
            headers = {
                "Content-Type": image.media_type,
                "Docker-Content-Digest": image.digest,
                "RateLimit-Remaining": value,
                "RateLimit-Limit": "9" * 400 + ";w=" + "9" * 400,
            }
            return web.Response(body=image.manifest, headers=headers)

        fake.route(f"/v2/lib/app/manifests/t{i}", handler)
        response = await client.get(f"/v2/lib/app/manifests/t{i}", headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, (remaining[:20], await response.text())
        assert await response.read() == image.manifest


async def test_an_unusable_location_is_a_clean_502(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """Redirects to nowhere, to other schemes or to unparseable places are refused cleanly."""
    fake = await make_fake_upstream()
    client = await public_mirror(fake)
    for location in ("http://[::1", "file:///etc/passwd", "http://", "//:99999/x"):
        fake.route(BLOB_PATH, redirect(location))
        response = await client.get(BLOB_PATH)
        await assert_oci_error(response, 502, "UNAVAILABLE")


async def test_an_answer_with_no_content_is_no_manifest_and_is_never_kept(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """A 204 under a manifest type is a 502, and the tag's next pull gets the real one."""
    image = make_image(seed="hostile-no-content")
    fake = await make_fake_upstream()

    async def no_content(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"Content-Type": image.media_type})

    fake.route(MANIFEST_PATH, no_content)
    client = await public_mirror(fake)
    response = await client.get(MANIFEST_PATH, headers={"Accept": ACCEPT_ALL})
    document = await assert_oci_error(response, 502, "UNAVAILABLE")
    assert "204" in document["errors"][0]["message"], document
    fake.route(MANIFEST_PATH, content(image.manifest, image.media_type))
    response = await client.get(MANIFEST_PATH, headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    assert await response.read() == image.manifest


# JSON nested deeper than Python's parser goes: a kilobyte or so of brackets.
DEEP = b"[" * 20_000


async def test_json_nested_too_deep_is_malformed_wherever_an_upstream_sends_it(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """As an error body (the upstream's 404 still reads as one), a token (a clean 502) and a
    manifest (a clean 502): never a 500."""
    fake = await make_fake_upstream()

    async def deep(request: web.Request, status: int = 404) -> web.StreamResponse:
        return web.Response(status=status, body=DEEP, content_type="application/json")

    fake.route(BLOB_PATH, deep)
    fake.route(MANIFEST_PATH, functools.partial(deep, status=200))
    client = await public_mirror(fake)
    await assert_oci_error(await client.get(BLOB_PATH), 404, "BLOB_UNKNOWN")
    response = await client.get(MANIFEST_PATH, headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 502, "UNAVAILABLE")
    fake.route("/token", functools.partial(deep, status=200))
    fake.route(
        "/v2/lib/private/manifests/v1",
        bearer_auth(f"{fake.url}/token", "registry", "t", "repository:lib/private:pull", deep),
    )
    response = await client.get("/v2/lib/private/manifests/v1", headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 502, "UNAVAILABLE")


async def test_a_tag_list_that_is_not_one_is_a_clean_502(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """A body that is not JSON, or has no list of tags, is an upstream error."""
    fake = await make_fake_upstream()
    client = await public_mirror(fake)
    for body in (b"<html>", b'{"tags": "v1"}', json.dumps([1, 2]).encode(), DEEP):

        async def handler(request: web.Request, body: bytes = body) -> web.StreamResponse:
            return web.Response(body=body, content_type="application/json")

        fake.route("/v2/lib/app/tags/list", handler)
        response = await client.get("/v2/lib/app/tags/list")
        await assert_oci_error(response, 502, "UNAVAILABLE")


def partial(
    data: bytes, first: int, last: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A 206 with bytes [first, last] of `data`, whatever the request asked for."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {first}-{last}/{len(data)}",
        }
        return web.Response(status=206, body=data[first : last + 1], headers=headers)

    return handler


async def test_a_part_of_a_blob_answering_a_request_for_all_of_it_is_a_clean_502(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """A 206 with the first 100 of 4096 bytes, to a GET with no Range: 502 before any header,
    never a 200 that breaks off."""
    data = bytes(range(256)) * 16
    path = f"/v2/lib/app/blobs/{sha256_digest(data)}"
    fake = await make_fake_upstream()
    fake.route(path, partial(data, 0, 99))
    client = await public_mirror(fake)
    document = await assert_oci_error(await client.get(path), 502, "UNAVAILABLE")
    assert "part of it" in document["errors"][0]["message"], document


async def test_a_206_that_holds_the_whole_blob_is_served(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """`Content-Range: bytes 0-4095/4096` is all of it: the client gets the blob, with 200."""
    data = bytes(range(256)) * 16
    path = f"/v2/lib/app/blobs/{sha256_digest(data)}"
    fake = await make_fake_upstream()
    fake.route(path, partial(data, 0, len(data) - 1))
    client = await public_mirror(fake)
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(data))
    assert await response.read() == data


async def test_a_body_longer_than_its_content_length_is_a_502_said_in_words(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """Bytes after the announced body are not HTTP: a clean 502 whose message says so, with no
    class name of the HTTP library in it."""
    fake = await make_fake_upstream()

    async def overlong(request: web.Request) -> web.StreamResponse:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BLOB)}\r\n\r\n".encode()
        assert request.transport is not None
        # Written by hand: aiohttp itself never sends more than the length it announced.
        request.transport.write(head + BLOB + b"and then some more")
        await fake.release.wait()
        request.transport.close()
        return web.Response()

    fake.route(BLOB_PATH, overlong)
    client = await public_mirror(fake)
    document = await assert_oci_error(await client.get(BLOB_PATH), 502, "UNAVAILABLE")
    message = document["errors"][0]["message"]
    assert "not valid HTTP" in message, message
    assert "Error" not in message and "aiohttp" not in message, message


def retyped(manifest: bytes, media_type: str) -> bytes:
    """The manifest with its own mediaType field set to `media_type` (a JSON string: escapes
    may put line breaks in it)."""
    document = json.loads(manifest)
    document["mediaType"] = media_type
    return json.dumps(document).encode()


def kept_manifests(cache_dir: Path) -> list[Path]:
    """The manifests and sidecars on disk."""
    return sorted(p for p in cache_dir.glob("manifests/**/*") if p.is_file())


@pytest.mark.parametrize(
    "media_type",
    [OCI_MANIFEST + "\r\nX-Injected: 1", "text/html", "application/" + "x" * 100_000],
    ids=["line-break", "not-a-manifest-type", "100-KB"],
)
async def test_a_manifest_of_no_manifest_type_is_a_clean_502_and_never_kept(
    make_fake_upstream: FakeFactory,
    public_mirror: Callable[..., Awaitable[Client]],
    cache_dir: Path,
    media_type: str,
) -> None:
    """Its own mediaType is what the mirror would send as Content-Type: by tag or by digest,
    every pull is refused, and neither the manifest nor the tag is kept."""
    fake = await make_fake_upstream()
    data = retyped(make_image(oci=True, seed="hostile-media-type").manifest, media_type)
    digest_path = f"/v2/lib/app/manifests/{sha256_digest(data)}"
    for path in (MANIFEST_PATH, digest_path):
        fake.route(path, content(data, OCI_MANIFEST))
    client = await public_mirror(fake)
    for path in (MANIFEST_PATH, digest_path, MANIFEST_PATH, digest_path):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        document = await assert_oci_error(response, 502, "UNAVAILABLE")
        message = document["errors"][0]["message"]
        assert "is not a" in message and len(message) < 300, message[:300]
    assert kept_manifests(cache_dir) == []
    assert cached_tags(cache_dir) == set()


async def test_a_head_of_no_manifest_type_is_not_relayed(
    make_fake_upstream: FakeFactory, public_mirror: Callable[..., Awaitable[Client]]
) -> None:
    """An upstream HEAD whose Content-Type is no manifest type cannot answer a client's HEAD:
    the GET's body, which names its own type, does."""
    fake = await make_fake_upstream()
    image = make_image(oci=True, seed="hostile-head-type")
    path = f"/v2/lib/app/manifests/{image.digest}"
    fake.route(path, content(image.manifest, "text/html"))
    client = await public_mirror(fake)
    response = await client.head(path, headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    assert response.headers["Content-Type"] == OCI_MANIFEST
    assert response.headers["Content-Length"] == str(len(image.manifest))
    assert [r.method for r in fake.seen(path=path)] == ["HEAD", "GET"]


async def test_a_size_another_repositorys_manifest_gives_never_stops_a_blob(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """Anyone may publish a manifest naming any blob with any size. Pulled through the mirror,
    such a manifest must not make that blob unfetchable through another repository: a fill
    goes by what the blob's own answer announces, and by the digest."""
    fake = await make_fake_upstream()
    config = b"{}"
    lying = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_digest(BLOB),
                "size": 1,
            }
        ],
    }
    fake.route("/v2/evil/img/manifests/v1", content(json.dumps(lying).encode(), OCI_MANIFEST))
    fake.route(BLOB_PATH, content(BLOB))
    client = await make_mirror(fake)
    manifest = await client.get("/v2/evil/img/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert manifest.status == 200
    response = await client.get(BLOB_PATH)
    assert response.status == 200
    assert await response.read() == BLOB


async def test_a_manifest_without_its_own_type_is_served_as_its_shape_whoever_sent_it_first(
    make_fake_upstream: FakeFactory, make_mirror: MirrorFactory
) -> None:
    """An OCI image manifest with no mediaType field, copied into a repository whose registry
    serves it as an index and pulled by digest there first: the pull of the real tag still gets
    an image manifest, since what a manifest is comes from its bytes, not from whichever answer
    brought it in first."""
    document = json.loads(make_image(oci=True, seed="untyped").manifest)
    del document["mediaType"]
    data = json.dumps(document).encode()
    digest = sha256_digest(data)
    fake = await make_fake_upstream()
    fake.route(f"/v2/evil/copy/manifests/{digest}", content(data, OCI_INDEX))
    fake.route("/v2/team/app/manifests/v1", content(data, OCI_MANIFEST))
    client = await make_mirror(fake)
    first = await client.get(f"/v2/evil/copy/manifests/{digest}", headers={"Accept": ACCEPT_ALL})
    assert first.status == 200, await first.text()
    pulled = await client.get("/v2/team/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert pulled.status == 200, await pulled.text()
    assert pulled.headers["Content-Type"] == OCI_MANIFEST
    assert await pulled.read() == data
