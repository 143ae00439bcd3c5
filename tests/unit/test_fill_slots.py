"""A download nobody waits for any more takes a free slot still, but gives up its place in the
queue for one, at once, and leaves the counts as they were."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from mirror.errors import Busy
from mirror.pullthrough.slots import FillSlots

WAIT = 600.0  # far longer than any test: only `unwanted` may end a wait


def _unwanted(already: bool = False) -> asyncio.Future[None]:
    unwanted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if already:
        unwanted.set_result(None)
    return unwanted


@asynccontextmanager
async def _held(slots: FillSlots) -> AsyncIterator[None]:
    """A slot for "up", held by another download for the block."""
    taken, done = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.slot("up"):
            taken.set()
            await done.wait()

    task = asyncio.ensure_future(holder())
    await taken.wait()
    try:
        yield
    finally:
        done.set()
        await task


async def test_an_unwanted_download_still_takes_a_free_slot() -> None:
    slots = FillSlots(1, lambda _name: 1, WAIT)
    async with slots.slot("up", unwanted=_unwanted(already=True)):
        assert slots.in_use == 1
    assert slots.in_use == 0


async def test_a_queued_download_gives_up_its_place_once_unwanted() -> None:
    slots = FillSlots(1, lambda _name: 1, WAIT)
    unwanted = _unwanted()

    async def queued() -> None:
        async with slots.slot("up", unwanted=unwanted):
            raise AssertionError("an unwanted download got a slot")

    async with _held(slots):
        waiting = asyncio.ensure_future(queued())
        while not slots.waiting and not waiting.done():  # noqa: ASYNC110 -- a turn or two
            await asyncio.sleep(0)
        unwanted.set_result(None)
        with pytest.raises(Busy):
            await waiting
        assert (slots.in_use, slots.waiting) == (1, 0)
    # The freed slot was given to nobody that left.
    assert slots.in_use == 0
    async with slots.slot("up"):
        assert slots.in_use == 1


async def test_an_already_unwanted_download_does_not_queue() -> None:
    slots = FillSlots(1, lambda _name: 1, WAIT)
    async with _held(slots):
        with pytest.raises(Busy):
            async with slots.slot("up", unwanted=_unwanted(already=True)):
                raise AssertionError("an unwanted download got a slot")
        assert (slots.in_use, slots.waiting) == (1, 0)
    assert slots.in_use == 0
