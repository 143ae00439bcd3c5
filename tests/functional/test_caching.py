"""What the mirror asks upstream, counted at the upstream: the point of a cache is not asking."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.conftest import MirrorFactory, RegistryFactory, Seeded
from tests.faults import FakeFactory, content, status
from tests.support.images import make_image, push_image
from tests.support.oci import ACCEPT_ALL, cached_blob, cached_manifest, spool_files, wait_until
from tests.support.registry import Registry


def request_lines(
    logs: list[MutableMapping[str, Any]], path: str
) -> list[MutableMapping[str, Any]]:
    """The mirror's one-per-request log lines for `path`."""
    return [e for e in logs if e.get("event") == "request" and e.get("path") == path]


async def test_second_pull_of_manifest_by_digest_sends_nothing_upstream(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Content by digest is immutable: once cached, upstream is never asked again."""
    repo, _ = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{seeded.oci.digest}"
    client = await make_mirror(registry)
    assert await (await client.get(path, headers={"Accept": ACCEPT_ALL})).read()
    assert cached_manifest(cache_dir, seeded.oci.digest).exists()
    registry.clear_requests()
    for method in ("GET", "HEAD"):
        response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200
    assert registry.requests() == []


async def test_second_pull_of_blob_sends_nothing_upstream_and_logs_hit(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """A cached blob is served from disk; the request line says hit (miss the first time)."""
    repo, _ = seeded.oci_ref
    layer = seeded.oci.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    client = await make_mirror(registry)
    with structlog.testing.capture_logs() as logs:
        assert await (await client.get(path)).read() == layer.data
        # The registry logs a GET once its handler returns, a moment after the last byte.
        assert await wait_until(lambda: ("GET", path) in registry.requests())
        registry.clear_requests()
        for method in ("GET", "HEAD"):
            response = await client.request(method, path)
            assert response.status == 200
            await response.read()
    assert registry.requests() == []
    lines = request_lines(logs, path)
    assert [line["cache"] for line in lines] == ["miss", "hit", "hit"], lines
    assert lines[0]["status"] == 200
    assert lines[0]["method"] == "GET"
    assert lines[0]["bytes"] == layer.size
    assert {"duration_ms", "upstream_status"} <= set(lines[0])


async def test_fresh_tag_sends_nothing_upstream(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Within tag_ttl a tag is answered from the cache with zero upstream requests."""
    repo, tag = seeded.schema2_ref
    path = f"/v2/{repo}/manifests/{tag}"
    client = await make_mirror(registry, tag_ttl=300)
    assert await (await client.get(path, headers={"Accept": ACCEPT_ALL})).read()
    registry.clear_requests()
    for method in ("GET", "HEAD", "GET"):
        response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200
        assert response.headers["Docker-Content-Digest"] == seeded.schema2.digest
    assert registry.requests() == []


async def test_stale_tag_is_revalidated_with_exactly_one_upstream_head(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Past tag_ttl the mirror asks with HEAD (free on Docker Hub), and GETs nothing unchanged."""
    repo, tag = seeded.schema2_ref
    path = f"/v2/{repo}/manifests/{tag}"
    client = await make_mirror(registry, tag_ttl=0)
    assert await (await client.get(path, headers={"Accept": ACCEPT_ALL})).read()
    registry.clear_requests()
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    assert await response.read() == seeded.schema2.manifest
    assert registry.requests() == [("HEAD", path)]


async def test_changed_tag_is_picked_up_once_stale(
    make_mirror: MirrorFactory, registry: Registry, tmp_path: Path
) -> None:
    """A re-pushed tag resolves to the new image after revalidation, and not before."""
    repo = f"mutable/{uuid.uuid4().hex[:12]}"
    old = make_image(seed=f"{repo}-old")
    new = make_image(seed=f"{repo}-new")
    push_image(registry.url, repo, "latest", old)
    path = f"/v2/{repo}/manifests/latest"
    fresh = await make_mirror(registry, tag_ttl=300)
    stale = await make_mirror(registry, tag_ttl=0, cache_dir=tmp_path / "stale-cache")
    for client in (fresh, stale):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert await response.read() == old.manifest
    push_image(registry.url, repo, "latest", new)
    response = await fresh.get(path, headers={"Accept": ACCEPT_ALL})
    assert await response.read() == old.manifest, "a fresh tag must not be revalidated"
    response = await stale.get(path, headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    assert await response.read() == new.manifest
    assert response.headers["Docker-Content-Digest"] == new.digest
    head = await stale.head(path, headers={"Accept": ACCEPT_ALL})
    assert head.headers["Docker-Content-Digest"] == new.digest


async def test_stale_tag_is_served_when_the_upstream_is_down(
    make_mirror: MirrorFactory, make_registry: RegistryFactory
) -> None:
    """Stale-if-error: an unreachable upstream must not take cached images away."""
    upstream = make_registry()
    image = make_image(seed="stale-if-error")
    push_image(upstream.url, "app/down", "v1", image)
    path = "/v2/app/down/manifests/v1"
    client = await make_mirror(upstream, tag_ttl=0)
    assert await (await client.get(path, headers={"Accept": ACCEPT_ALL})).read() == image.manifest
    upstream.stop()
    with structlog.testing.capture_logs() as logs:
        for method in ("GET", "HEAD"):
            response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
            assert response.status == 200, await response.text()
            assert response.headers["Docker-Content-Digest"] == image.digest
            if method == "GET":
                assert await response.read() == image.manifest
    assert [line["cache"] for line in request_lines(logs, path)] == ["stale", "stale"]


@pytest.mark.parametrize(
    ("code", "oci_code"),
    [(429, "TOOMANYREQUESTS"), (500, "UNKNOWN"), (502, "UNAVAILABLE"), (503, "UNAVAILABLE")],
)
async def test_stale_tag_is_served_when_the_upstream_throttles_or_fails(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, code: int, oci_code: str
) -> None:
    """Stale-if-error covers 429 and 5xx too, and the request line says stale."""
    image = make_image(seed=f"throttled-{code}")
    fake = await make_fake_upstream()
    tag_path = "/v2/app/flaky/manifests/v1"
    fake.route(tag_path, content(image.manifest, image.media_type))
    fake.route(f"/v2/app/flaky/manifests/{image.digest}", content(image.manifest, image.media_type))
    client = await make_mirror(fake, tag_ttl=0)
    response = await client.get(tag_path, headers={"Accept": ACCEPT_ALL})
    assert await response.read() == image.manifest
    fake.route(tag_path, status(code, oci_code, {"Retry-After": "60"}))
    seen_before = len(fake.seen(path=tag_path))
    with structlog.testing.capture_logs() as logs:
        response = await client.get(tag_path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200
        assert await response.read() == image.manifest
        assert response.headers["Docker-Content-Digest"] == image.digest
    assert len(fake.seen(path=tag_path)) > seen_before, "the stale tag was not revalidated"
    lines = request_lines(logs, tag_path)
    assert [line["cache"] for line in lines] == ["stale"]
    assert lines[0]["upstream_status"] == code


async def test_everything_cached_is_served_offline_after_a_restart(
    make_mirror: MirrorFactory, make_registry: RegistryFactory, seeded: Seeded, cache_dir: Path
) -> None:
    """Disk is the source of truth: a new process resolves tags and digests with upstream gone."""
    upstream = make_registry()
    image = make_image(layer_sizes=(5000, 70_000), seed="offline")
    push_image(upstream.url, "site/app", "stable", image)
    tag_path = "/v2/site/app/manifests/stable"
    digest_path = f"/v2/site/app/manifests/{image.digest}"
    blob_paths = {f"/v2/site/app/blobs/{b.digest}": b for b in image.blobs}

    async def pull(client: Any) -> None:
        for path in (tag_path, digest_path):
            response = await client.get(path, headers={"Accept": ACCEPT_ALL})
            assert response.status == 200, (path, await response.text())
            assert await response.read() == image.manifest
            assert response.headers["Docker-Content-Digest"] == image.digest
            assert response.headers["Content-Type"] == image.media_type
            head = await client.head(path, headers={"Accept": ACCEPT_ALL})
            assert head.status == 200
            assert head.headers["Docker-Content-Digest"] == image.digest
        for path, blob in blob_paths.items():
            response = await client.get(path)
            assert response.status == 200, path
            assert await response.read() == blob.data

    first = await make_mirror(upstream, cache_dir=cache_dir)
    await pull(first)
    await first.close()
    upstream.stop()
    for ttl in (300.0, 0.0):
        restarted = await make_mirror(upstream, cache_dir=cache_dir, tag_ttl=ttl)
        await pull(restarted)
        await restarted.close()
    for blob in image.blobs:
        assert cached_blob(cache_dir, blob.digest).read_bytes() == blob.data


async def test_startup_clears_spool_debris(
    make_mirror: MirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """Only spool/ can hold partial downloads after a crash, so start-up empties it."""
    spool = cache_dir / "spool"
    spool.mkdir(parents=True)
    (spool / f"sha256:{'b' * 64}.part").write_bytes(b"half a blob")
    (spool / "leftover.tmp").write_bytes(b"x" * 100)
    (spool / "nested").mkdir()
    (spool / "nested" / "deeper.part").write_bytes(b"y")
    client = await make_mirror(registry, cache_dir=cache_dir)
    assert (await client.get("/v2/")).status == 200
    assert spool_files(cache_dir) == []
