"""An aiohttp application served on a listening socket within the limits every client
connection is held to: the connection cap, the keep-alive timeout, the send timeout, refusals
answered and logged once a minute (`mirror.api.listener`, `mirror.api.connections`), and
requests aiohttp cannot parse answered in the OCI error format. The registry's port and the
admin port (`--admin-listen`) are both served so."""

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

# After the listening socket is closed: time for a connection accepted just before to deliver
# its request, which is then answered rather than cut as idle.
SETTLE = 0.5
NEVER = 10 * 365 * 86400.0  # a keep-alive timeout that does not come


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application,
    sock: socket.socket,
    *,
    limit: int,
    send_timeout: float,
    shutdown_grace: float,
    ssl_context: ssl.SSLContext | None = None,
    ready_answers: bool = False,
    spread: bool = False,
    settle: float = SETTLE,
) -> AsyncIterator[Connections]:
    """Serve `app` on `sock` until the block ends, at most `limit` connections at once; then
    stop accepting, let a request accepted a moment earlier arrive, close idle connections and
    give the responses in flight up to `shutdown_grace` seconds. `ready_answers`: hot manifests
    answered before the application (`mirror.api.ready`); `spread`: accept as a worker of
    several."""
    connections = Connections(limit)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # the request middleware writes the one line per request
        shutdown_timeout=shutdown_grace,
    )
    await runner.setup()
    server, loop = runner.server, asyncio.get_running_loop()
    assert server is not None
    ready = ReadyAnswers.of(app) if ready_answers else None
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
        send_timeout,
        ssl_context,
        spread=(lambda: connections.count) if spread else None,
    )
    cut: asyncio.TimerHandle | None = None
    try:
        listener.start()
        yield connections
        # aiohttp's shutdown waits `shutdown_grace` for a response, then as long again before
        # it cancels the handler: the grace is kept here instead, by shutting down whatever is
        # still open when it ends, which each response handles as a client gone away.
        cut = loop.call_later(shutdown_grace, _cut, connections)
        await listener.stop(shutdown_grace)
        await asyncio.sleep(settle)
        # aiohttp's shutdown closes the idle connections it has; a front's may never have
        # reached it.
        for connection in connections.open:
            if isinstance(connection, FrontConnection):
                connection.close_if_idle()
    finally:
        await listener.stop(shutdown_grace)
        await runner.cleanup()
        if cut is not None:
            cut.cancel()


def _cut(connections: Connections) -> None:
    for connection in connections.open:
        connection.cut()
