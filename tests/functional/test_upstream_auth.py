"""Upstream authentication: Bearer token flow, Basic credentials, redirects that drop them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import MirrorFactory, RegistryFactory, Seeded
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    api_root,
    basic_auth,
    bearer_auth,
    content,
    redirect,
    token_endpoint,
)
from tests.support.images import make_image, push_image, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_oci_error
from tests.support.registry import Registry
from tests.support.tokens import TokenService


async def test_pulls_work_against_a_token_auth_upstream(
    make_mirror: MirrorFactory,
    token_registry: Registry,
    token_service: TokenService,
    seeded: Seeded,
) -> None:
    """Docker Hub's flow: 401 + Bearer challenge, anonymous token from the realm, retry."""
    token_service.clear_requests()
    client = await make_mirror(token_registry, tag_ttl=0)
    for kind in ("schema2", "oci", "index"):
        repo, tag = getattr(seeded, f"{kind}_ref")
        image = getattr(seeded, kind)
        response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, (kind, await response.text())
        assert await response.read() == image.manifest
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[0]
    blob = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
    assert blob.status == 200
    assert await blob.read() == layer.data
    requests = token_service.requests()
    assert requests, "the token service was never asked"
    assert all(r.granted and r.service == token_service.service for r in requests)
    assert any(f"repository:{repo}:pull" in r.scopes for r in requests)
    assert all(r.username is None for r in requests), "anonymous pulls send no credentials"


async def test_token_is_reused_for_the_same_scope(
    make_mirror: MirrorFactory,
    token_registry: Registry,
    token_service: TokenService,
    seeded: Seeded,
) -> None:
    """Tokens are cached until they expire: a second pull asks upstream, not the token service."""
    repo, tag = seeded.oci_ref
    client = await make_mirror(token_registry, tag_ttl=0)
    path = f"/v2/{repo}/manifests/{tag}"
    assert await (await client.get(path, headers={"Accept": ACCEPT_ALL})).read()
    token_service.clear_requests()
    token_registry.clear_requests()
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    assert await response.read() == seeded.oci.manifest
    layer = seeded.oci.layers[0]
    blob = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
    assert await blob.read() == layer.data
    upstream = token_registry.requests()
    assert ("HEAD", path) in upstream, "the stale tag was not revalidated upstream"
    assert ("GET", f"/v2/{repo}/blobs/{layer.digest}") in upstream
    assert token_service.requests() == [], "a cached token for the same scope was not reused"


