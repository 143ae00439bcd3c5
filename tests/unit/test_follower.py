"""Following another process's fill: a clean end only for bytes that were verified."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from mirror.oci.digest import Digest
from mirror.pullthrough.fills import FillFailed
from mirror.pullthrough.follower import FollowedFill
from mirror.storage.claims import Claim
from mirror.storage.spool import fill_record, mark_verified, open_spool

BLOB = b"the blob's verified bytes " * 4000
DIGEST = Digest("sha256", hashlib.sha256(BLOB).hexdigest())


def _final(spool: Path) -> Path:
    return spool.parent / "blobs" / DIGEST.hex


def _publish(claim: Claim, part: Path) -> None:
    claim.publish(fill_record(part, len(BLOB)))


async def _read_all(fill: FollowedFill) -> bytes:
    data = bytearray()
    async for file, offset, count in fill.segments():
        data += os.pread(file.fileno(), count, offset)
    return bytes(data)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    (tmp_path / "spool").mkdir()
    (tmp_path / "blobs").mkdir()
    return tmp_path / "spool"


async def test_a_follower_of_a_failed_fill_raises_even_when_another_fill_commits(
    spool: Path,
) -> None:
    """Filler A fails after the follower read a segment; filler C then commits the blob: the
    follower must fail, never end cleanly with A's bytes."""
    claim_a = Claim.try_take(spool, DIGEST.hex)
    assert claim_a is not None
    part_a = spool / f"{DIGEST.hex}.a.part"
    writer_a = open_spool(part_a)
    _publish(claim_a, part_a)
    wrong = b"X" * len(BLOB)  # every byte there, none right: A's digest check will fail
    writer_a.write(wrong)
    writer_a.flush()

    follower = await FollowedFill.find(spool, DIGEST, _final(spool))
    assert follower is not None
    segments = follower.segments()
    file, offset, count = await anext(segments)
    assert os.pread(file.fileno(), count, offset) == wrong[: len(wrong) - 1]

    # A fails: its spool goes, its claim and lock are let go.
    part_a.unlink()
    writer_a.close()
    claim_a.release()
    # C fetches again and commits the verified blob under the final name.
    claim_c = Claim.try_take(spool, DIGEST.hex)
    assert claim_c is not None
    part_c = spool / f"{DIGEST.hex}.c.part"
    with open_spool(part_c) as writer_c:
        _publish(claim_c, part_c)
        writer_c.write(BLOB)
        writer_c.flush()
        mark_verified(writer_c.fileno())
        os.replace(part_c, _final(spool))
    claim_c.release()

    with pytest.raises(FillFailed):
        await asyncio.wait_for(anext(segments), 5)


async def test_a_dead_fillers_record_is_never_followed(spool: Path) -> None:
    """A record left by a dead filler names a spool file nobody writes: the follower waits for
    the new holder's record instead of tailing the dead file."""
    dead_part = spool / f"{DIGEST.hex}.dead.part"
    dead_part.write_bytes(b"X" * 100)  # unlocked: its writer is gone
    (spool / f"{DIGEST.hex}.claim").write_bytes(fill_record(dead_part, len(BLOB)))
    claim = Claim.try_take(spool, DIGEST.hex)  # the new holder, not yet published
    assert claim is not None
    live_part = spool / f"{DIGEST.hex}.live.part"
    writer = open_spool(live_part)

    async def publish_later() -> None:
        await asyncio.sleep(0.2)
        _publish(claim, live_part)
        writer.write(BLOB)
        writer.flush()
        mark_verified(writer.fileno())

    publishing = asyncio.create_task(publish_later())
    follower = await FollowedFill.find(spool, DIGEST, _final(spool))
    await publishing
    assert follower is not None
    assert await asyncio.wait_for(_read_all(follower), 5) == BLOB
    writer.close()
    claim.release()


async def test_a_follower_ends_cleanly_once_its_fill_is_verified_and_committed(
    spool: Path,
) -> None:
    """The fill it follows verifies and commits: every byte, then a clean end."""
    claim = Claim.try_take(spool, DIGEST.hex)
    assert claim is not None
    part = spool / f"{DIGEST.hex}.p.part"
    writer = open_spool(part)
    _publish(claim, part)
    writer.write(BLOB[:1000])
    writer.flush()
    follower = await FollowedFill.find(spool, DIGEST, _final(spool))
    assert follower is not None
    reading = asyncio.create_task(_read_all(follower))
    await asyncio.sleep(0.1)
    assert not reading.done(), "the last byte is held back until the fill is verified"
    writer.write(BLOB[1000:])
    writer.flush()
    mark_verified(writer.fileno())
    os.replace(part, _final(spool))
    writer.close()
    claim.release()
    assert await asyncio.wait_for(reading, 5) == BLOB


async def test_a_follower_of_a_dead_filler_fails(spool: Path) -> None:
    """The filling process dies mid-way (its lock goes with it): the follower fails."""
    claim = Claim.try_take(spool, DIGEST.hex)
    assert claim is not None
    part = spool / f"{DIGEST.hex}.p.part"
    writer = open_spool(part)
    _publish(claim, part)
    writer.write(BLOB[:5000])
    writer.flush()
    follower = await FollowedFill.find(spool, DIGEST, _final(spool))
    assert follower is not None
    reading = asyncio.create_task(_read_all(follower))
    await asyncio.sleep(0.1)
    writer.close()  # what the kernel does for a killed process: the lock is gone
    claim.release()
    with pytest.raises(FillFailed):
        await asyncio.wait_for(reading, 5)
