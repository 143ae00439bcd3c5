"""What one download may write: the room the cache's limits and its disk leave for one blob,
looked at again as the download grows, and refused with an OCI error that names the bound."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mirror.cache.usage import Limits, Room
from mirror.config import SizeLimit
from mirror.errors import StorageFull
from mirror.oci.digest import Digest
from mirror.pullthrough.bounds import LOOK_EVERY, FillBound
from mirror.storage.disk import DISK_RESERVE, Disk
from mirror.upstream.failures import describe

GiB = 1 << 30
MiB = 1 << 20
DIGEST = Digest.parse("sha256:" + "5e" * 32)


def _limits(max_size: int | None = None, min_free: int | None = None) -> Limits:
    return Limits(
        Path("/nowhere"),
        SizeLimit(bytes=max_size) if max_size is not None else None,
        SizeLimit(bytes=min_free) if min_free is not None else None,
    )


def test_without_limits_a_blob_may_take_the_free_space_but_the_reserve() -> None:
    """Nothing is evicted to make room, so only what is free counts."""
    room = _limits().room(Disk(total=100 * GiB, free=10 * GiB), usage=None)
    assert room == Room(None, 10 * GiB - DISK_RESERVE, False, 100 * GiB - DISK_RESERVE)


def test_a_small_disk_keeps_a_sixteenth_of_itself() -> None:
    """The reserve of a push (64 MiB, or a sixteenth of a smaller disk) is the download's."""
    room = _limits().room(Disk(total=16 * MiB, free=8 * MiB), usage=None)
    assert (room.cap, room.disk) == (None, 7 * MiB)


def test_with_limits_what_eviction_could_free_counts_and_min_free_stays_free() -> None:
    """A cache at its min_free can still take a blob it would evict others for."""
    room = _limits(max_size=50 * GiB, min_free=10 * GiB).room(
        Disk(total=100 * GiB, free=11 * GiB), usage=40 * GiB
    )
    assert (room.cap, room.disk, room.evicting) == (50 * GiB, 41 * GiB, True)


def test_an_uncounted_cache_may_be_all_the_disk_holds() -> None:
    """Before the first count, nothing is refused for want of an eviction it might allow."""
    room = _limits(min_free=1 * GiB).room(Disk(total=100 * GiB, free=5 * GiB), usage=None)
    assert room.disk == 99 * GiB


class _Space:
    """A disk whose room is set by the test; counts how often it is asked."""

    def __init__(self, room: Room) -> None:
        self.now = room
        self.asked = 0
        self.told_out_of_space = 0

    def room(self) -> Room:
        self.asked += 1
        return self.now

    def out_of_space(self) -> None:
        self.told_out_of_space += 1


def test_an_announced_size_past_the_cap_passes_through_while_the_disk_has_room() -> None:
    """A 1 GiB layer against a 100 MiB cap is streamed (and not kept): only the disk bounds a
    size the upstream announced."""
    bound = FillBound(_Space(Room(cap=100 * MiB, disk=10 * GiB)), DIGEST)
    bound.admit(GiB)
    bound.check(GiB)


def test_a_body_of_no_announced_size_is_cut_off_past_the_cap_naming_it() -> None:
    """With no size announced, a body past the cap could never be kept: 507 (its client's
    body breaks off), and the message says which setting."""
    bound = FillBound(_Space(Room(cap=100 * MiB, disk=10 * GiB)), DIGEST)
    bound.admit(None)
    bound.check(100 * MiB)
    with pytest.raises(StorageFull, match="--max-size") as refused:
        bound.check(100 * MiB + 1)
    assert refused.value.status == 507


def test_an_announced_size_past_the_disk_is_refused_naming_the_disk() -> None:
    """Past the disk's room the message names the disk; an unknown size waits for the body."""
    bound = FillBound(_Space(Room(cap=None, disk=10 * MiB)), DIGEST)
    with pytest.raises(StorageFull, match="disk"):
        bound.admit(11 * MiB)
    bound.admit(None)  # no size: the body is bounded as it comes


def test_the_disk_is_looked_at_every_so_many_bytes_not_each_chunk() -> None:
    """A body of many small chunks costs a statvfs per LOOK_EVERY bytes."""
    space = _Space(Room(cap=None, disk=100 * GiB))
    bound = FillBound(space, DIGEST)
    bound.admit(None)
    for received in range(64 << 10, 3 * LOOK_EVERY, 64 << 10):
        bound.check(received)
    assert space.asked == 3


def test_a_body_is_cut_off_once_the_disk_has_no_more_room() -> None:
    """Other downloads took the room meanwhile: the next look cuts this one off."""
    space = _Space(Room(cap=None, disk=100 * GiB))
    bound = FillBound(space, DIGEST)
    bound.admit(None)
    bound.check(LOOK_EVERY - 1)
    space.now = Room(cap=None, disk=-1)  # free space fell under the reserve
    with pytest.raises(StorageFull, match="disk"):
        bound.check(LOOK_EVERY)


def test_without_limits_a_blob_the_disk_could_take_were_the_cache_emptied_starts_eviction() -> None:
    """As a write that failed for want of space would: then a retry may fit. A blob bigger
    than the disk itself frees nothing."""
    space = _Space(Room(None, 10 * MiB, evicting=False, whole_disk=100 * MiB))
    for size, told in ((50 * MiB, 1), (10_000_000_000_000, 1)):
        with pytest.raises(StorageFull):
            FillBound(space, DIGEST).admit(size)
        assert space.told_out_of_space == told


def test_with_limits_or_past_the_cap_nothing_more_is_evicted() -> None:
    """The room counted what eviction could free already; and a cap is no want of space."""
    space = _Space(Room(None, 10 * MiB, evicting=True, whole_disk=100 * MiB))
    with pytest.raises(StorageFull):
        FillBound(space, DIGEST).admit(50 * MiB)
    space = _Space(Room(5 * MiB, 10 * MiB, evicting=False, whole_disk=100 * MiB))
    bound = FillBound(space, DIGEST)
    bound.admit(None)
    with pytest.raises(StorageFull, match="--max-size"):
        bound.check(6 * MiB)
    assert space.told_out_of_space == 0


def test_without_a_space_nothing_is_bounded() -> None:
    """A fill given no space (none in a test app) is held only to its announced size."""
    bound = FillBound(None, DIGEST)
    bound.admit(10_000_000_000_000)
    bound.check(10_000_000_000_000)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (TimeoutError(), "did not answer in time"),
        (aiohttp.ServerDisconnectedError(), "closed the connection"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "body"),
        (aiohttp.ClientConnectionResetError("Connection reset by peer"), "broke the connection"),
        (aiohttp.ClientError(), "failed to answer"),
    ],
)
def test_failures_are_said_in_words(error: BaseException, words: str) -> None:
    """What a client is told names no class of the HTTP library."""
    said = describe(error)
    assert words in said
    assert type(error).__name__ not in said
