"""Manifests fetched from the upstream once for all replicas.

Docker Hub counts every manifest GET against its pull limit, so replicas that each fetched their
own would spend it once per replica. A replica that stores a manifest says so in Redis
(`<prefix>manifest:<digest>`: its peer URL, for a day); another one that lacks it reads it from
that one (`GET /_mirror/peer/manifests/<digest>`) and checks it against its digest before it
keeps it. A miss that no replica holds takes a lease (`<prefix>lease:manifest:<digest>`) and goes
to the upstream; the replicas asked for it meanwhile wait for the record. A first pull of a tag
goes the same way under the tag's lease (`pullthrough.manifests`): the others wait for the tag
to turn fresh in Redis, then read its manifest by digest.

This only ever saves upstream requests: with Redis away, a holder that is gone or sends wrong
bytes, or a wait past the lease, a replica asks the upstream itself, as a single mirror does.
"""

from __future__ import annotations

import contextlib

from mirror import log
from mirror.meta.redis import RedisAway, RedisStore
from mirror.oci.digest import Digest
from mirror.replicas.peers import PeerGone, Peers
from mirror.replicas.polls import polls
from mirror.upstream.registry import FetchedManifest

HOLDER_TTL = 86400
# How long the first replica may take to fetch a manifest or resolve a tag before the others
# it holds up ask the upstream themselves.
LEASE = 10.0


class ReplicaManifests:
    """Which replica holds each manifest, and reading one from it."""

    def __init__(self, store: RedisStore, peers: Peers, peer_url: str) -> None:
        self._store = store
        self._peers = peers
        self._peer_url = peer_url

    def _key(self, digest: Digest) -> str:
        return self._store.key(f"manifest:{digest}")

    async def held(self, digest: Digest) -> None:
        """This replica stored the manifest: the others may read it from here."""
        key = self._key(digest)
        with contextlib.suppress(RedisAway):
            await self._store.command(lambda redis: redis.set(key, self._peer_url, ex=HOLDER_TTL))

    async def fetch(self, digest: Digest) -> FetchedManifest | None:
        """The manifest from the replica that holds it, once one does; None when this replica
        is to fetch it from the upstream (it took the lease, or no other could give it)."""
        key = self._key(digest)
        try:
            async for _ in polls(LEASE):
                found = await self._store.command(lambda redis: redis.get(key))
                holder = found.decode() if isinstance(found, bytes) else found
                if holder == self._peer_url:
                    return None  # recorded here, and gone since
                if holder is not None:
                    return await self._peers.manifest(holder, digest)
                if await self._store.try_lease(f"manifest:{digest}", LEASE):
                    return None
        except RedisAway:
            return None
        except PeerGone as e:
            log.get_logger().warning(
                "cannot read a manifest from the replica that holds it",
                digest=str(digest),
                error=str(e),
            )
            return None
        return None

    async def not_fetched(self, digest: Digest) -> None:
        """This replica's upstream fetch failed (through a repository without the manifest,
        say): let the lease go, so that a replica asked for the same digest through another
        repository asks at once rather than after the lease runs out."""
        with contextlib.suppress(RedisAway):
            await self._store.release_lease(f"manifest:{digest}")

    async def resolved(self, tag_key: str) -> str | None:
        """The digest a tag turned fresh at, while another replica holding its lease resolves
        it; None when it took longer than the lease (this replica then resolves it itself)."""
        async for _ in polls(LEASE):
            if (fresh := await self._store.fresh_digest(tag_key)) is not None:
                return fresh
        return None
