"""Where a replica's fill reads a blob: from the upstream when it holds the blob's fill lease,
else from the replica that holds it, as that one's bytes arrive (or from its cache, once it
stored the blob).

The fill itself (mirror/pullthrough/fills.py) is the same either way: the same spool, digest
check, readers and commit, and the same resumption after a cut, a `Range` request from the bytes
it has. Each time the fill (re)opens its source, the lease decides again where to read: so when
the filling replica dies (its stream breaks and it cannot be reached, or its lease expires),
this replica takes the lease over and resumes from the upstream; without Redis, from the
upstream directly, as a single mirror does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from mirror import log
from mirror.config import Settings
from mirror.errors import UpstreamError
from mirror.meta.redis import RedisAway, RedisStore
from mirror.meta.store import MetadataStore
from mirror.oci.digest import Digest
from mirror.replicas.leases import FillLeases, is_kept, lease_value, peer_of
from mirror.replicas.manifests import ReplicaManifests
from mirror.replicas.peers import PeerGone, PeerLacks, Peers
from mirror.replicas.polls import polls
from mirror.upstream.registry import UpstreamRegistry

# How long a fill waits for the lease holder to start streaming (its upstream's answer, which
# the upstream's own timeouts bound) before it asks the upstream itself.
PEER_WAIT = 60.0
# A peer's stream may stall as long as its upstream read may, and a little more: the holder
# gives up on its upstream first, and its lease then tells this replica what to do.
READ_SLACK = 10.0


class Replicas:
    """This replica among the others: the leases, the peer client, its own peer URL, and the
    record of who holds which manifest."""

    def __init__(self, store: RedisStore, peer_url: str, secret: str, user_agent: str) -> None:
        self.leases = FillLeases(store)
        self.peers = Peers(secret, user_agent)
        self.peer_url = peer_url
        self.manifests = ReplicaManifests(store, self.peers, peer_url)

    def source(self, upstream: UpstreamRegistry, digest: Digest) -> ReplicaSource:
        """The source of one fill of `digest` through `upstream`."""
        return ReplicaSource(self, upstream, digest)

    async def close(self) -> None:
        await self.peers.close()


def replicas_for(settings: Settings, meta: MetadataStore, user_agent: str) -> Replicas | None:
    """This replica among the others, when `peer_url` puts it in replica mode."""
    if settings.peer_url is None or settings.peer_secret is None:
        return None
    assert isinstance(meta, RedisStore)  # the settings refuse replica mode without Redis
    return Replicas(meta, settings.peer_url, settings.peer_secret, user_agent)


class ReplicaSource:
    """One fill's source (a `pullthrough.sources.BlobSource`): its lease is held from the first
    time it reads from the upstream until the fill is over (committed or failed)."""

    def __init__(self, replicas: Replicas, upstream: UpstreamRegistry, digest: Digest) -> None:
        self.name = upstream.name
        self._replicas = replicas
        self._leases = replicas.leases
        self._upstream = upstream
        self._digest = digest
        self._value = lease_value(replicas.peer_url, uuid.uuid4().hex)
        self._holding = False
        self._renewal: asyncio.Task[None] | None = None
        self._opened = 0  # bodies open now: the fill is over when the first one closes
        self._from_upstream = False

    @property
    def stats(self) -> ReplicaSource:
        return self

    @property
    def relayed(self) -> bool:
        return not self._from_upstream

    def received(self, count: int) -> None:
        """Bytes read, counted as the upstream's only when they came from it."""
        if self._from_upstream:
            self._upstream.stats.received(count)

    @asynccontextmanager
    async def open_blob(
        self, repo: str, digest: Digest, offset: int = 0
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        self._opened += 1
        stored = False
        try:
            peer = await self._from_peer(offset)
            self._from_upstream = peer is None
            if peer is None:
                async with self._upstream.open_blob(repo, digest, offset) as response:
                    yield response
            else:
                response, holder = peer
                try:
                    yield response
                except UpstreamError as e:
                    await self._distrust(holder, e)
                    raise
                finally:
                    response.release()
            # The fill runs inside the first body it opens: ending it without an error is
            # having stored the blob.
            stored = True
        finally:
            self._opened -= 1
            if not self._opened:
                await self._let_go(stored)

    async def _from_peer(self, offset: int) -> tuple[aiohttp.ClientResponse, str] | None:
        """The holder's stream from `offset`, with the lease that named it, or None when this
        fill is to read the upstream: it holds the lease (now taken, or taken over from a
        holder that cannot be reached), Redis is away, or the holder took too long to start."""
        if self._holding:
            return None
        read_timeout = self._upstream.settings.read_timeout + READ_SLACK
        holder = ""
        async for _ in polls(PEER_WAIT):
            try:
                holder = await self._leases.take(self._digest, self._value)
                if holder == self._value:
                    self._hold()
                    break
                try:
                    response = await self._replicas.peers.open(
                        peer_of(holder), self._digest, offset, read_timeout
                    )
                except (PeerGone, PeerLacks) as e:
                    # A holder that cannot be reached died; one that stored the blob and lacks
                    # it now removed it. One that lacks the blob it fetches has not started
                    # streaming yet (or has just failed): wait for it.
                    if (isinstance(e, PeerGone) or is_kept(holder)) and await self._take_over(
                        holder, offset, e
                    ):
                        break
                else:
                    log.get_logger().info(
                        "streaming a blob from the replica that fetches it",
                        digest=str(self._digest),
                        peer=peer_of(holder),
                        offset=offset,
                    )
                    return response, holder
            except RedisAway:
                return None
        else:
            log.get_logger().warning(
                "the replica fetching a blob did not stream it in time; fetching it here",
                digest=str(self._digest),
                peer=peer_of(holder),
            )
        return None

    async def _take_over(self, holder: str, offset: int, why: Exception) -> bool:
        if not await self._leases.take_over(self._digest, holder, self._value):
            return False
        log.get_logger().warning(
            "taking over a blob fill from a replica that cannot serve it",
            digest=str(self._digest),
            peer=peer_of(holder),
            offset=offset,
            error=str(why),
        )
        self._hold()
        return True

    async def _distrust(self, holder: str, why: UpstreamError) -> None:
        """A replica that stored the blob sent what is not it (its copy was damaged, or it
        sends a part, or breaks off): release its lease, so that this fill's next attempt, or
        the next fill, fetches the blob from the upstream rather than from that one for as long
        as the lease is kept. A replica that fetches the blob sends nothing unverified, and
        its break-offs are taken over as ever."""
        if not is_kept(holder):
            return
        log.get_logger().warning(
            "the replica that stored a blob cannot send it; fetching it here",
            digest=str(self._digest),
            peer=peer_of(holder),
            error=why.message,
        )
        with contextlib.suppress(RedisAway):
            await self._leases.release(self._digest, holder)

    def _hold(self) -> None:
        self._holding = True
        self._renewal = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        """Keep the lease while the fill runs; losing it (Redis emptied, or another replica
        took it over) only means another may fetch the blob too."""
        while True:
            await asyncio.sleep(self._leases.ttl / 3)
            with contextlib.suppress(RedisAway):
                if not await self._leases.renew(self._digest, self._value):
                    log.get_logger().warning(
                        "lost the fill lease of a blob", digest=str(self._digest)
                    )
                    return

    async def _let_go(self, stored: bool) -> None:
        """The fill is over: stop renewing; keep the lease for others to read the blob from
        here, or release it for the next fill to fetch it."""
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        if self._holding:
            self._holding = False
            with contextlib.suppress(RedisAway):
                if stored:
                    await self._leases.keep(self._digest, self._value)
                else:
                    await self._leases.release(self._digest, self._value)
