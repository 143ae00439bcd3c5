"""One process's HTTP server: the app behind a listener that keeps client connections within
their limits (`mirror.api.listener`), and its orderly end (see `mirror.lifecycle`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

from mirror.api.connections import KEEPALIVE_TIMEOUT, ClientConnection, Connections, tracked
from mirror.api.front import FrontConnection
from mirror.api.listener import Listener
from mirror.api.ready import ReadyAnswers
from mirror.api.request_head import HeadReader
from mirror.app import create_app
from mirror.config import Settings
from mirror.descriptors import max_connections

# After the listening socket is closed: time for a connection accepted just before to deliver
# its request, which is then answered rather than cut as idle.
SETTLE = 0.5
NEVER = 10 * 365 * 86400.0  # a keep-alive timeout that does not come


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
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # the request middleware writes the one line per request
        shutdown_timeout=settings.shutdown_grace,
    )
    await runner.setup()
    server, loop = runner.server, asyncio.get_running_loop()
    assert server is not None
    ready = ReadyAnswers.of(app)
    if ready is not None:
        server.request_handler = ready.before(server.request_handler)
    server.request_handler = tracked(server.request_handler)

    def handler(front: FrontConnection | None = None) -> ClientConnection:
        # A front closes its idle connection itself, whether or not the handler has it.
        keepalive = KEEPALIVE_TIMEOUT if front is None else NEVER
        return ClientConnection(
            connections, server, front, loop=loop, access_log=None, keepalive_timeout=keepalive
        )

    heads = HeadReader()

    def front() -> FrontConnection:
        assert ready is not None
        return FrontConnection(ready, heads, handler, connections)

    listener = Listener(
        sock,
        connections,
        handler if ready is None else front,
        settings.send_timeout,
        ssl_context,
        spread=(lambda: connections.count) if settings.workers > 1 else None,
    )
    try:
        listener.start()
        yield connections
        await listener.stop(settings.shutdown_grace)
        await asyncio.sleep(settle)
        # aiohttp's shutdown closes the idle connections it has; a front's may never have
        # reached it.
        for connection in connections.open:
            if isinstance(connection, FrontConnection):
                connection.close_if_idle()
    finally:
        await listener.stop(settings.shutdown_grace)
        await runner.cleanup()
