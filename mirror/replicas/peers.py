"""Requests to other replicas: a blob's bytes from the replica that fetches it, or a manifest
from one that stored it, through its peer endpoint (`GET /_mirror/peer/blobs/<digest>`,
`/_mirror/peer/manifests/<digest>`, mirror/api/peer.py), with the shared secret."""

from __future__ import annotations

import aiohttp
from yarl import URL

from mirror.errors import UpstreamError
from mirror.oci.contents import InvalidManifest, media_type_of
from mirror.oci.digest import Digest
from mirror.upstream.failures import describe
from mirror.upstream.pool import MAX_MANIFEST_SIZE, read_limited
from mirror.upstream.registry import FetchedManifest

SECRET_HEADER = "Mirror-Peer-Secret"
PATH = "/_mirror/peer/blobs/"
MANIFESTS_PATH = "/_mirror/peer/manifests/"
# A manifest comes whole in one small body: a replica that takes longer is no help.
MANIFEST_TIMEOUT = 10.0
# Replicas share a network: one that does not take a connection in this long is gone (a pod
# replaced under a new address, a host that went away), and its fill is taken over.
CONNECT_TIMEOUT = 3.0


class PeerGone(Exception):
    """The replica could not be reached, or cannot serve this one."""


class PeerLacks(Exception):
    """The replica has no such blob (its fill has not started, or has ended)."""


class Peers:
    """One client session to every other replica: no total timeout (a blob streams as long as
    its upstream takes), bounded connection set-up and reads, bodies untouched."""

    def __init__(self, secret: str, user_agent: str) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            headers={SECRET_HEADER: secret, "User-Agent": user_agent},
            read_bufsize=4 << 20,
        )

    async def open(
        self, peer: str, digest: Digest, offset: int, read_timeout: float
    ) -> aiohttp.ClientResponse:
        """The blob from `offset` on (a Range request past 0), for the caller to read and
        release; a read that stalls for `read_timeout` seconds breaks off."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = await self._session.get(
                _url(peer, PATH, digest),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=CONNECT_TIMEOUT,
                    sock_connect=CONNECT_TIMEOUT,
                    sock_read=read_timeout,
                ),
            )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise PeerGone(f"{peer} {describe(e)}") from e
        if response.status not in (200, 206):
            response.release()
            if response.status == 404:
                raise PeerLacks(f"{peer} has no blob {digest}")
            # A refusal (another secret) or a failure: it cannot serve this replica.
            raise PeerGone(f"{peer} answered {response.status}")
        return response

    async def manifest(self, peer: str, digest: Digest) -> FetchedManifest:
        """The manifest's exact bytes and media type, checked against the digest; PeerGone
        when the replica cannot give it."""
        try:
            async with self._session.get(
                _url(peer, MANIFESTS_PATH, digest),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=MANIFEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
            ) as response:
                if response.status != 200:
                    raise PeerGone(f"{peer} answered {response.status} for {digest}")
                data = await read_limited(response, MAX_MANIFEST_SIZE, f"manifest {digest}")
                media_type = response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise PeerGone(f"{peer} {describe(e)}") from e
        except (ValueError, UpstreamError) as e:
            raise PeerGone(f"{peer}: {e}") from e
        if Digest.of(data, digest.algorithm) != digest:
            raise PeerGone(f"{peer} sent a manifest that is not {digest}")
        try:
            media_type = media_type_of(data, media_type)
        except InvalidManifest as e:
            raise PeerGone(f"{peer} sent manifest {digest}, whose {e}") from None
        return FetchedManifest(digest, media_type, data)

    async def close(self) -> None:
        await self._session.close()


def _url(peer: str, path: str, digest: Digest) -> URL:
    base = URL(peer)
    return base.with_path(base.path.rstrip("/") + path + str(digest))
