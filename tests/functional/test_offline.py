"""`--offline`: answers come from the cache alone; a miss is an immediate 404 naming the mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings, RegistryFactory, Seeded
from tests.faults import FakeFactory
from tests.support.images import make_image, push_image
from tests.support.oci import ACCEPT_ALL, assert_oci_error
from tests.support.registry import Registry

Client = TestClient[Any, Any]


def settings(url: str, cache_dir: Path, *, offline: bool) -> Settings:
    """One default upstream at `url`; every tag stale at once, so tags take the stale path."""
    upstream = UpstreamSettings(default=True, url=url, offline=offline, connect_timeout=2.0)
    return Settings(cache_dir=cache_dir, upstreams=(upstream,), tag_ttl=0.0)


async def pull(client: Client, repo: str, reference: str, blobs: list[str]) -> None:
    """Pull a manifest and the given blobs through `client`, as a client would."""
    path = f"/v2/{repo}/manifests/{reference}"
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    await response.read()
    for digest in blobs:
        response = await client.get(f"/v2/{repo}/blobs/{digest}")
        assert response.status == 200
        await response.read()


async def test_offline_serves_what_was_cached_with_the_upstream_stopped(
    mirror_from: MirrorFromSettings, make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """Pulled once, then upstream stopped and --offline: tag, digest and blobs are served,
    tags as cache=stale without a warning."""
    upstream = make_registry()
    image = make_image(layer_sizes=(3000, 1000), seed="offline-hit")
    push_image(upstream.url, "team/app", "v1", image)
    online = await mirror_from(settings(upstream.url, cache_dir, offline=False))
    await pull(online, "team/app", "v1", [blob.digest for blob in image.blobs])
    await online.close()
    upstream.stop()

    client = await mirror_from(settings(upstream.url, cache_dir, offline=True))
    with structlog.testing.capture_logs() as logs:
        for method in ("GET", "HEAD"):
            response = await client.request(
                method, "/v2/team/app/manifests/v1", headers={"Accept": ACCEPT_ALL}
            )
            assert response.status == 200
            assert response.headers["Docker-Content-Digest"] == image.digest
        response = await client.get(
            f"/v2/team/app/manifests/{image.digest}", headers={"Accept": ACCEPT_ALL}
        )
        assert await response.read() == image.manifest
        for blob in image.blobs:
            response = await client.get(f"/v2/team/app/blobs/{blob.digest}")
            assert await response.read() == blob.data
    requests = [e for e in logs if e.get("event") == "request"]
    assert [e["cache"] for e in requests[:2]] == ["stale", "stale"], requests
    assert all(e["status"] == 200 for e in requests)
    assert all(e.get("upstream_status") is None for e in requests), "an upstream was asked"
    # Stale is the normal state offline, not an upstream failure worth a warning per pull.
    assert not [e for e in logs if e.get("log_level") == "warning"], logs


async def test_offline_misses_are_404s_naming_the_mode_and_contact_nobody(
    mirror_from: MirrorFromSettings,
    registry: Registry,
    seeded: Seeded,
    make_fake_upstream: FakeFactory,
    cache_dir: Path,
) -> None:
    """Every kind of miss is a 404 of its kind at once; the upstream never sees a request."""
    repo, tag = seeded.schema2_ref
    online = await mirror_from(settings(registry.url, cache_dir, offline=False))
    await pull(online, repo, tag, [seeded.schema2.config.digest])
    await online.close()
    fake = await make_fake_upstream()
    client = await mirror_from(settings(fake.url, cache_dir, offline=True))

    missing = make_image(seed="offline-miss")
    misses = [
        ("GET", f"/v2/{repo}/manifests/v2", "MANIFEST_UNKNOWN"),
        ("HEAD", f"/v2/{repo}/manifests/v2", "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{repo}/manifests/{missing.digest}", "MANIFEST_UNKNOWN"),
        ("HEAD", f"/v2/{repo}/manifests/{missing.digest}", "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{repo}/blobs/{seeded.schema2.layers[0].digest}", "BLOB_UNKNOWN"),
        ("HEAD", f"/v2/{repo}/blobs/{seeded.schema2.layers[0].digest}", "BLOB_UNKNOWN"),
        ("GET", "/v2/never/pulled/tags/list", "NAME_UNKNOWN"),
    ]
    for method, path, code in misses:
        response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 404, (method, path)
        if method == "GET":
            document = await assert_oci_error(response, 404, code)
            assert "offline" in document["errors"][0]["message"], document
    response = await client.get(
        f"/v2/{repo}/blobs/{seeded.schema2.config.digest}", headers={"Accept": ACCEPT_ALL}
    )
    assert await response.read() == seeded.schema2.config.data
    assert fake.requests == [], "an offline mirror sent requests upstream"


async def test_offline_tag_lists_come_from_the_cache_and_referrers_are_empty(
    mirror_from: MirrorFromSettings,
    make_registry: RegistryFactory,
    make_fake_upstream: FakeFactory,
    cache_dir: Path,
) -> None:
    """tags/list lists the cached tags (with n, last and Link); referrers is an empty index."""
    upstream = make_registry()
    image = make_image(seed="offline-tags")
    tags = ["a", "b", "c"]
    for tag in [*tags, "never-pulled"]:
        push_image(upstream.url, "team/app", tag, image)
    online = await mirror_from(settings(upstream.url, cache_dir, offline=False))
    for tag in tags:
        await pull(online, "team/app", tag, [])
    await online.close()
    fake = await make_fake_upstream()
    client = await mirror_from(settings(fake.url, cache_dir, offline=True))

    response = await client.get("/v2/team/app/tags/list")
    assert await response.json() == {"name": "team/app", "tags": tags}
    response = await client.get("/v2/team/app/tags/list", params={"n": "2"})
    assert (await response.json())["tags"] == ["a", "b"]
    assert "last=b" in response.headers["Link"]
    response = await client.get("/v2/team/app/tags/list", params={"last": "a"})
    assert (await response.json())["tags"] == ["b", "c"]
    assert "Link" not in response.headers
    response = await client.get(f"/v2/team/app/referrers/{image.digest}")
    assert response.status == 200
    assert (await response.json())["manifests"] == []
    assert fake.requests == []
