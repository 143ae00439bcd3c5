"""One process's HTTP server: the app behind a listener that keeps client connections within
their limits (`mirror.api.listener`), and its orderly end (see `mirror.lifecycle`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

from mirror.api.connections import KEEPALIVE_TIMEOUT, ClientConnection, Connections
from mirror.api.listener import Listener
from mirror.api.ready import ready_first
from mirror.app import create_app
from mirror.config import Settings
from mirror.descriptors import max_connections

# After the listening socket is closed: time for a connection accepted just before to deliver
# its request, which is then answered rather than cut as idle.
SETTLE = 0.5


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None = None,
    *,
    settle: float = SETTLE,
) -> AsyncIterator[Connections]:
    """Serve on `sock` until the block ends; then stop accepting, let a request accepted a
    moment earlier arrive, close idle connections and give the responses in flight up to
    `settings.shutdown_grace` seconds."""
    connections = Connections(max_connections(settings))
    app = create_app(settings, connections=connections)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # the request middleware writes the one line per request
        shutdown_timeout=settings.shutdown_grace,
    )
    await runner.setup()
    server, loop = runner.server, asyncio.get_running_loop()
    assert server is not None
    server.request_handler = ready_first(app, server.request_handler, connections)

    def connection() -> ClientConnection:
        return ClientConnection(
            connections, server, loop=loop, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT
        )

    listener = Listener(sock, connections.make_room, connection, settings.send_timeout, ssl_context)
    try:
        listener.start()
        yield connections
        await listener.stop()
        await asyncio.sleep(settle)
    finally:
        await listener.stop()
        await runner.cleanup()
