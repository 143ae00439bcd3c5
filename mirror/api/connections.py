"""The client connections of one process, counted against a cap.

Idle keep-alive connections count, since each holds a descriptor, but never at the expense of
work: when the cap is reached the connection idle the longest is closed to make room (as
nginx reuses idle keep-alive connections), and only when every connection is busy with a
request is a new one refused. aiohttp also closes a connection that stays idle (or never sends
a request) for `KEEPALIVE_TIMEOUT`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from mirror import log

# aiohttp's run_app default; clients keep idle connections for less (Go: 90 s, containerd:
# Go's default), so a pull rarely meets a connection closed under it.
KEEPALIVE_TIMEOUT = 75.0


class Connections:
    """Which connections are open and which of them are idle, oldest idle first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[web.RequestHandler] = set()
        # Insertion order is the order they became idle: the first is the one to close.
        self._idle: dict[web.RequestHandler, None] = {}

    @property
    def count(self) -> int:
        return len(self._open)

    def make_room(self) -> bool:
        """Whether one more connection may open, closing the longest idle one if need be."""
        if len(self._open) < self.limit:
            return True
        if not self._idle:
            return False
        oldest = next(iter(self._idle))
        self._forget(oldest)
        # What aiohttp's keep-alive timeout does to an idle connection: close it now.
        oldest.force_close()
        return True

    def opened(self, connection: web.RequestHandler) -> None:
        self._open.add(connection)
        self._idle[connection] = None

    def closed(self, connection: web.RequestHandler) -> None:
        self._forget(connection)

    def busy(self, connection: Any) -> None:
        """A request began on this connection (`request.protocol`)."""
        self._idle.pop(connection, None)

    def rested(self, connection: Any) -> None:
        """Its request is answered; it waits for the next one."""
        if connection in self._open:
            self._idle[connection] = None

    def _forget(self, connection: web.RequestHandler) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)


class ClientConnection(web.RequestHandler):
    """aiohttp's handler of one connection, reporting its opening and closing."""

    def __init__(self, connections: Connections, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._connections.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connections.closed(self)
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp logs a request it cannot parse (a header over 8 KiB, a malformed line) with
        a traceback, though it is the client's error and answered 400: any client could fill
        the log with them. Such requests are a warning, once a minute at most, instead."""
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            log.warn_once("malformed requests refused", error=type(error).__name__)
            return
        super().log_exception(*args, **kwargs)
