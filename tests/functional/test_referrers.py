"""The OCI 1.1 referrers API: proxied when the upstream has it, an empty index when not."""

from __future__ import annotations

import json

from aiohttp import web

from tests.conftest import MirrorFactory, Seeded
from tests.faults import FakeFactory
from tests.support.registry import Registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SUBJECT = "sha256:" + "ab" * 32


async def test_referrers_of_an_upstream_without_the_api_are_an_empty_index(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """docker-registry 2.8 has no referrers API: clients get a valid, empty index."""
    repo, _ = seeded.oci_ref
    client = await make_mirror(registry)
    response = await client.get(f"/v2/{repo}/referrers/{seeded.oci.digest}")
    assert response.status == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    index = json.loads(await response.read())
    assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


async def test_referrers_are_proxied_with_the_filter_and_kept_for_an_outage(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """The upstream's index and OCI-Filters-Applied pass through; a later 503 is served stale."""
    fake = await make_fake_upstream()
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "cd" * 32,
                    "size": 100,
                    "artifactType": "application/vnd.example.sbom",
                }
            ],
        }
    ).encode()
    up = True

    async def referrers(request: web.Request) -> web.StreamResponse:
        if not up:
            return web.Response(status=503)
        assert request.query.get("artifactType") == "application/vnd.example.sbom"
        headers = {"Content-Type": OCI_INDEX, "OCI-Filters-Applied": "artifactType"}
        return web.Response(body=body, headers=headers)

    path = f"/v2/lib/app/referrers/{SUBJECT}"
    fake.route(path, referrers)
    client = await make_mirror(fake)
    for _ in range(2):
        response = await client.get(path, params={"artifactType": "application/vnd.example.sbom"})
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["OCI-Filters-Applied"] == "artifactType"
        up = False
    assert len(fake.seen("GET", path)) == 2


async def test_referrers_need_a_valid_digest(
    make_mirror: MirrorFactory, registry: Registry
) -> None:
    """The subject must be a digest: anything else is DIGEST_INVALID, not a proxied request."""
    client = await make_mirror(registry)
    response = await client.get("/v2/lib/app/referrers/latest")
    assert response.status == 400
    assert (await response.json())["errors"][0]["code"] == "DIGEST_INVALID"
