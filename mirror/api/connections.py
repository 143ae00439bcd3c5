"""The client connections of one process, counted against a cap.

Idle keep-alive connections count, since each holds a descriptor, but never at the expense of
work: when the cap is reached the connection idle the longest is closed to make room (as
nginx reuses idle keep-alive connections), and only when every connection is busy with a
request is a new one refused. A connection that stays idle (or never sends a request) for
`KEEPALIVE_TIMEOUT` is closed, by aiohttp or by the front that holds it (`mirror.api.front`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

from mirror import log
from mirror.api.middlewares import error_response
from mirror.errors import BadRequest, MirrorError

# What an aiohttp server calls with each parsed request.
ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# aiohttp's run_app default; clients keep idle connections for less (Go: 90 s, containerd:
# Go's default), so a pull rarely meets a connection closed under it.
KEEPALIVE_TIMEOUT = 75.0


class Connection(Protocol):
    """What holds a connection: aiohttp's handler, or the front before it (`mirror.api.front`)."""

    def force_close(self) -> None: ...

    def cut(self) -> None: ...


def cut_transport(transport: asyncio.BaseTransport | None) -> None:
    """Shut the connection's socket down for sending, so that whatever is sent on it next
    fails as if its client had gone. Not `transport.abort()`: a blob may be going out by
    `sendfile`, around the transport, and asyncio fails to close a transport under it. Not
    for reading either: over TLS, asyncio warns of the end of input it would then see."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


class Connections:
    """Which connections are open and which of them are idle, oldest idle first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[Connection] = set()
        # Insertion order is the order they became idle: the first is the one to close.
        self._idle: dict[Connection, None] = {}
        self._reserved = 0  # given room, and not yet opened

    @property
    def count(self) -> int:
        return len(self._open)

    def make_room(self) -> bool:
        """Whether one more connection may open, closing the longest idle one if need be; its
        place is kept until it opens or is `abandoned`, so a burst accepted in one go, before
        any of it has opened, stays within the cap too."""
        if len(self._open) + self._reserved >= self.limit:
            if not self._idle:
                return False
            oldest = next(iter(self._idle))
            self._forget(oldest)
            # What aiohttp's keep-alive timeout does to an idle connection: close it now.
            oldest.force_close()
        self._reserved += 1
        return True

    def abandoned(self) -> None:
        """A connection given room never opened (gone, or a failed TLS handshake)."""
        self._reserved = max(0, self._reserved - 1)

    @property
    def open(self) -> list[Connection]:
        return list(self._open)

    def opened(self, connection: Connection) -> None:
        self._reserved = max(0, self._reserved - 1)
        self._open.add(connection)
        self._idle[connection] = None

    def closed(self, connection: Connection) -> None:
        self._forget(connection)

    def busy(self, connection: Connection) -> None:
        """A request began on this connection."""
        self._idle.pop(connection, None)

    def rested(self, connection: Connection) -> None:
        """Its request is answered; it waits for the next one."""
        if connection in self._open:
            self._idle[connection] = None

    def _forget(self, connection: Connection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)


class Front(Connection, Protocol):
    """What holds a connection before aiohttp's handler (`mirror.api.front.FrontConnection`),
    told of each request the handler answers."""

    def began(self) -> None: ...

    def ended(self, keep_alive: bool) -> None: ...


class ClientConnection(web.RequestHandler):
    """aiohttp's handler of one connection: it reports its opening and closing, and its
    requests' beginning and end (see `tracked`), to `connections`, or to the front that holds
    the connection and counts in its place."""

    def __init__(
        self,
        connections: Connections,
        manager: web.Server,
        front: Front | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._front = front
        # Called once the connection is lost: a response waiting for bytes to send stops
        # waiting (`mirror.api.responses`), since aiohttp lets a handler run on after its
        # client left. One request at a time is answered on a connection, so one will do.
        self.on_lost: Callable[[], None] | None = None
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self._front is None:
            self._connections.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._front is None:
            self._connections.closed(self)
        super().connection_lost(exc)
        self.lost = True
        if self.on_lost is not None:
            self.on_lost()

    def cut(self) -> None:
        """End it as a client that went away would: the end of the shutdown grace. A response
        waiting for bytes to send is told at once, as when the connection is lost."""
        cut_transport(self.transport)
        if self.on_lost is not None:
            self.on_lost()

    def began(self) -> None:
        if self._front is None:
            self._connections.busy(self)
        else:
            self._front.began()

    def ended(self, keep_alive: bool) -> None:
        """Its request is answered (and the connection stays open if `keep_alive`)."""
        if self._front is None:
            self._connections.rested(self)
        else:
            self._front.ended(keep_alive)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp logs a request it cannot parse (a header over 8 KiB, a malformed line) with
        a traceback, though it is the client's error and answered 400: any client could fill
        the log with them. Such requests are a warning, once a minute at most, instead."""
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            log.warn_once("malformed requests refused", error=type(error).__name__)
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it cannot parse, in the OCI error format of every other
        refusal, and without aiohttp's text, which echoes the request's bytes."""
        # aiohttp's own: it logs, and raises once an answer has begun (nothing may follow).
        super().handle_error(request, status, exc, message)
        error = _malformed(exc) if status == 400 else MirrorError("internal error")
        response = error_response(error)
        response.force_close()
        return response


def _malformed(exc: BaseException | None) -> MirrorError:
    if isinstance(exc, LineTooLong):
        return BadRequest("a request line or header field is too long")
    if isinstance(exc, BadHttpMethod) and "HTTPS" in exc.message:
        return BadRequest("received HTTPS traffic on a plain HTTP port")
    return BadRequest("the request is not valid HTTP/1.1")


def tracked(handler: ServerHandler) -> ServerHandler:
    """The server's `handler`, telling each request's connection when it begins and ends: only
    idle connections are closed for room."""

    async def track(request: web.BaseRequest) -> web.StreamResponse:
        connection = cast(ClientConnection, request.protocol)
        connection.began()
        response = None
        try:
            response = await handler(request)
            return response
        finally:
            connection.ended(response is not None and response.keep_alive is not False)

    return track
