"""One process's HTTP server: the app behind a listener that keeps client connections within
their limits (`mirror.api.listener`), and its orderly end (see `mirror.lifecycle`)."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

from mirror.api.connections import Connections
from mirror.api.serving import SETTLE, serve_app
from mirror.app import create_app
from mirror.config import Settings
from mirror.descriptors import max_connections


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None = None,
    *,
    settle: float = SETTLE,
) -> AsyncIterator[Connections]:
    """Serve the mirror on `sock` until the block ends (`mirror.api.serving.serve_app`)."""
    async with serve_app(
        create_app(settings),
        sock,
        limit=max_connections(settings),
        send_timeout=settings.send_timeout,
        shutdown_grace=settings.shutdown_grace,
        ssl_context=ssl_context,
        ready_answers=True,
        spread=settings.workers > 1,
        settle=settle,
    ) as connections:
        yield connections
