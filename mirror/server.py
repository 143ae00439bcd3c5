"""One process's HTTP server: the app, behind a listener that keeps client connections within
their limits (`mirror.api.listener`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from mirror.api.connections import KEEPALIVE_TIMEOUT, ClientConnection, Connections
from mirror.api.listener import Listener
from mirror.app import create_app
from mirror.config import Settings
from mirror.descriptors import max_connections


@contextlib.asynccontextmanager
async def serving(settings: Settings, sock: socket.socket) -> AsyncIterator[Connections]:
    """Serve on `sock` until the block ends, then close every connection and the app."""
    connections = Connections(max_connections(settings))
    # The request middleware writes the one log line per request: no access log.
    runner = web.AppRunner(create_app(settings, connections=connections), access_log=None)
    await runner.setup()
    server, loop = runner.server, asyncio.get_running_loop()
    assert server is not None

    def connection() -> ClientConnection:
        return ClientConnection(
            connections,
            server,
            loop=loop,
            access_log=None,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )

    listener = asyncio.create_task(
        Listener(sock, connections.make_room, connection, settings.send_timeout).serve()
    )
    try:
        yield connections
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await runner.cleanup()
