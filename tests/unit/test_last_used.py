"""The last use of content, as a bucket's eviction reads it from the metadata store: kept by the
embedded store for its own process, and by the Redis store's fallback while Redis is away."""

from __future__ import annotations

from mirror.meta.redis import RedisStore
from mirror.meta.store import EmbeddedStore
from mirror.oci.digest import Digest
from tests.support.processes import free_port

HIT, OTHER, NEVER = (Digest.parse(f"sha256:{n * 64}") for n in "abc")


async def test_the_embedded_store_remembers_each_digests_last_hit() -> None:
    """The latest hit of each digest is what `last_used` answers; a digest never hit is left
    out."""
    store = EmbeddedStore()
    await store.add_hits({str(HIT): (3, 100.0), str(OTHER): (1, 50.0)})
    await store.add_hits({str(HIT): (1, 200.0)})
    assert await store.last_used([HIT, OTHER, NEVER]) == {HIT: 200.0, OTHER: 50.0}
    await store.close()


async def test_a_redis_store_whose_redis_is_away_answers_what_it_saw() -> None:
    """With Redis unreachable, hits recorded meanwhile are still there for `last_used`."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    await store.start()
    try:
        assert not store.available
        await store.add_hits({str(HIT): (1, 300.0)})
        assert await store.last_used([HIT, NEVER]) == {HIT: 300.0}
    finally:
        await store.close()
