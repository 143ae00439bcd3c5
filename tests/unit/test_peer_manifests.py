"""A manifest read from another replica: its exact bytes, or PeerGone saying what went wrong."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mirror.oci.digest import Digest
from mirror.replicas import peers
from mirror.replicas.peers import PeerGone, Peers

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
DIGEST = Digest.parse("sha256:" + hashlib.sha256(MANIFEST).hexdigest())

Server = Callable[..., Awaitable[TestServer]]


async def _holder(aiohttp_server: Server, body: bytes, delay: float = 0.0) -> str:
    async def manifest(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/vnd.oci.image.manifest.v1+json")

    app = web.Application()
    app.router.add_get(peers.MANIFESTS_PATH + "{digest}", manifest)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


async def test_a_holder_gives_the_manifest_or_is_gone_with_a_reason(
    aiohttp_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "MANIFEST_TIMEOUT", 0.2)
    client = Peers("s" * 16, "mirror-test")
    try:
        fetched = await client.manifest(await _holder(aiohttp_server, MANIFEST), DIGEST)
        assert (fetched.data, fetched.digest) == (MANIFEST, DIGEST)
        for holder, reason in (
            (await _holder(aiohttp_server, MANIFEST, delay=5), "did not answer in time"),
            (
                await _holder(aiohttp_server, MANIFEST + b" "),
                f"sent a manifest that is not {DIGEST}",
            ),
        ):
            with pytest.raises(PeerGone) as gone:
                await client.manifest(holder, DIGEST)
            assert str(gone.value) == f"{holder} {reason}"
    finally:
        await client.close()
