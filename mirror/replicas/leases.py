"""Fill leases: which replica fetches a blob from the upstream, or has it, kept in Redis.

`<prefix>fill:<digest>` holds the filling replica's peer URL and a token of that one fill, with
an expiry (`SET … NX PX`) that the filler renews while it runs. A fill that fails releases it;
one that stored the blob keeps it, marked `kept`, for a day, so replicas asked later read the
blob from that one too. Every change is a compare and set, so a replica never renews, releases
or takes over a lease another one has taken since. A lease whose holder died simply expires; a
replica that cannot reach the holder (or finds that a `kept` holder lost the blob) may take it
over at once.
"""

from __future__ import annotations

from typing import Any

from mirror.meta.redis import RedisStore
from mirror.oci.digest import Digest

LEASE_TTL = 10.0
KEPT_TTL = 86400.0
_KEPT = " kept"

# Each script answers what the caller needs in one round trip, atomically.
_TAKE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('get', KEYS[1])
"""
_TAKE_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 or 0
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_KEEP = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('set', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3]) and 1 or 0
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lease_value(peer_url: str, token: str) -> str:
    """What a lease holds: where the filler serves the blob, and which of its fills it is."""
    return f"{peer_url} {token}"


def peer_of(value: str) -> str:
    """The peer URL a lease's value names."""
    return value.split(" ", 1)[0]


def is_kept(value: str) -> bool:
    """Whether the lease names a replica that stored the blob (rather than one fetching it)."""
    return value.endswith(_KEPT)


class FillLeases:
    """The fill leases of every blob; each call raises `RedisAway` when Redis is down, and the
    caller then fetches without one."""

    def __init__(self, store: RedisStore, ttl: float = LEASE_TTL) -> None:
        self._store = store
        self.ttl = ttl

    async def take(self, digest: Digest, value: str) -> str:
        """Take the lease for `value`; returns the holder's value (`value` when taken)."""
        held = await self._script(_TAKE, digest, value, self._ms)
        return held.decode() if isinstance(held, bytes) else str(held)

    async def take_over(self, digest: Digest, holder: str, value: str) -> bool:
        """Take the lease from `holder`, if it still holds it (it cannot be reached)."""
        return bool(await self._script(_TAKE_OVER, digest, holder, value, self._ms))

    async def renew(self, digest: Digest, value: str) -> bool:
        """Extend the lease; False when it is no longer ours."""
        return bool(await self._script(_RENEW, digest, value, self._ms))

    async def keep(self, digest: Digest, value: str) -> None:
        """The fill stored the blob: others may read it from this replica for a while."""
        await self._script(_KEEP, digest, value, _KEPT, str(int(KEPT_TTL * 1000)))

    async def release(self, digest: Digest, value: str) -> None:
        """The fill failed: the next one fetches the blob itself."""
        await self._script(_RELEASE, digest, value)

    @property
    def _ms(self) -> str:
        return str(int(self.ttl * 1000))

    async def _script(self, script: str, digest: Digest, *args: str) -> Any:
        key = self._store.key(f"fill:{digest}")
        return await self._store.command(lambda redis: redis.eval(script, 1, key, *args))
