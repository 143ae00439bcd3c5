"""Waiting on another replica (for the blob it streams, the manifest or tag it fetches): ask at
once, then soon, then less and less often, until a deadline. The other replica usually answers
within milliseconds of taking its lease; one that takes long is left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

FIRST_POLL = 0.01
LAST_POLL = 0.2


async def polls(within: float) -> AsyncIterator[None]:
    """Turns of a wait of at most `within` seconds; the iteration ends at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = FIRST_POLL
    while True:
        yield
        if loop.time() > deadline:
            return
        await asyncio.sleep(pause)
        pause = min(pause * 2, LAST_POLL)
