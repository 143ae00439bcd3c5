"""The Redis backend: freshness, leases and access counts shared by every worker and replica.

Keys (all under a configurable prefix, `mirror:` by default):

- `<p>fresh:<upstream>/<repo>:<tag>`: string, TTL = the tag TTL (`SET … PX`); the digest the tag
  was last revalidated at.
- `<p>lease:<upstream>/<repo>:<tag>`: string, TTL 10 s (`SET … NX PX`); which process is
  revalidating the tag right now.
- `<p>access:<digest>`: hash, TTL 30 days from the last hit; `hits` (a count) and `last` (unix
  time of the last hit), for cached content only.
- `<p>flag:breaker:<upstream>`: string, TTL = how long the circuit stays open.
- `<p>flag:spare:<upstream>`: string, TTL = until the upstream's rate-limit window resets.
- `<p>upstream:<upstream>`: hash, no TTL; what was last seen of it (`ratelimit_remaining`,
  `ratelimit_limit`, `seen_at`).

Expiry is Redis's own (`PX`), so replicas whose clocks disagree still agree on freshness. A small
in-process front cache remembers a fresh answer for at most `front_ttl` seconds (and never past
the key's own expiry), so a hot tag costs one Redis round trip per interval, not one per request.

Losing Redis loses nothing: the store falls back to an in-process store, logs one warning,
probes Redis in the background and uses it again once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from functools import partial
from typing import Any, TypeVar, cast

from cachetools import TLRUCache

from mirror import log
from mirror.flight import SingleFlight
from mirror.meta.redis_url import REDIS_FAILURES, Client, RedisUrl
from mirror.meta.store import EmbeddedStore
from mirror.oci.digest import Digest

PROBE_INTERVAL = 1.0
R = TypeVar("R")
P = TypeVar("P")
ACCESS_TTL = 30 * 86400
LOOKUPS = 1000  # digests asked for in one pipeline


class RedisAway(Exception):
    """Redis cannot be asked now: the caller goes on without what it would have shared."""


class RedisStore:
    """The metadata store on Redis (one server, Sentinel or Cluster: `mirror.meta.redis_url`),
    falling back to an in-process store while Redis is away."""

    def __init__(self, url: str, prefix: str = "mirror:", front_ttl: float = 1.0) -> None:
        self._link = RedisUrl.parse(url).connect(timeout=1.0)
        self._redis = self._link.client
        self._prefix = prefix
        self._front_ttl = front_ttl
        # key -> (digest, seconds it may be remembered)
        self._front: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=10_000, ttu=lambda _k, value, now: now + value[1], timer=time.monotonic
        )
        # Flags seen set, remembered briefly like fresh tags (value: seconds to remember).
        self._flags: TLRUCache[str, float] = TLRUCache(
            maxsize=1000, ttu=lambda _k, ttl, now: now + ttl, timer=time.monotonic
        )
        self._fallback = EmbeddedStore()
        self._lookups: SingleFlight[str, str | None] = SingleFlight(note=False)
        self._owner = f"{os.uname().nodename}:{os.getpid()}"
        self._up = True
        self._probe: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self._up

    async def start(self) -> None:
        """Check Redis once: a dead Redis at start-up is logged, not fatal."""
        try:
            await self._redis.ping()
        except REDIS_FAILURES as e:
            self._went_down(e)

    async def fresh_digest(self, key: str) -> str | None:
        remembered = self._front.get(key)
        if remembered is not None:
            return remembered[0]
        # When the front cache lapses under load, every request in flight asks at once: one
        # round trip answers them all.
        return await self._lookups.run(
            key,
            partial(
                self._shared,
                partial(self._read_fresh, key),
                partial(self._fallback.fresh_digest, key),
            ),
        )

    async def _read_fresh(self, key: str) -> str | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._prefix + "fresh:" + key)
            pipe.pttl(self._prefix + "fresh:" + key)
            value, pttl = await pipe.execute()
        if value is None or pttl is None or pttl <= 0:
            return None
        digest = str(value.decode())
        self._front[key] = (digest, min(self._front_ttl, pttl / 1000))
        return digest

    async def mark_fresh(self, key: str, digest: str, ttl: float) -> None:
        if ttl <= 0:
            self._front.pop(key, None)
            return
        self._front[key] = (digest, min(self._front_ttl, ttl))
        await self._shared(
            partial(self._redis.set, self._prefix + "fresh:" + key, digest, px=int(ttl * 1000)),
            partial(self._fallback.mark_fresh, key, digest, ttl),
        )

    async def try_lease(self, key: str, ttl: float) -> bool:
        taken = await self._shared(
            partial(
                self._redis.set,
                self._prefix + "lease:" + key,
                self._owner,
                nx=True,
                px=int(ttl * 1000),
            ),
            partial(self._fallback.try_lease, key, ttl),
        )
        return bool(taken)

    async def release_lease(self, key: str) -> None:
        # Delete only our own lease: it may have expired and been taken by another.
        await self._shared(
            partial(self._redis.eval, _RELEASE, 1, self._prefix + "lease:" + key, self._owner),
            partial(self._fallback.release_lease, key),
        )

    async def set_flag(self, key: str, ttl: float) -> None:
        self._flags[key] = min(self._front_ttl, ttl)
        await self._shared(
            partial(self._redis.set, self._prefix + "flag:" + key, "1", px=max(1, int(ttl * 1000))),
            partial(self._fallback.set_flag, key, ttl),
        )

    async def has_flag(self, key: str) -> bool:
        if key in self._flags:
            return True
        found = await self._shared(
            partial(self._redis.exists, self._prefix + "flag:" + key),
            partial(self._fallback.has_flag, key),
        )
        return bool(found)

    async def clear_flag(self, key: str) -> None:
        self._flags.pop(key, None)
        # Cleared in both places: a flag raised while Redis was down lives in the fallback and
        # would come back the next time Redis goes away.
        await self._fallback.clear_flag(key)
        await self._shared(
            partial(self._redis.delete, self._prefix + "flag:" + key),
            partial(self._fallback.clear_flag, key),
        )

    async def note_upstream(self, name: str, facts: dict[str, str]) -> None:
        await self._shared(
            # redis-py types `mapping` invariantly; a dict[str, str] is what it takes.
            partial(self._redis.hset, self._prefix + "upstream:" + name, mapping=cast(Any, facts)),
            partial(self._fallback.note_upstream, name, facts),
        )

    async def _shared(
        self, in_redis: Callable[[], Awaitable[R]], in_process: Callable[[], Awaitable[P]]
    ) -> R | P:
        """Ask Redis while it is up; when it fails, mark it down (once, with a warning and a
        background probe) and ask the in-process store instead, which answers until the probe
        finds Redis again."""
        if self._up:
            try:
                return await in_redis()
            except REDIS_FAILURES as e:
                self._went_down(e)
        return await in_process()

    def key(self, name: str) -> str:
        """`name` under this store's prefix, for keys another part keeps in the same Redis."""
        return self._prefix + name

    async def command(self, run: Callable[[Client], Awaitable[R]]) -> R:
        """Run another part's command on Redis while it is up; raises RedisAway when it is
        down (a failure now is noticed as any other here, so the probe brings it back)."""
        if self._up:
            try:
                return await run(self._redis)
            except REDIS_FAILURES as e:
                self._went_down(e)
        raise RedisAway("redis is unavailable")

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        """A second's hits in one round trip; while Redis is away, counts are lost (they are
        only counts) and the last hits kept in this process."""
        if not self._up:
            await self._fallback.add_hits(hits)
            return
        if not hits:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for digest, (count, last) in hits.items():
                    key = self._prefix + "access:" + digest
                    pipe.hincrby(key, "hits", count)
                    pipe.hset(key, "last", f"{last:.3f}")
                    pipe.expire(key, ACCESS_TTL)
                await pipe.execute()
        except REDIS_FAILURES as e:
            self._went_down(e)

    async def last_used(self, digests: Collection[Digest]) -> dict[Digest, float]:
        """The `last` of each digest's access hash, LOOKUPS per round trip; while Redis is
        away, what this process saw meanwhile."""
        found: dict[Digest, float] = {}
        ordered = list(digests)
        for start in range(0, len(ordered), LOOKUPS):
            batch = ordered[start : start + LOOKUPS]
            found |= await self._shared(
                partial(self._last_hits, batch), partial(self._fallback.last_used, batch)
            )
        return found

    async def _last_hits(self, digests: list[Digest]) -> dict[Digest, float]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hget(self._prefix + "access:" + str(digest), "last")
            lasts = await pipe.execute()
        return {d: float(last) for d, last in zip(digests, lasts, strict=True) if last}

    def _went_down(self, error: BaseException) -> None:
        if not self._up:
            return
        self._up = False
        log.get_logger().warning(
            "redis unavailable; serving with the in-process store until it returns",
            error=f"{type(error).__name__}: {error}",
        )
        self._probe = asyncio.create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await self._redis.ping()
            except REDIS_FAILURES:
                continue
            self._up = True
            log.get_logger().info("redis is back; shared metadata store in use again")
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._link.aclose()
        await self._fallback.close()


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
