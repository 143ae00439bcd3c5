"""The peer endpoint: `GET /_mirror/peer/blobs/<digest>`, how replicas read a blob from the one
that fetches it, and `GET /_mirror/peer/manifests/<digest>`, a manifest from one that stored it
(mirror/replicas). Routed only in replica mode (`peer_url`), off `/v2/` so no
registry client mistakes it for content, and answered only to a request that carries the
replicas' shared secret.

It serves what this host has, never asking an upstream: the committed file, or a
fill in progress as its bytes arrive (with the same rule as for clients: the last byte only once
the digest is verified, so a failed fill ends in a cut connection). A `Range` from the bytes a
replica already has lets it resume.
"""

from __future__ import annotations

import contextlib
import hmac

from aiohttp import web

from mirror.api.keys import BLOBS, MANIFESTS, SETTINGS
from mirror.api.ranges import requested_range
from mirror.api.responses import blob_headers, leased_body, send_blob
from mirror.errors import BlobUnknown, ManifestUnknown, Unauthorized
from mirror.oci.digest import Digest
from mirror.pullthrough.blobs import CachedBlob
from mirror.pullthrough.fills import FillFailed, FillView
from mirror.replicas.peers import MANIFESTS_PATH, PATH, SECRET_HEADER


class PeerUnauthorized(Unauthorized):
    """The request does not carry the replicas' secret."""

    def __init__(self) -> None:
        super().__init__("this endpoint is for the mirror's replicas only")
        # RFC 9110 §15.5.2: a 401 names how to authenticate: here, with the secret's header,
        # not with the Basic login clients use.
        self.headers = {"WWW-Authenticate": f'{SECRET_HEADER} realm="mirror replicas"'}


def add_peer_routes(app: web.Application) -> None:
    """Route the peer endpoint, in replica mode only."""
    if app[SETTINGS].peer_url is not None:
        # GET alone: a replica has no use for HEAD, and `send_blob` always sends the body.
        app.router.add_get(PATH + "{digest}", peer_blob, allow_head=False)
        app.router.add_get(MANIFESTS_PATH + "{digest}", peer_manifest, allow_head=False)


def _asked_by_a_replica(request: web.Request) -> Digest:
    """The digest asked for, once the request proved it comes from a replica."""
    secret = (request.app[SETTINGS].peer_secret or "").encode()
    given = request.headers.get(SECRET_HEADER, "").encode(errors="surrogateescape")
    # In constant time, so the answer's timing tells nothing of how much of a guess was right.
    if not secret or not hmac.compare_digest(given, secret):
        raise PeerUnauthorized()
    return Digest.parse(request.match_info["digest"])


async def peer_manifest(request: web.Request) -> web.Response:
    digest = _asked_by_a_replica(request)
    found = await request.app[MANIFESTS].local(digest)
    if found is None:
        raise ManifestUnknown(f"this replica has no manifest {digest}")
    headers = {"Content-Type": found.media_type, "Docker-Content-Digest": str(digest)}
    return web.Response(body=found.data, headers=headers)


async def peer_blob(request: web.Request) -> web.StreamResponse:
    digest = _asked_by_a_replica(request)
    found = await request.app[BLOBS].local(digest)
    if found is None:
        raise BlobUnknown(f"this replica has no blob {digest}, nor fetches it")
    headers = blob_headers(digest, None)
    if isinstance(found, CachedBlob):
        with leased_body(found) as body:
            return await send_blob(request, headers, body)
    wanted = requested_range(
        request.method,
        request.headers.get("Range"),
        request.headers.get("If-Range"),
        headers["ETag"],
        found.size,
    )
    if not await _has_bytes(found, 0 if wanted is None else wanted.start):
        raise BlobUnknown(f"the fetch of {digest} by this replica failed")
    return await send_blob(request, headers, found)


async def _has_bytes(fill: FillView, start: int) -> bool:
    """Wait until the fill has a byte from `start` on to send, or has every byte; False if it
    failed. A replica is answered only then, so the stream it reads brings it bytes before a
    death of this one can cut it, and its own fill can resume from them."""
    try:
        async with contextlib.aclosing(fill.segments(start)) as segments:
            async for _ in segments:
                break
    except FillFailed:
        return False
    return True
