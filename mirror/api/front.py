"""A client connection's front: its requests are read here, from the bytes, and a hot manifest
is answered at once (`ReadyAnswers.write`). Any other plain request (`mirror.api.request_head`:
no body, nothing aiohttp could read otherwise) is lent to aiohttp's handler alone, and the front
reads on once it is answered. The first request that is not plain hands the connection, with
every byte not yet answered, to aiohttp's handler for good.

aiohttp's request machinery (its parser, a task per request, request and response objects,
header serialisation) is most of what a hot manifest costs; answered here, a hit is a dictionary
lookup and one write. A pull's blob requests are plain too, so its connection goes back and
forth and its manifests stay cheap.

A connection keeps within what aiohttp would allow it: it is closed after KEEPALIVE_TIMEOUT
with no request answered or in progress, it counts against the connection cap (and, idle, is
closed to make room), and it stops reading while its client does not read its answers or while
aiohttp has a request of it, so a client that sends and never reads holds at most a transport's
write buffer and a head or two.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import cast

from mirror.api.connections import KEEPALIVE_TIMEOUT, ClientConnection, Connections, cut_transport
from mirror.api.ready import ReadyAnswers
from mirror.api.request_head import MAX_HEAD, HeadReader, plain_so_far

_END = b"\r\n\r\n"
# Bytes read ahead while aiohttp answers a lent request (a client pipelining).
MAX_AHEAD = 2 * MAX_HEAD


class _Reader(enum.Enum):
    FRONT = "front"  # the front reads the requests
    LENT = "lent"  # aiohttp's handler answers one request; the front keeps what comes next
    HANDLER = "handler"  # aiohttp's handler has the connection for good


class FrontConnection(asyncio.Protocol):
    """One client connection; `handler(front)` makes aiohttp's handler for it when first needed."""

    def __init__(
        self,
        ready: ReadyAnswers,
        heads: HeadReader,
        handler: Callable[[FrontConnection], ClientConnection],
        connections: Connections,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        self._ready = ready
        self._heads = heads
        self._make_handler = handler
        self._connections = connections
        self._keepalive_timeout = keepalive_timeout
        self._transport: asyncio.Transport | None = None
        self._handler: ClientConnection | None = None
        self._reader = _Reader.FRONT
        self._buffer = b""
        self._checked = 0  # how much of an incomplete head in the buffer was found plain
        self._writing_paused = False
        self._reading_paused = False
        self._eof = False  # the client has sent all it will (a half-close)
        self._in_progress = 0  # requests aiohttp's handler is answering
        self._answered_at = 0.0  # when the connection opened, or a request was last answered
        self._clock = time.monotonic  # the event loop's clock, once connected
        self._idle_timer: asyncio.TimerHandle | None = None

    # asyncio's protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.opened(self)
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._answered_at = loop.time()
        self._idle_timer = loop.call_at(self._answered_at + self._keepalive_timeout, self._idle)

    def data_received(self, data: bytes) -> None:
        if self._reader is _Reader.HANDLER:
            assert self._handler is not None
            self._handler.data_received(data)
            return
        self._buffer += data
        if self._reader is _Reader.FRONT:
            self._answer()
        self._pace_reading()

    def eof_received(self) -> bool | None:
        """The client sent all it will (`shutdown(SHUT_WR)`, as `nc -N` does): what it asked
        for is answered before the connection closes, as Go's servers and nginx do. Once
        aiohttp's handler has the connection for good, the transport closes as aiohttp has it
        (once what was written is sent); over TLS, asyncio closes it in any case."""
        if self._reader is _Reader.HANDLER:
            assert self._handler is not None
            self._handler.eof_received()
            return None
        self._eof = True
        return not self._answered_all()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._connections.closed(self)
        self._buffer = b""
        if self._handler is not None:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._handler is not None:
            self._handler.pause_writing()
        self._pace_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._handler is not None:
            self._handler.resume_writing()
        if self._reader is _Reader.FRONT:
            self._answer()
            self._close_if_answered_all()
        self._pace_reading()

    # what `Connections` and aiohttp's handler tell it

    def force_close(self) -> None:
        """Close it (idle, to make room, or at shutdown); what was written still goes out."""
        if self._handler is not None:
            self._handler.force_close()
        elif self._transport is not None:
            self._transport.close()

    def cut(self) -> None:
        """End it as a client that went away would: the end of the shutdown grace."""
        if self._handler is not None:
            self._handler.cut()
        else:
            cut_transport(self._transport)

    def close_if_idle(self) -> None:
        """At shutdown: close it unless aiohttp's handler has a request of it (aiohttp's
        shutdown then gives that request its grace and closes the connection)."""
        if self._reader is _Reader.FRONT and self._in_progress == 0:
            self.force_close()

    def began(self) -> None:
        """aiohttp's handler began answering a request."""
        self._in_progress += 1
        self._connections.busy(self)

    def ended(self, keep_alive: bool) -> None:
        """aiohttp's handler answered a request; a lent one gives the reading back, unless the
        connection is to close or the answer did not end as planned."""
        self._in_progress -= 1
        if self._in_progress == 0:
            self._connections.rested(self)
        self._answered_at = self._clock()
        if self._reader is not _Reader.LENT:
            return
        if not keep_alive:
            self._give(b"")  # aiohttp closes the connection
            return
        self._reader = _Reader.FRONT
        # After aiohttp's handler has finished with the request (it does so on resuming).
        asyncio.get_running_loop().call_soon(self._resume_front)

    # reading

    def _answer(self) -> None:
        """Answer the requests in the buffer while they are ready answers and the client reads
        them; lend the first plain one that is not ready, give the first that is not plain."""
        transport = self._transport
        buffer = self._buffer
        while (
            buffer
            and not self._writing_paused
            and transport is not None
            and not transport.is_closing()
        ):
            end = buffer.find(_END, 0, MAX_HEAD + len(_END))
            if end < 0:
                # Incomplete: wait for the rest, unless it can no longer be plain (aiohttp
                # refuses a head too long, a bad line or stray bytes at once).
                checked = plain_so_far(buffer, self._checked) if len(buffer) <= MAX_HEAD else None
                if checked is None:
                    break
                self._checked = checked
                self._buffer = buffer
                return
            self._checked = 0
            head = self._heads.read(buffer[:end])
            if head is None:
                break
            end += len(_END)
            if not self._ready.write(head, transport):
                self._buffer = buffer[end:]
                self._lend(buffer[:end])
                return
            buffer = buffer[end:]
            self._answered_at = self._clock()
            if head.close:
                transport.close()
                buffer = b""
        else:
            self._buffer = buffer
            return
        self._give(buffer)

    def _resume_front(self) -> None:
        if self._reader is _Reader.FRONT and self._transport is not None:
            self._answer()
            self._close_if_answered_all()
            self._pace_reading()

    def _answered_all(self) -> bool:
        """Whether every whole request received is answered: none lent, none waiting for the
        client to read earlier answers (an incomplete head is never answered)."""
        return self._reader is _Reader.FRONT and _END not in self._buffer

    def _close_if_answered_all(self) -> None:
        if self._eof and self._transport is not None and self._answered_all():
            self._transport.close()  # what was written still goes out

    def _lend(self, request: bytes) -> None:
        """aiohttp's handler answers `request` (one whole request with no body); the bytes
        after it wait until it has."""
        self._reader = _Reader.LENT
        self._handler_of_connection().data_received(request)

    def _give(self, unread: bytes) -> None:
        """aiohttp's handler has the connection from now on, from the first byte unanswered."""
        self._buffer = b""
        self._reader = _Reader.HANDLER
        self._pace_reading()
        handler = self._handler_of_connection()
        if unread:
            handler.data_received(unread)

    def _handler_of_connection(self) -> ClientConnection:
        if self._handler is None:
            assert self._transport is not None
            self._handler = self._make_handler(self)
            self._handler.connection_made(self._transport)
            if self._writing_paused:
                self._handler.pause_writing()
        return self._handler

    def _pace_reading(self) -> None:
        """Read while the client reads its answers and what waits in the buffer is small;
        aiohttp's handler paces its own reading once it has the connection."""
        if self._eof:
            return  # nothing more to read
        pause = self._reader is not _Reader.HANDLER and (
            self._writing_paused or len(self._buffer) > MAX_AHEAD
        )
        transport = self._transport
        if pause == self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _idle(self) -> None:
        """Close the connection if nothing was answered on it, and nothing is in progress, for
        the keep-alive timeout."""
        self._idle_timer = None
        if self._transport is None or self._transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        due = self._answered_at + self._keepalive_timeout
        if self._in_progress == 0 and loop.time() >= due:
            self.force_close()
            return
        self._idle_timer = loop.call_at(max(due, loop.time() + 1.0), self._idle)
