"""The directory store: tag freshness and revalidation leases shared by every store (every
process) on one directory, timed by injected clocks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mirror.meta.directory import DirectoryStore

KEY = "docker.io/library/alpine:3.20"
OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[..., DirectoryStore]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_store(tmp_path: Path, clock: Clock) -> AsyncIterator[StoreFactory]:
    """Stores on one directory, as the processes on one cache directory each have one."""
    stores: list[DirectoryStore] = []

    def make(front_ttl: float = 1.0, timer: Callable[[], float] = clock) -> DirectoryStore:
        store = DirectoryStore(tmp_path / "fresh", front_ttl=front_ttl, clock=clock, timer=timer)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


async def test_a_tag_marked_fresh_by_one_store_is_fresh_for_another_until_its_ttl(
    make_store: StoreFactory, clock: Clock
) -> None:
    """One process's revalidation is every process's, for the TTL and not a second longer."""
    first, second = make_store(), make_store()
    await first.start()
    assert await second.fresh_digest(KEY) is None
    await first.mark_fresh(KEY, OLD, 60)
    assert await second.fresh_digest(KEY) == OLD
    clock.now += 59.5
    assert await first.fresh_digest(KEY) == OLD
    clock.now += 0.5
    assert await first.fresh_digest(KEY) is None
    assert await second.fresh_digest(KEY) is None


async def test_another_process_sees_a_new_digest_within_the_front_interval(
    make_store: StoreFactory, clock: Clock
) -> None:
    """A process remembers what it read for at most `front_ttl`, then reads the record again."""
    timer = Clock(0.0)
    first, second = make_store(), make_store(front_ttl=1.0, timer=timer)
    await first.start()
    await first.mark_fresh(KEY, OLD, 60)
    assert await second.fresh_digest(KEY) == OLD
    await first.mark_fresh(KEY, NEW, 60)
    assert await second.fresh_digest(KEY) == OLD  # remembered
    timer.now += 1.0
    assert await second.fresh_digest(KEY) == NEW


async def test_a_ttl_of_zero_leaves_the_tag_stale_everywhere(make_store: StoreFactory) -> None:
    """A tag configured never to be fresh is not kept fresh by an earlier record."""
    first, second = make_store(), make_store(front_ttl=0.0)
    await first.start()
    await first.mark_fresh(KEY, OLD, 60)
    await first.mark_fresh(KEY, OLD, 0)
    assert await first.fresh_digest(KEY) is None
    assert await second.fresh_digest(KEY) is None


async def test_a_clock_set_back_makes_records_stale(make_store: StoreFactory, clock: Clock) -> None:
    """A record dated far in the future (the clock was set back since) is not trusted for
    longer than its TTL: the tag is revalidated."""
    first, second = make_store(), make_store(front_ttl=0.0)
    await first.start()
    await first.mark_fresh(KEY, OLD, 60)
    clock.now -= 3600
    assert await second.fresh_digest(KEY) is None


async def test_a_damaged_record_reads_as_stale(make_store: StoreFactory, tmp_path: Path) -> None:
    """Whatever is in the directory, a lookup answers fresh or stale, never an error."""
    store = make_store(front_ttl=0.0)
    await store.start()
    await store.mark_fresh(KEY, OLD, 60)
    (record,) = [p for p in (tmp_path / "fresh").iterdir() if "." not in p.name]
    for damage in (b"", b"{not json", b'{"key": "other", "digest": "x", "at": 0, "ttl": 1}', b"[]"):
        record.write_bytes(damage)
        assert await store.fresh_digest(KEY) is None


async def test_a_lease_is_held_by_one_store_at_a_time(make_store: StoreFactory) -> None:
    """Only one process revalidates a stale tag; the lease is free again once released, and
    a key's lease does not hold up another key's."""
    first, second = make_store(), make_store()
    await first.start()
    assert await first.try_lease(KEY, 10)
    assert not await second.try_lease(KEY, 10)
    assert not await first.try_lease(KEY, 10)
    assert await second.try_lease(KEY + "-other", 10)
    await first.release_lease(KEY)
    assert await second.try_lease(KEY, 10)


async def test_a_lease_ends_with_its_holder(make_store: StoreFactory) -> None:
    """A process that goes away (here: closes its store) leaves no lease behind."""
    first, second = make_store(), make_store()
    await first.start()
    assert await first.try_lease(KEY, 10)
    await first.close()
    assert await second.try_lease(KEY, 10)
