"""Just enough RESP over a raw socket to read Redis's command counter and to empty it."""

from __future__ import annotations

import socket


def _command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """Send one command and return the raw reply (bulk strings read to their declared length)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        if not reply.startswith(b"$"):
            return reply
        header, _, body = reply.partition(b"\r\n")
        length = int(header[1:])
        while len(body) < length + 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return body[:length]


def total_commands(port: int) -> int:
    """INFO stats total_commands_processed (the INFO call itself included)."""
    for line in _command(port, "INFO", "stats").decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":", 1)[1])
    raise RuntimeError("INFO stats has no total_commands_processed")


def flush_all(port: int) -> None:
    _command(port, "FLUSHALL")


def key_count(port: int) -> int:
    """DBSIZE: how many keys the server holds."""
    reply = _command(port, "DBSIZE")
    return int(reply.strip().lstrip(b":"))
