"""Redirect targets that challenge on their own (registry.k8s.io sends every request to a
regional registry that may want a token): answered anonymously, never with our credentials."""

from __future__ import annotations

from pathlib import Path

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.faults import FakeFactory, bearer_auth, content, redirect, token_endpoint
from tests.support.images import sha256_digest

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
OCI = "application/vnd.oci.image.manifest.v1+json"


async def test_a_challenging_redirect_target_gets_an_anonymous_token_of_its_own(
    make_fake_upstream: FakeFactory, mirror_from: MirrorFromSettings, cache_dir: Path
) -> None:
    """The manifest is fetched through the region's own token; our password never goes there."""
    upstream = await make_fake_upstream()
    region = await make_fake_upstream()
    path = "/v2/pause/manifests/3.9"
    upstream.route(path, redirect(f"{region.url}{path}"))
    region.route("/token", token_endpoint("regional-token"))
    scope = "repository:pause:pull"
    region.route(path, bearer_auth(f"{region.url}/token", "region", "regional-token", scope,
                                   content(MANIFEST, OCI)))  # fmt: skip
    client = await mirror_from(
        Settings(
            cache_dir=cache_dir,
            upstreams=(
                UpstreamSettings(
                    name="registry.k8s.io",
                    url=upstream.url,
                    default=True,
                    username="bot",
                    password="s3cret",
                ),
            ),
            tag_ttl=0,  # the second pull revalidates: a HEAD through the same redirect
        )
    )
    for _ in range(2):
        response = await client.get("/v2/registry.k8s.io/pause/manifests/3.9")
        assert response.status == 200, await response.text()
        assert await response.read() == MANIFEST
        assert response.headers["Docker-Content-Digest"] == sha256_digest(MANIFEST)
    # The first GET is challenged; the revalidating HEAD brings the cached token at once.
    assert [r.method for r in region.seen(None, path)] == ["GET", "GET", "HEAD"]
    assert region.seen("HEAD", path)[0].headers["Authorization"] == "Bearer regional-token"
    tokens = region.seen("GET", "/token")
    assert len(tokens) == 1, "the regional token is cached like any other"
    assert "Authorization" not in tokens[0].headers
    for seen in region.requests:
        assert "s3cret" not in seen.headers.get("Authorization", "")
        assert not seen.headers.get("Authorization", "").startswith("Basic")
