"""Ready-made answers for hot manifests stay correct: bounded in time, keyed by Accept and ns."""

from __future__ import annotations

import asyncio
import uuid

import structlog

from tests.conftest import MirrorFactory, Seeded
from tests.support.images import make_image, push_image
from tests.support.oci import ACCEPT_ALL, ACCEPT_NO_INDEX, assert_oci_error
from tests.support.registry import Registry


async def test_a_hot_tag_is_revalidated_soon_after_its_ttl(
    make_mirror: MirrorFactory, registry: Registry
) -> None:
    """A tag answered from memory still sees a re-push within its TTL plus one second."""
    repo = f"hot/{uuid.uuid4().hex[:12]}"
    old, new = make_image(seed=f"{repo}-old"), make_image(seed=f"{repo}-new")
    push_image(registry.url, repo, "latest", old)
    client = await make_mirror(registry, tag_ttl=1.0)
    path = f"/v2/{repo}/manifests/latest"
    for _ in range(3):
        assert await (await client.get(path, headers={"Accept": ACCEPT_ALL})).read() == old.manifest
    push_image(registry.url, repo, "latest", new)
    await asyncio.sleep(2.2)
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    assert await response.read() == new.manifest
    assert response.headers["Docker-Content-Digest"] == new.digest


async def test_hot_answers_are_kept_per_accept_header(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """An index answered to one client is not handed to a client that cannot read it."""
    repo, tag = seeded.index_ref
    path = f"/v2/{repo}/manifests/{tag}"
    client = await make_mirror(registry)
    for _ in range(2):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert await response.read() == seeded.index.manifest
    await assert_oci_error(
        await client.get(path, headers={"Accept": ACCEPT_NO_INDEX}), 404, "MANIFEST_UNKNOWN"
    )


async def test_hot_answers_have_the_same_headers_and_log_line(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """The second answer (from memory) is the first one exactly, and logged as a hit."""
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    client = await make_mirror(registry)
    with structlog.testing.capture_logs() as logs:
        first = await client.get(path, headers={"Accept": ACCEPT_ALL})
        second = await client.get(path, headers={"Accept": ACCEPT_ALL})
        head = await client.head(path, headers={"Accept": ACCEPT_ALL})
    assert await first.read() == await second.read() == seeded.oci.manifest
    for name in ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag"):
        assert first.headers[name] == second.headers[name] == head.headers[name], name
    assert await head.read() == b""
    lines = [e for e in logs if e.get("event") == "request"]
    assert [line["cache"] for line in lines] == ["miss", "hit", "hit"]
    assert {line["upstream"] for line in lines} == {"docker.io"}
