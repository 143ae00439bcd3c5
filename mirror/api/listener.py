"""Accepting client connections: within the cap, each with a send timeout, refused cleanly.

The mirror accepts connections itself rather than through `loop.create_server`, so that it
decides before a connection costs anything: one over the cap is answered `503` with
`Retry-After` and closed (only closed, over TLS), and when the process is out of descriptors
(EMFILE, ENFILE) one descriptor kept in reserve lets it accept and close the next connection
instead of leaving every client waiting in the backlog (the technique of libuv and nginx).

With `--workers N` every worker watches the one listening socket, and whichever runs first
would take a whole burst of connections (a load generator's, a fleet's after a restart) while
the others sit idle: keep-alive keeps them there. So a worker of several waits a little before
each turn of accepting, the longer the more connections it has open (nginx's `accept_mutex_delay`
has the same aim): the least busy worker takes the next connections, and a worker whose peers are
stuck still accepts after at most MAX_SPREAD_DELAY. A turn takes a few connections (SPREAD_BATCH),
not one: under load each turn of a busy event loop is slow, and a burst of clients accepted one
per turn would wait for its turns one after another.

The send timeout is the kernel's TCP_USER_TIMEOUT (Linux, RFC 5482): a connection whose sent
data stays unacknowledged, or that advertises a zero window (a client that stopped reading),
for that long is closed with ETIMEDOUT. Measured on loopback with kernel 6.18, a reader that
stops is cut within half a second of the timeout, while one that keeps reading, however
slowly, is not. The kernel applies it to every byte alike (blobs sent by sendfile, spool
streams, manifests, and what a closed connection still has queued); a watchdog in the
application would have to poll every socket's TCP_INFO, since a sendfile in progress reports
no progress to Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

from mirror import log
from mirror.errors import Busy, error_body, out_of_descriptors

# accept(2): errors of the one pending connection, to be treated like EAGAIN.
_CONNECTION_FAILED = {
    errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
    errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
}  # fmt: skip
ACCEPT_PAUSE = 0.1  # when nothing can be accepted, not even to be refused
ACCEPT_BATCH = 100
SPREAD_DELAY = 100e-6  # per open connection, before a worker of several accepts more
MAX_SPREAD_DELAY = 0.001
SPREAD_BATCH = 4  # what a worker of several accepts at most in one turn
LINGER = 2.0  # how long a refused connection may take to send its request and read the 503
# A TLS handshake takes a few round trips; one still unfinished after this long is a client
# gone quiet (or one holding a place on purpose), and its place under the cap is given back.
# asyncio's own default is 60 s.
HANDSHAKE_TIMEOUT = 5.0
MAX_LINGERING = 64


def refusal(message: str) -> bytes:
    """A complete HTTP/1.1 503 answer with an OCI error body, sent without aiohttp."""
    error = Busy(message)
    body = json.dumps(error_body([error])).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {error.headers['Retry-After']}\r\n"
        "Docker-Distribution-API-Version: registry/2.0\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_MANY_CONNECTIONS = refusal("the mirror has too many connections; retry shortly")
OUT_OF_DESCRIPTORS = refusal("the mirror is out of file descriptors; retry shortly")


class Admission(Protocol):
    """The cap on connections (`mirror.api.connections.Connections`)."""

    def make_room(self) -> bool: ...

    def abandoned(self) -> None: ...


class Listener:
    """Accepts connections on a listening socket from `start()` to `stop()`.

    Accepting is a reader callback on the socket, not a task awaiting `sock_accept`: stopping
    removes the callback, so no connection is ever taken from the kernel's queue and then
    dropped, and a connection being set up (a TLS handshake) when the process stops is finished
    and served, unless it takes longer than the shutdown grace."""

    def __init__(
        self,
        sock: socket.socket,
        admission: Admission,
        protocol_factory: Callable[[], asyncio.Protocol],
        send_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        spread: Callable[[], int] | None = None,
    ) -> None:
        """`spread`, in a worker of several: how many connections it has open."""
        self._sock = sock
        self._spread = spread
        self._admission = admission
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None
        # TCP_USER_TIMEOUT is in milliseconds, as an unsigned int.
        self._user_timeout = min(int(send_timeout * 1000), 2**31 - 1)
        self._has_user_timeout = hasattr(socket, "TCP_USER_TIMEOUT")  # Linux
        self._spare: int | None = None
        self._connecting: set[asyncio.Task[None]] = set()
        self._lingering: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._spare = _open_spare()
        self._loop.add_reader(self._sock, self._accept_ready)

    async def stop(self, grace: float = HANDSHAKE_TIMEOUT) -> None:
        """Stop accepting and close the socket: alone, the process now refuses connections;
        with `--workers N`, the other workers' sockets take them. Connections accepted
        already are set up and handed to the server (it drains them); those whose TLS
        handshake is not done within `grace` seconds are closed."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        loop.remove_reader(self._sock)
        if self._paused is not None:
            self._paused.cancel()
        self._sock.close()
        if self._connecting:
            _, late = await asyncio.wait(self._connecting, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for task in self._lingering:
            task.cancel()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def _accept_ready(self) -> None:
        """Take what the kernel has queued, a batch at a time (as asyncio's own servers do);
        in a worker of several, a few connections, after the wait its open connections call
        for."""
        if self._spread is None:
            self._accept(ACCEPT_BATCH)
            return
        delay = min(self._spread() * SPREAD_DELAY, MAX_SPREAD_DELAY)
        if delay <= 0:
            self._accept(SPREAD_BATCH)
        elif self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._paused = self._loop.call_later(delay, self._accept_after_delay)

    def _accept_after_delay(self) -> None:
        self._paused = None
        self._accept(SPREAD_BATCH)  # nothing, if another worker took them meanwhile
        if self._loop is not None and self._paused is None:
            self._loop.add_reader(self._sock, self._accept_ready)

    def _accept(self, batch: int) -> None:
        for _ in range(batch):
            try:
                client, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if self._accept_failed(e):
                    continue
                return
            if self._spare is None:
                self._spare = _open_spare()
            if not self._admission.make_room():
                self._refuse(client, TOO_MANY_CONNECTIONS, "too many connections")
                continue
            task = asyncio.ensure_future(self._connect(client))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, client: socket.socket) -> None:
        try:
            if self._has_user_timeout:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self._user_timeout)
            await asyncio.get_running_loop().connect_accepted_socket(
                self._protocol_factory,
                client,
                ssl=self._ssl_context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl_context else None,
            )
        except BaseException as e:
            client.close()
            self._admission.abandoned()
            # Gone, a failed handshake or no memory end this connection alone; anything else
            # (stopping before the handshake is done) goes on up.
            if not isinstance(e, (OSError, ssl.SSLError, TimeoutError)):
                raise

    def _accept_failed(self, error: OSError) -> bool:
        """Handle a failed accept; True when accepting may go on at once."""
        if error.errno in _CONNECTION_FAILED:
            return True  # that connection is gone; the next may be fine
        if out_of_descriptors(error) and self._spare is not None:
            # Free the reserve, take the connection waiting longest and turn it away.
            os.close(self._spare)
            with contextlib.suppress(OSError):
                client, _ = self._sock.accept()
                self._refuse(client, OUT_OF_DESCRIPTORS, str(error.strerror), linger=False)
            self._spare = _open_spare()
            return False
        # No descriptor even to refuse with, no memory (ENOBUFS, ENOMEM), or worse: pause,
        # never spin, never stop.
        log.warn_once("refusing connections", error=str(error.strerror))
        if self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._paused = self._loop.call_later(ACCEPT_PAUSE, self._resume)
        return False

    def _resume(self) -> None:
        self._paused = None
        if self._loop is not None:
            self._loop.add_reader(self._sock, self._accept_ready)

    def _refuse(
        self, client: socket.socket, answer: bytes, reason: str, *, linger: bool = True
    ) -> None:
        """Answer 503 and close; a short lingering read lets the client's request arrive
        and its reader see the answer, rather than a reset for unread data. Over TLS the
        connection is only closed: an answer before the handshake would be noise to it."""
        log.warn_once("refusing connections", error=reason)
        if self._ssl_context is not None:
            client.close()
            return
        client.setblocking(False)
        try:
            client.send(answer)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            linger = False
        if not linger or len(self._lingering) >= MAX_LINGERING:
            client.close()
            return
        task = asyncio.create_task(_linger(client))
        self._lingering.add(task)
        task.add_done_callback(self._lingering.discard)


async def _linger(client: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(LINGER):
            while await loop.sock_recv(client, 4096):
                pass
    except (OSError, TimeoutError):
        pass
    finally:
        client.close()


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
