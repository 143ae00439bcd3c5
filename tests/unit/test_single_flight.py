"""Work shared by its callers runs on when they leave; work started with `unwanted` is told
once its last caller has left, and a caller that comes after that gets work of its own, never
what the told work ends in."""

from __future__ import annotations

import asyncio

from mirror.flight import SingleFlight


class Work:
    """Work that ends with its result when released; told it is unwanted, it ends with nothing
    instead, once `let_go` is set (at once unless it `lingers`)."""

    def __init__(self, lingers: bool = False) -> None:
        self.began = asyncio.Event()
        self.release = asyncio.Event()
        self.told = asyncio.Event()
        self.let_go = asyncio.Event()
        if not lingers:
            self.let_go.set()

    def unwanted(self) -> None:
        assert not self.told.is_set(), "told twice"
        self.told.set()

    async def __call__(self) -> str:
        self.began.set()
        ends = [asyncio.ensure_future(e.wait()) for e in (self.release, self.told)]
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        for end in ends:
            end.cancel()
        if self.release.is_set():
            return "result"
        await self.let_go.wait()
        raise LookupError("nobody wanted it")


async def _caller(flight: SingleFlight[str, str], work: Work) -> asyncio.Task[str]:
    """A caller of `work` under the key "k", once it awaits it."""
    task = asyncio.ensure_future(flight.run("k", work, work.unwanted))
    await work.began.wait()
    return task


async def _cancelled(task: asyncio.Task[str]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the caller was not cancelled")


async def test_work_whose_every_caller_left_is_told_so() -> None:
    """Both callers cancelled before the work had its result: the work is told, once."""
    flight: SingleFlight[str, str] = SingleFlight(note=False)
    work = Work()
    first = await _caller(flight, work)
    second = asyncio.ensure_future(flight.run("k", work, work.unwanted))
    await asyncio.sleep(0)
    await _cancelled(first)
    assert not work.told.is_set(), "one caller still waits"
    await _cancelled(second)
    assert work.told.is_set()


async def test_work_a_caller_still_awaits_is_not_told() -> None:
    """One caller left; the other still gets the result."""
    flight: SingleFlight[str, str] = SingleFlight(note=False)
    work = Work()
    leaving = await _caller(flight, work)
    staying = asyncio.ensure_future(flight.run("k", work, work.unwanted))
    await asyncio.sleep(0)
    await _cancelled(leaving)
    work.release.set()
    assert await staying == "result"
    assert not work.told.is_set()


async def test_a_caller_after_the_last_left_waits_for_that_work_then_starts_its_own() -> None:
    """The new caller does not join work that was told nobody wants it (it will end in
    nothing): it waits for that work to end, then gets the result of work of its own."""
    flight: SingleFlight[str, str] = SingleFlight(note=False)
    told, fresh = Work(lingers=True), Work()
    await _cancelled(await _caller(flight, told))
    assert told.told.is_set()
    coming = asyncio.ensure_future(flight.run("k", fresh, fresh.unwanted))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not fresh.began.is_set(), "the same work ran twice at once"
    told.let_go.set()
    await fresh.began.wait()
    fresh.release.set()
    assert await coming == "result"
    assert not fresh.told.is_set()


async def test_work_started_without_unwanted_runs_on_when_its_callers_leave() -> None:
    """Without `unwanted`, work outlives its callers, and a later caller joins it."""
    flight: SingleFlight[str, str] = SingleFlight(note=False)
    work = Work()
    task = asyncio.ensure_future(flight.run("k", work))
    await work.began.wait()
    await _cancelled(task)
    other = Work()
    later = asyncio.ensure_future(flight.run("k", other))
    await asyncio.sleep(0)
    work.release.set()
    assert await later == "result"
    assert not work.told.is_set()
    assert not other.began.is_set()