async def test_token_service_credentials_are_sent_when_configured(
    make_mirror: MirrorFactory, make_registry: RegistryFactory, tmp_path: Path
) -> None:
    """With upstream credentials, the mirror logs in to the token service with Basic auth."""
    service = TokenService(tmp_path / "private-tokens", username="robot", password="s3cret")
    try:
        upstream = make_registry(token_auth=service)
        image = make_image(seed="private-token")
        push_image(upstream.url, "private/app", "v1", image, auth=service)
        client = await make_mirror(upstream, username="robot", password="s3cret")
        response = await client.get("/v2/private/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, await response.text()
        assert await response.read() == image.manifest
        requests = service.requests()
        assert requests and all(r.username == "robot" and r.granted for r in requests)
    finally:
        service.close()


async def test_pulls_work_against_a_basic_auth_upstream(
    make_mirror: MirrorFactory, make_registry: RegistryFactory
) -> None:
    """Private registries may challenge with Basic; the configured credentials answer it."""
    credentials = ("puller", "pa55word")
    upstream = make_registry(htpasswd=credentials)
    image = make_image(layer_sizes=(4096,), seed="basic-auth")
    push_image(upstream.url, "team/basic", "v1", image, auth=credentials)
    client = await make_mirror(upstream, username=credentials[0], password=credentials[1])
    response = await client.get("/v2/team/basic/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    assert await response.read() == image.manifest
    for blob in image.blobs:
        got = await client.get(f"/v2/team/basic/blobs/{blob.digest}")
        assert got.status == 200
        assert await got.read() == blob.data


async def test_missing_upstream_credentials_give_a_client_error_not_500(
    make_mirror: MirrorFactory, make_registry: RegistryFactory
) -> None:
    """An upstream refusing the mirror is reported as an OCI 4xx the client can act on."""
    credentials = ("puller", "pa55word")
    upstream = make_registry(htpasswd=credentials)
    image = make_image(seed="basic-refused")
    push_image(upstream.url, "team/locked", "v1", image, auth=credentials)
    client = await make_mirror(upstream)
    response = await client.get("/v2/team/locked/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert response.status in (401, 403, 404), await response.text()
    assert response.content_type == "application/json"
    assert (await response.json())["errors"][0]["code"] in (
        "UNAUTHORIZED",
        "DENIED",
        "NAME_UNKNOWN",
        "MANIFEST_UNKNOWN",
    )


async def test_blob_redirect_is_followed_without_authorization(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """A CDN on another host must never see the upstream credentials; its URL is kept exact."""
    data = b"layer bytes from the CDN " * 400
    digest = sha256_digest(data)
    registry_fake = await make_fake_upstream()
    cdn = await make_fake_upstream()
    signed = "/cdn/blobs/data?verify=1700000000-abc%2Fdef%3D&X-Sig=a+b"
    cdn.route("/cdn/blobs/data", content(data))
    blob_path = f"/v2/lib/cdn/blobs/{digest}"
    registry_fake.route("/v2/", basic_auth("robot", "s3cret", api_root))
    registry_fake.route(blob_path, basic_auth("robot", "s3cret", redirect(cdn.url + signed)))
    client = await make_mirror(registry_fake, username="robot", password="s3cret")
    response = await client.get(blob_path)
    assert response.status == 200
    assert await response.read() == data
    assert response.headers["Docker-Content-Digest"] == digest
    assert any("Authorization" in r.headers for r in registry_fake.seen(path=blob_path))
    fetched = cdn.seen("GET", "/cdn/blobs/data")
    assert fetched, "the redirect was not followed"
    assert all("Authorization" not in r.headers for r in cdn.requests)
    assert fetched[0].path == signed, "the signed URL was altered"


async def test_a_repository_the_token_grants_nothing_for_is_name_unknown(
    make_mirror: MirrorFactory, make_registry: RegistryFactory, tmp_path: Path
) -> None:
    """Docker Hub answers a missing repository with 401 insufficient_scope to a valid token:
    clients get 404 NAME_UNKNOWN, not a DENIED that tells them to log in to the mirror."""
    with TokenService(tmp_path / "tokens", withheld=frozenset({"nobody/here"})) as tokens:
        upstream = make_registry(token_auth=tokens)
        client = await make_mirror(upstream)
        for path in ("/v2/nobody/here/manifests/latest", "/v2/nobody/here/tags/list"):
            response = await client.get(path, headers={"Accept": ACCEPT_ALL})
            document = await assert_oci_error(response, 404, "NAME_UNKNOWN")
            message = document["errors"][0]["message"]
            assert "does not exist" in message and "credentials" in message, message
            assert "authentication required" not in message
        assert any("repository:nobody/here:pull" in r.scopes for r in tokens.requests())


async def garbage(request: web.Request) -> web.StreamResponse:
    """A token realm that answers 200 with no token in it."""
    return web.Response(body=b"<html>not a token</html>", content_type="text/html")


OPEN = "/v2/lib/open"
LOCKED = "/v2/lib/locked"


async def open_and_locked(
    make_fake_upstream: FakeFactory, make_mirror: MirrorFactory
) -> tuple[FakeUpstream, TestClient[Any, Any], bytes]:
    """An upstream where lib/open needs no token and lib/locked needs one from /token (a
    working realm until a test breaks it); a mirror over it, tags always stale; a blob of
    lib/open's."""
    fake = await make_fake_upstream()
    image = make_image(seed="open-and-locked")
    manifest = content(image.manifest, image.media_type)
    layer = image.layers[0]
    fake.route(f"{OPEN}/manifests/v1", manifest)
    fake.route(f"{OPEN}/blobs/{layer.digest}", content(layer.data))
    realm = f"{fake.url}/token"
    fake.route(f"{LOCKED}/manifests/v1", bearer_auth(realm, "fake", "t", "x", manifest))
    fake.route("/token", token_endpoint("t"))
    return fake, await make_mirror(fake, tag_ttl=0), layer.digest


async def test_a_broken_token_realm_fails_only_the_repositories_that_need_a_token(
    make_fake_upstream: FakeFactory, make_mirror: MirrorFactory
) -> None:
    """A challenge whose realm answers garbage is a 502 for its repository, and costs
    requests elsewhere that need no token nothing, however often it is met."""
    fake, client, layer = await open_and_locked(make_fake_upstream, make_mirror)
    fake.route("/token", garbage)
    headers = {"Accept": ACCEPT_ALL}
    for _ in range(2):
        assert (await client.get(f"{OPEN}/manifests/v1", headers=headers)).status == 200
        response = await client.get(f"{LOCKED}/manifests/v1", headers=headers)
        document = await assert_oci_error(response, 502, "UNAVAILABLE")
        assert "token service" in document["errors"][0]["message"]
    assert (await client.get(f"{OPEN}/manifests/v1", headers=headers)).status == 200
    assert (await client.get(f"{OPEN}/blobs/{layer}")).status == 200
    assert len(fake.seen("GET", "/token")) == 2, "requests to lib/open waited on the realm"


async def test_a_token_realm_that_breaks_later_costs_requests_needing_no_token_nothing(
    make_fake_upstream: FakeFactory, make_mirror: MirrorFactory
) -> None:
    """A token asked for ahead of a challenge, from a realm that worked before, is only a
    guess: when the realm fails, the request goes out without one and is answered; a token
    already held keeps serving its repository."""
    fake, client, layer = await open_and_locked(make_fake_upstream, make_mirror)
    headers = {"Accept": ACCEPT_ALL}
    assert (await client.get(f"{LOCKED}/manifests/v1", headers=headers)).status == 200
    fake.route("/token", garbage)
    blob = await client.get(f"{OPEN}/blobs/{layer}")
    assert blob.status == 200, await blob.text()
    assert (await client.get(f"{OPEN}/manifests/v1", headers=headers)).status == 200
    assert len(fake.seen("GET", "/token")) == 2, "the failed realm was asked again"
    with structlog.testing.capture_logs() as logs:
        response = await client.get(f"{LOCKED}/manifests/v1", headers=headers)
    assert response.status == 200
    assert [e["cache"] for e in logs if e.get("event") == "request"] == ["hit"]
    assert len(fake.seen("GET", "/token")) == 2, "the token held for lib/locked was not reused"
