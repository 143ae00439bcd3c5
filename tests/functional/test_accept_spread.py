"""With `--workers N`, a burst of connections is spread over the workers instead of going to
whichever worker runs first (and staying there, kept alive)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.api.connections import Connections
from mirror.api.listener import MAX_SPREAD_DELAY, Listener
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

CONNECTIONS = 64


class Taken(asyncio.Protocol):
    """Records which listener accepted a connection."""

    def __init__(self, name: str, taken: asyncio.Queue[str]) -> None:
        self._name = name
        self._taken = taken

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._taken.put_nowait(self._name)
        transport.close()


def _uncapped() -> Connections:
    return Connections(limit=1 << 30)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


async def _connect(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()


async def test_the_least_busy_listener_takes_the_next_connection() -> None:
    """Of two listeners on one socket, the one with fewer open connections accepts each new
    one; alone, the busier one still accepts."""
    sock = _listening()
    port = sock.getsockname()[1]
    taken: asyncio.Queue[str] = asyncio.Queue()
    busy = Listener(sock.dup(), _uncapped(), lambda: Taken("busy", taken), 30.0, spread=lambda: 40)
    idle = Listener(sock.dup(), _uncapped(), lambda: Taken("idle", taken), 30.0, spread=lambda: 0)
    busy.start()
    idle.start()
    try:
        for _ in range(5):
            await _connect(port)
            assert await asyncio.wait_for(taken.get(), 5) == "idle"
            # The busy listener's delayed accept for that connection is still pending; were
            # the next connection to arrive just as it runs, it would take that one (as it
            # should: it has waited its turn). Let it run out first, so each connection
            # here finds both listeners watching the socket.
            await asyncio.sleep(2 * MAX_SPREAD_DELAY)
        await idle.stop()
        await _connect(port)
        assert await asyncio.wait_for(taken.get(), 5) == "busy"
        assert taken.empty()
    finally:
        await busy.stop()
        await idle.stop()
        sock.close()


@pytest.mark.parametrize("open_connections", [0, 40])
async def test_a_worker_of_several_takes_a_burst_a_few_at_a_time(open_connections: int) -> None:
    """Connections waiting in the backlog are accepted a few per turn of the event loop, not
    one per turn: under load each turn is slow, and a burst of clients would wait for its
    turns one by one."""
    sock = _listening()
    port = sock.getsockname()[1]
    waiting = 9
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(waiting)]
    taken: asyncio.Queue[str] = asyncio.Queue()
    turns = 0

    def spread() -> int:
        nonlocal turns
        turns += 1
        return open_connections

    listener = Listener(sock, _uncapped(), lambda: Taken("one", taken), 30.0, spread=spread)
    listener.start()
    try:
        for _ in range(waiting):
            await asyncio.wait_for(taken.get(), 5)
        assert turns <= 3, f"{waiting} connections took {turns} turns"
    finally:
        await listener.stop()
        for client in clients:
            client.close()


async def test_a_burst_of_connections_reaches_every_worker(
    registry: Registry, tmp_path: Path
) -> None:
    """64 clients connecting at once to `--workers 2`, each making one request on a connection
    of its own that it keeps: both workers answer some of them (without the spreading, the
    first worker to run took them all). How evenly is the test above's; here, on a loaded
    machine, a worker may get little CPU for a while, and the other then accepts anyway."""
    server = await asyncio.to_thread(
        MirrorServer.start,
        tmp_path / "mirror",
        registry.url,
        tag_ttl=300,
        extra_args=["--workers", "2"],
    )
    try:
        # The server answers once one worker listens; the other may still be starting.
        assert await _both_workers_answer(server), "the second worker never answered"
        mark = server.log_size()

        all_answered = asyncio.Event()
        answered: list[int] = []

        async def one() -> None:
            """One request on a connection of its own, kept open (as clients keep them alive)
            until every client has its answer."""
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/v2/") as response:
                    answered.append(response.status)
                    await response.read()
                if len(answered) == CONNECTIONS:
                    all_answered.set()
                await all_answered.wait()

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(CONNECTIONS))), 30)
        assert answered == [200] * CONNECTIONS
        await asyncio.sleep(0.5)  # request lines are written in batches
        entries = server.entries(mark)
        lines = [e for e in entries if e.get("event") == "request" and e["path"] == "/v2/"]
        by_worker = _by_worker(lines)
        assert len(lines) == CONNECTIONS
        assert len(by_worker) == 2 and min(by_worker.values()) >= CONNECTIONS // 16, by_worker
    finally:
        await asyncio.to_thread(server.stop)


def _by_worker(lines: list[dict[str, Any]]) -> Counter[str]:
    """Request lines by the worker that wrote them (the first part of the request id)."""
    return Counter(line["request_id"].split("-", 1)[0] for line in lines)


async def _both_workers_answer(server: MirrorServer, within: float = 30.0) -> bool:
    """Send requests, each on a connection of its own, until both workers have answered one."""
    mark = server.log_size()
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/v2/") as got:
            assert got.status == 200
        await asyncio.sleep(0.05)
        lines = [e for e in server.entries(mark) if e.get("event") == "request"]
        if len(_by_worker(lines)) == 2:
            return True
    return False
