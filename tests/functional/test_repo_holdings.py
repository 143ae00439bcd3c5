"""With access rules, cached content is served through a mirrored repository only when that
repository holds it: a client who may pull one repository cannot read another's by digest,
nor mount it into a local namespace; pulls through the right repository cost nothing more."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from mirror.cache.links import Links, links
from mirror.oci.mediatypes import DOCKER_MANIFEST
from mirror.pullthrough import holdings
from tests.conftest import LocalMirrorFactory, RegistryFactory, Seeded
from tests.support.images import Blob, Image, push_image, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_oci_error, cached_blob, wait_until
from tests.support.push import LOCAL, Pusher
from tests.support.registry import Registry

# ci may pull one mirrored repository, and push to its team's local ones; admin may do all.
RULES = f"""
[[access]]
users = ["ci"]
allow = ["docker.io/seed/schema2", "{LOCAL}/team/*"]
actions = ["pull", "push"]

[[access]]
users = ["admin"]
allow = ["*"]
actions = ["pull", "push", "delete"]
"""
ALLOWED, ALSO_CACHED = "docker.io/seed/schema2", "docker.io/seed/oci"
CONFIG = "application/vnd.docker.container.image.v1+json"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


async def _pull(user: Pusher, repo: str, tag: str, digests: list[str]) -> None:
    response = await user.request(
        "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
    )
    assert response.status == 200, await response.text()
    for digest in digests:
        response = await user.request("GET", f"/v2/{repo}/blobs/{digest}")
        assert response.status == 200, await response.text()
        await response.read()


async def _cached_for_admin(client: TestClient[Any, Any], seeded: Seeded) -> Pusher:
    """admin pulls the repository ci may not: its manifest and layers are now cached."""
    admin = Pusher(client, "admin")
    _, tag = seeded.oci_ref
    await _pull(admin, ALSO_CACHED, tag, [b.digest for b in seeded.oci.blobs])
    return admin


async def test_another_repositorys_cached_content_is_not_served_by_digest(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """ci asks its own repository for the other one's manifest and layer by digest: the
    upstream, asked through ci's repository, has neither, so 404, cached or not, GET or HEAD."""
    client = await local_mirror(registry, rules=RULES)
    await _cached_for_admin(client, seeded)
    ci = Pusher(client)
    for method in ("GET", "HEAD"):
        blob = await ci.request(method, f"/v2/{ALLOWED}/blobs/{seeded.oci.layers[0].digest}")
        manifest = await ci.request(
            method, f"/v2/{ALLOWED}/manifests/{seeded.oci.digest}", headers={"Accept": ACCEPT_ALL}
        )
        if method == "GET":
            await assert_oci_error(blob, 404, "BLOB_UNKNOWN")
            await assert_oci_error(manifest, 404, "MANIFEST_UNKNOWN")
        assert (blob.status, manifest.status) == (404, 404)


