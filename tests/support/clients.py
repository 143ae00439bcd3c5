"""Clients that hold a server's resources: raw sockets that stop reading or just stay open."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

# SO_RCVBUF set before connecting caps the window the client advertises (and stops Linux from
# growing it), so a client that stops reading leaves the data queued at the server.
SMALL_RECEIVE_BUFFER = 4096


async def open_connection(host: str, port: int, *, small_window: bool = False) -> socket.socket:
    """A connected non-blocking socket, optionally with a tiny receive window."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_window:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RECEIVE_BUFFER)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except OSError:
        sock.close()
        raise
    return sock


def request_bytes(
    path: str,
    method: str = "GET",
    *fields: str,
    close: bool = False,
    version: str = "1.1",
    end: str = "\r\n",
) -> bytes:
    """A request head as a client sends it: `fields` after Host, lines ended by `end`."""
    lines = [f"{method} {path} HTTP/{version}", "Host: mirror", *fields]
    if close:
        lines.append("Connection: close")
    return (end.join(lines) + end + end).encode()


async def stalled_get(host: str, port: int, path: str) -> socket.socket:
    """Ask for `path` and never read the answer: a slow reader that stopped."""
    sock = await open_connection(host, port, small_window=True)
    await asyncio.get_running_loop().sock_sendall(sock, request_bytes(path))
    return sock


async def read_answer(sock: socket.socket, within: float = 10.0) -> tuple[int | None, bytes]:
    """Read until the server closes (the request said `Connection: close`): (status, raw).

    The status is None when the server closed or reset the connection without an answer."""
    loop = asyncio.get_running_loop()
    raw = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(within):
            while chunk := await loop.sock_recv(sock, 65536):
                raw += chunk
    if not raw.startswith(b"HTTP/1.1 "):
        return None, raw
    return int(raw.split(b" ", 2)[1]), raw


async def exchange(
    sock: socket.socket, path: str, within: float = 10.0
) -> tuple[int, bytes, bytes]:
    """One request on a kept-alive connection and its whole answer: (status, head, body)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request_bytes(path))
    raw = b""
    async with asyncio.timeout(within):
        while b"\r\n\r\n" not in raw:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"connection closed after {raw!r}"
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    return int(head.split(b" ", 2)[1]), head, body


def is_closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed or reset this idle connection (a read sees EOF or an error)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer as it came: status, headers (names lower-cased), body."""

    status: int
    headers: dict[str, str]
    body: bytes


async def raw_exchange(
    host: str, port: int, method: str, target: str, headers: dict[str, str], within: float = 10.0
) -> RawAnswer:
    """Send a request line and headers exactly as given (no client normalises the path), on
    a connection of its own, and read the answer until the server closes it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [f"{method} {target} HTTP/1.1", "Host: mirror", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split(" ", 2)[1]), parsed, body)
