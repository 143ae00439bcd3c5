"""Manifests through the mirror: headers, exact bytes, HEAD, Accept negotiation, unknown content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from multidict import CIMultiDict

from tests.conftest import MirrorFactory, Seeded
from tests.support.images import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests.support.oci import ACCEPT_ALL, ACCEPT_NO_INDEX, assert_oci_error, cached_manifest
from tests.support.registry import Registry


async def test_api_root_answers_200_with_the_api_version_header(
    make_mirror: MirrorFactory, registry: Registry
) -> None:
    """`GET /v2/` is how every client detects a v2 registry."""
    client = await make_mirror(registry)
    for method in ("GET", "HEAD"):
        response = await client.request(method, "/v2/")
        assert response.status == 200
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("kind", ["schema2", "oci", "index"])
@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_manifest_get_returns_upstream_bytes_and_exact_headers(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, kind: str, by: str
) -> None:
    """Clients verify the digest of the exact bytes and trust Content-Type as the media type."""
    repo, tag = getattr(seeded, f"{kind}_ref")
    image = getattr(seeded, kind)
    reference = tag if by == "tag" else image.digest
    client = await make_mirror(registry)
    for attempt in ("miss", "hit"):
        response = await client.get(
            f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL}
        )
        body = await response.read()
        assert response.status == 200, (attempt, body[:300])
        assert body == image.manifest, attempt
        assert response.headers["Docker-Content-Digest"] == image.digest
        assert response.headers["Content-Type"] == image.media_type  # no "; charset"
        assert response.headers["Content-Length"] == str(len(image.manifest))


@pytest.mark.parametrize("kind", ["schema2", "oci", "index"])
@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_manifest_head_has_get_headers_and_no_body(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, kind: str, by: str
) -> None:
    """Docker and containerd resolve tags with HEAD and need digest, type and length from it."""
    repo, tag = getattr(seeded, f"{kind}_ref")
    image = getattr(seeded, kind)
    reference = tag if by == "tag" else image.digest
    client = await make_mirror(registry)
    path = f"/v2/{repo}/manifests/{reference}"
    # HEAD first, on a cold cache, as a daemon resolving a tag does.
    head = await client.head(path, headers={"Accept": ACCEPT_ALL})
    assert head.status == 200
    assert await head.read() == b""
    get = await client.get(path, headers={"Accept": ACCEPT_ALL})
    assert await get.read() == image.manifest
    for name in ("Docker-Content-Digest", "Content-Type", "Content-Length"):
        assert head.headers[name] == get.headers[name], name
    assert head.headers["Docker-Content-Digest"] == image.digest
    assert head.headers["Content-Length"] == str(len(image.manifest))
    again = await client.head(path, headers={"Accept": ACCEPT_ALL})
    assert again.status == 200
    assert again.headers["Docker-Content-Digest"] == image.digest
    assert again.headers["Content-Length"] == str(len(image.manifest))


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "cached"])
@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_index_is_not_served_to_a_client_that_does_not_accept_indexes(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, warm: bool, by: str
) -> None:
    """A client that cannot read an index must get MANIFEST_UNKNOWN, as distribution answers."""
    repo, tag = seeded.index_ref
    reference = tag if by == "tag" else seeded.index.digest
    client = await make_mirror(registry)
    path = f"/v2/{repo}/manifests/{reference}"
    if warm:
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert await response.read() == seeded.index.manifest
    response = await client.get(path, headers={"Accept": ACCEPT_NO_INDEX})
    await assert_oci_error(response, 404, "MANIFEST_UNKNOWN")
    head = await client.head(path, headers={"Accept": ACCEPT_NO_INDEX})
    assert head.status == 404


async def test_index_is_served_when_one_of_several_accept_lines_names_it(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Docker sends one Accept header line per media type; all lines count."""
    repo, tag = seeded.index_ref
    client = await make_mirror(registry)
    headers = CIMultiDict([("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)])
    headers.add("Accept", f"{OCI_INDEX}; q=0.5")
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers=headers)
    assert response.status == 200
    assert await response.read() == seeded.index.manifest
    assert response.headers["Content-Type"] == OCI_INDEX


@pytest.mark.parametrize("accept", [None, "*/*", f"{DOCKER_MANIFEST}, */*"])
async def test_missing_or_wildcard_accept_gets_any_manifest(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, accept: str | None
) -> None:
    """No Accept, or containerd's trailing `*/*`, means the client takes whatever the tag is."""
    client = await make_mirror(registry)
    for kind in ("index", "oci", "schema2"):
        repo, tag = getattr(seeded, f"{kind}_ref")
        image = getattr(seeded, kind)
        if accept is None:
            response = await client.get(f"/v2/{repo}/manifests/{tag}", skip_auto_headers=["Accept"])
        else:
            response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
        assert response.status == 200, (kind, await response.text())
        assert await response.read() == image.manifest
        assert response.headers["Content-Type"] == image.media_type


async def test_index_children_are_served_by_digest(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """After the index, a client fetches its platform's manifest by digest."""
    repo, _ = seeded.index_ref
    client = await make_mirror(registry)
    for image in seeded.index.images:
        response = await client.get(
            f"/v2/{repo}/manifests/{image.digest}", headers={"Accept": ACCEPT_ALL}
        )
        assert response.status == 200
        assert await response.read() == image.manifest
        assert response.headers["Docker-Content-Digest"] == image.digest


@pytest.mark.parametrize("ref_name", ["solo_ref", "schema2_ref", "deep_ref"])
async def test_names_with_one_two_or_three_components_are_pulled(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, ref_name: str
) -> None:
    """Repository names have any number of path components."""
    repo, tag = getattr(seeded, ref_name)
    client = await make_mirror(registry)
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    assert await response.read() == seeded.schema2.manifest
    layer = seeded.schema2.layers[0]
    blob = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
    assert blob.status == 200
    assert await blob.read() == layer.data


async def test_unknown_tag_is_manifest_unknown(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """A tag the upstream does not have is a 404, never a 5xx (clients then fall back)."""
    repo, _ = seeded.schema2_ref
    client = await make_mirror(registry)
    response = await client.get(f"/v2/{repo}/manifests/nope", headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 404, "MANIFEST_UNKNOWN")
    head = await client.head(f"/v2/{repo}/manifests/nope", headers={"Accept": ACCEPT_ALL})
    assert head.status == 404


async def test_unknown_manifest_digest_is_manifest_unknown(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """A well-formed digest nobody has is a 404 MANIFEST_UNKNOWN."""
    repo, _ = seeded.schema2_ref
    client = await make_mirror(registry)
    digest = "sha256:" + "0" * 64
    response = await client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 404, "MANIFEST_UNKNOWN")


async def test_unknown_repository_is_a_404(make_mirror: MirrorFactory, registry: Registry) -> None:
    """A repository the upstream does not know is 404 with the code the upstream gave."""
    client = await make_mirror(registry)
    response = await client.get("/v2/no/such/repo/manifests/v1", headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")


@pytest.mark.parametrize(
    "sidecar",
    [
        json.dumps({"mediaType": OCI_MANIFEST + "\r\nX-Injected: 1"}),
        '{"mediaType": "text/html"}',
        '{"mediaType": ["x"]}',
        "{}",
        "[]",
    ],
    ids=["line-break", "not-a-manifest-type", "not-a-string", "no-type", "not-an-object"],
)
async def test_a_cached_manifest_of_no_manifest_type_is_fetched_again(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path, sidecar: str
) -> None:
    """A sidecar an older version wrote with any type, or a damaged one, is a miss: the
    manifest comes again, by tag or by digest, and the sidecar is written anew."""
    repo, tag = seeded.oci_ref
    image = seeded.oci
    stored = cached_manifest(cache_dir, image.digest)
    kept = stored.with_name(stored.name + ".json")
    for reference in (tag, image.digest):
        client = await make_mirror(registry)
        path = f"/v2/{repo}/manifests/{reference}"
        assert (await client.get(path, headers={"Accept": ACCEPT_ALL})).status == 200
        await client.close()
        kept.write_text(sidecar)
        client = await make_mirror(registry)
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, await response.text()
        assert await response.read() == image.manifest
        assert response.headers["Content-Type"] == OCI_MANIFEST
        assert json.loads(kept.read_bytes()) == {"mediaType": OCI_MANIFEST}
        await client.close()