async def test_a_pull_through_the_right_repository_asks_the_upstream_nothing_more(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """The manifest names its blobs, so they are the repository's: once the image is cached,
    ci's pull of it makes no upstream request at all, by tag or by digest."""
    client = await local_mirror(registry, rules=RULES, tag_ttl=300)
    ci = Pusher(client)
    _, tag = seeded.schema2_ref
    digests = [b.digest for b in seeded.schema2.blobs]
    await _pull(ci, ALLOWED, tag, digests)
    registry.clear_requests()
    await _pull(ci, ALLOWED, tag, digests)
    await _pull(ci, ALLOWED, str(seeded.schema2.digest), digests)
    assert registry.requests() == []


async def test_a_blob_of_another_repository_is_not_mounted(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Mounting the other repository's cached layer from ci's mirrored repository gives an
    upload session (202), not the blob; a layer ci's repository holds is mounted (201)."""
    client = await local_mirror(registry, rules=RULES)
    await _cached_for_admin(client, seeded)
    ci = Pusher(client)
    _, tag = seeded.schema2_ref
    await _pull(ci, ALLOWED, tag, [seeded.schema2.layers[0].digest])
    uploads = f"/v2/{LOCAL}/team/app/blobs/uploads/"
    foreign = await ci.request(
        "POST", uploads, params={"mount": seeded.oci.layers[0].digest, "from": ALLOWED}
    )
    assert foreign.status == 202, await foreign.text()
    read = await ci.request("GET", f"/v2/{LOCAL}/team/app/blobs/{seeded.oci.layers[0].digest}")
    await assert_oci_error(read, 404, "BLOB_UNKNOWN")
    # Mounted once committed, which may come a moment after its last byte went out.
    assert await wait_until(cached_blob(cache_dir, seeded.schema2.layers[0].digest).exists)
    own = await ci.request(
        "POST", uploads, params={"mount": seeded.schema2.layers[0].digest, "from": ALLOWED}
    )
    assert own.status == 201, await own.text()


async def test_with_the_upstream_gone_a_repositorys_tags_say_what_it_holds(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A cache whose record of holdings is gone (one written before it was kept, or an
    imported image), its upstream unreachable: a layer ci's repository's tag leads to is
    still served, and the other repository's is refused, since nothing can vouch for it."""
    client = await local_mirror(registry, rules=RULES)
    await _cached_for_admin(client, seeded)
    _, tag = seeded.schema2_ref
    await _pull(Pusher(client, "admin"), ALLOWED, tag, [seeded.schema2.layers[0].digest])
    await client.close()
    _forget_holdings(cache_dir)
    gone = cast(Registry, SimpleNamespace(url=f"http://127.0.0.1:{_closed_port()}"))
    ci = Pusher(await local_mirror(gone, rules=RULES))
    own = await ci.request("GET", f"/v2/{ALLOWED}/blobs/{seeded.schema2.layers[0].digest}")
    assert own.status == 200
    assert await own.read() == seeded.schema2.layers[0].data
    foreign = await ci.request("GET", f"/v2/{ALLOWED}/blobs/{seeded.oci.layers[0].digest}")
    await assert_oci_error(foreign, 503, "UNAVAILABLE")


async def test_digests_no_tag_leads_to_read_the_tagged_manifests_once(
    local_mirror: LocalMirrorFactory,
    registry: Registry,
    seeded: Seeded,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ci asks its repository for digests nobody has, again and again: what its tags lead to is
    read once, not at each request, while its tags stay as they are."""
    monkeypatch.setattr(holdings, "WALK_EVERY", 0.0)
    client = await local_mirror(registry, rules=RULES)
    ci = Pusher(client)
    _, tag = seeded.schema2_ref
    await _pull(ci, ALLOWED, tag, [])
    settled = time.time_ns() - 3_600_000_000_000  # tags recorded an hour ago
    os.utime(cache_dir / "tags" / ALLOWED / "_tags", ns=(settled, settled))
    reads: list[bytes] = []

    def counted(data: bytes) -> Links:
        reads.append(data)
        return links(data)

    monkeypatch.setattr(holdings, "links", counted)
    for n in range(5):
        response = await ci.request("GET", f"/v2/{ALLOWED}/blobs/sha256:{n:064x}")
        await assert_oci_error(response, 404, "BLOB_UNKNOWN")
    assert len(reads) == 1


def _forget_holdings(cache_dir: Path) -> None:
    for held in cache_dir.glob("tags/**/_held"):
        held.unlink()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _naming_foreign(repo: str, registry: Registry, digest: str, size: int) -> tuple[str, str]:
    """Publish upstream, in `repo` (which ci may pull), an image whose manifest names `digest`
    as a foreign layer: distribution takes it without that blob in `repo` (a foreign layer's
    bytes are somewhere else), so the manifest vouches for nothing. Its (tag, digest)."""
    config = Blob.of(b'{"architecture":"amd64","os":"windows","rootfs":{}}', CONFIG)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {
                    "mediaType": FOREIGN_LAYER,
                    "digest": digest,
                    "size": size,
                    "urls": ["https://layers.example/blob"],
                }
            ],
        }
    ).encode()
    # Only the config is uploaded: the layers that go up with an image are none here.
    image = Image(config, [], manifest, sha256_digest(manifest), DOCKER_MANIFEST)
    push_image(registry.url, repo, "foreign", image)
    return "foreign", image.digest


async def test_a_digest_a_manifest_only_names_is_vouched_for_by_the_upstream(
    local_mirror: LocalMirrorFactory, make_registry: RegistryFactory, seeded: Seeded
) -> None:
    """ci publishes, in a repository it may pull, a manifest naming the other repository's
    cached layer as a foreign one (the upstream takes that without the layer), and pulls it:
    ci's repository does not hold that layer, so asking for it there is still a 404, GET or
    HEAD, and a mount of it an upload session."""
    upstream = make_registry(foreign_layers=True)
    push_image(upstream.url, *seeded.oci_ref, seeded.oci)
    rules = RULES.replace(f'"{ALLOWED}"', f'"{ALLOWED}", "docker.io/ci/*"')
    client = await local_mirror(upstream, rules=rules)
    await _cached_for_admin(client, seeded)
    secret = seeded.oci.layers[0]
    tag, _ = _naming_foreign("ci/app", upstream, secret.digest, secret.size)
    ci = Pusher(client)
    named = await ci.request(
        "GET", f"/v2/docker.io/ci/app/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
    )
    assert named.status == 200, await named.text()
    for method in ("GET", "HEAD"):
        blob = await ci.request(method, f"/v2/docker.io/ci/app/blobs/{secret.digest}")
        assert blob.status == 404, (await blob.read())[:200]
    uploads = f"/v2/{LOCAL}/team/app/blobs/uploads/"
    mount = await ci.request(
        "POST", uploads, params={"mount": secret.digest, "from": "docker.io/ci/app"}
    )
    assert mount.status == 202, await mount.text()
