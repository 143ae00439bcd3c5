"""Work shared between requests for the same digest never hands one route's refusal or delay to
a request through another route."""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

from tests.conftest import MirrorFactory
from tests.faults import FakeFactory, Handler, content, error
from tests.support.images import sha256_digest

BLOB = hashlib.sha256(b"routes").digest() * 4096
BLOB_DIGEST = sha256_digest(BLOB)
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "x", "digest": BLOB_DIGEST, "size": len(BLOB)},
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = sha256_digest(MANIFEST)


def _slow_refusal(gate: asyncio.Event, status: int, code: str) -> Handler:
    """A route the upstream refuses, slowly: the answer waits for `gate`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return error(status, code)

    return handler


async def test_a_blob_through_a_refused_route_does_not_delay_or_fail_another_route(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """A request through a repository the upstream refuses (slowly) is in flight; the same
    digest through a good repository is served at once, and the refused one stays refused."""
    fake = await make_fake_upstream()
    gate = asyncio.Event()
    fake.route(f"/v2/evil/x/blobs/{BLOB_DIGEST}", _slow_refusal(gate, 404, "BLOB_UNKNOWN"))
    fake.route(f"/v2/lib/app/blobs/{BLOB_DIGEST}", content(BLOB))
    client = await make_mirror(fake)
    refused = asyncio.ensure_future(client.get(f"/v2/evil/x/blobs/{BLOB_DIGEST}"))
    await asyncio.sleep(0.2)
    good = await asyncio.wait_for(client.get(f"/v2/lib/app/blobs/{BLOB_DIGEST}"), 5)
    assert good.status == 200
    assert await good.read() == BLOB
    gate.set()
    # The refused route keeps its own answer (the blob is cached by now, which is no secret:
    # content is addressed by digest alone).
    assert (await refused).status in (200, 404)


async def test_a_blob_refusal_is_not_handed_to_a_request_that_joined_it(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """The refused route answers 403 while a good request for the same digest waits: the good
    one asks through its own route and gets the blob."""
    fake = await make_fake_upstream()
    gate = asyncio.Event()
    good_gate = asyncio.Event()
    fake.route(f"/v2/evil/x/blobs/{BLOB_DIGEST}", _slow_refusal(gate, 403, "DENIED"))
    serve = content(BLOB)

    async def good_route(request: web.Request) -> web.StreamResponse:
        gate.set()  # the refusal goes out while this request is in flight
        await good_gate.wait()
        return await serve(request)

    fake.route(f"/v2/lib/app/blobs/{BLOB_DIGEST}", good_route)
    client = await make_mirror(fake)
    refused = asyncio.ensure_future(client.get(f"/v2/evil/x/blobs/{BLOB_DIGEST}"))
    good = asyncio.ensure_future(client.get(f"/v2/lib/app/blobs/{BLOB_DIGEST}"))
    assert (await asyncio.wait_for(refused, 5)).status == 403
    good_gate.set()
    response = await asyncio.wait_for(good, 5)
    assert response.status == 200
    assert await response.read() == BLOB


async def test_a_manifest_by_digest_through_a_refused_route_does_not_fail_another(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """A manifest by digest asked through a refused repository (slowly) and through a good one
    at the same time: the good one is served at once."""
    fake = await make_fake_upstream()
    gate = asyncio.Event()
    media_type = "application/vnd.oci.image.manifest.v1+json"
    fake.route(
        f"/v2/evil/x/manifests/{MANIFEST_DIGEST}", _slow_refusal(gate, 404, "MANIFEST_UNKNOWN")
    )
    fake.route(f"/v2/lib/app/manifests/{MANIFEST_DIGEST}", content(MANIFEST, media_type))
    client = await make_mirror(fake)
    headers = {"Accept": media_type}
    refused = asyncio.ensure_future(
        client.get(f"/v2/evil/x/manifests/{MANIFEST_DIGEST}", headers=headers)
    )
    await asyncio.sleep(0.2)
    good = await asyncio.wait_for(
        client.get(f"/v2/lib/app/manifests/{MANIFEST_DIGEST}", headers=headers), 5
    )
    assert good.status == 200
    assert await good.read() == MANIFEST
    gate.set()
    assert (await refused).status in (200, 404)
