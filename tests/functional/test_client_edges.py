"""Clients at the edges of HTTP, through the server `mirror serve` runs: one that half-closes
still gets its answers, one that leaves before its answer began is no error of the mirror's,
bytes aiohttp cannot parse get an OCI error, and a burst of connections stays within the cap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from pathlib import Path

import structlog

from tests.conftest import Seeded
from tests.support.clients import is_closed_by_server, request_bytes
from tests.support.oci import ACCEPT_ALL, cached_blob, wait_until
from tests.support.served import ServeFactory


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every answer in `raw` (each with a Content-Length): (status, fields, body)."""
    answers = []
    while raw:
        head, separator, raw = raw.partition(b"\r\n\r\n")
        assert separator, f"an incomplete answer: {head!r}"
        status, *lines = head.decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(fields["content-length"])
        answers.append((int(status.split(" ", 2)[1]), fields, raw[:length]))
        raw = raw[length:]
    return answers


async def _read_to_end(sock: socket.socket, within: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    raw = b""
    async with asyncio.timeout(within):
        while chunk := await loop.sock_recv(sock, 1 << 20):
            raw += chunk
    return raw


async def _connected(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def test_a_half_closed_connection_gets_every_answer_it_asked_for(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """A cold blob, a tag list and a manifest sent at once, then `shutdown(SHUT_WR)` (as
    `nc -N` does): all three are answered, in order, and then the mirror closes."""
    served = await serve()
    repo, tag = seeded.oci_ref
    layer = seeded.oci.layers[0]
    sock = await _connected(served.port)
    with contextlib.closing(sock):
        requests = b"".join(
            (
                request_bytes(f"/v2/{repo}/blobs/{layer.digest}"),
                request_bytes(f"/v2/{repo}/tags/list"),
                request_bytes(f"/v2/{repo}/manifests/{tag}", "GET", f"Accept: {ACCEPT_ALL}"),
            )
        )
        await asyncio.get_running_loop().sock_sendall(sock, requests)
        sock.shutdown(socket.SHUT_WR)
        answers = _answers(await _read_to_end(sock))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert answers[0][2] == layer.data
    assert tag in json.loads(answers[1][2])["tags"]
    assert answers[2][1]["docker-content-digest"] == str(seeded.oci.digest)


async def test_a_client_gone_before_its_blob_answer_began_is_not_an_error(
    serve: ServeFactory, seeded: Seeded, cache_dir: Path
) -> None:
    """Reset right after asking for a cold blob: the fill still completes, and the request is
    logged as an answer the client did not take, with no 500 and no traceback."""
    served = await serve()
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    with structlog.testing.capture_logs() as logs:
        sock = await _connected(served.port)
        await asyncio.get_running_loop().sock_sendall(sock, request_bytes(path))
        # SO_LINGER of zero: close() resets the connection at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert await wait_until(lambda: cached_blob(cache_dir, layer.digest).exists())
        assert await wait_until(
            lambda: any(e.get("event") == "request" and e.get("path") == path for e in logs)
        )
    lines = [e for e in logs if e.get("event") == "request" and e.get("path") == path]
    assert [line["complete"] for line in lines] == [False], lines
    assert lines[0]["status"] != 500, lines
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs


async def test_bytes_aiohttp_cannot_parse_get_an_oci_error_that_echoes_nothing(
    serve: ServeFactory,
) -> None:
    """A header with a control character (not a request the front reads, so aiohttp parses
    it): 400 with the OCI error body, not aiohttp's text, which quotes the request."""
    served = await serve()
    sock = await _connected(served.port)
    with contextlib.closing(sock):
        await asyncio.get_running_loop().sock_sendall(
            sock, request_bytes("/v2/", "GET", "X-Probe: <script>\x01")
        )
        raw = await _read_to_end(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400", raw
    assert b"\r\nContent-Type: application/json\r\n" in head, head
    assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
    assert b"script" not in body


def _refused(sock: socket.socket) -> bool:
    """Whether the mirror answered 503 on this connection (it asked nothing) or closed it."""
    if is_closed_by_server(sock):
        return True
    with contextlib.suppress(BlockingIOError):
        return sock.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 503 ")
    return False


async def test_a_burst_of_connections_stays_within_the_cap(serve: ServeFactory) -> None:
    """Thirty connections made before the mirror accepts any of them: at most the cap stay
    open, and the rest are refused."""
    served = await serve(max_connections=4)
    burst = []
    try:
        for _ in range(30):  # blocking connects: the kernel completes them, none accepted yet
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.setblocking(False)
            burst.append(sock)
        assert await wait_until(lambda: served.connections.count == 4)
        assert await wait_until(lambda: sum(_refused(s) for s in burst) == 26)
        await asyncio.sleep(0.2)  # nothing more opens after the refusals
        assert served.connections.count == 4
    finally:
        for sock in burst:
            sock.close()


async def test_blob_answers_carry_the_api_version_as_every_answer_does(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """GET of a blob, cold and cached, names the API version, as its HEAD does."""
    served = await serve()
    repo, _ = seeded.oci_ref
    path = f"/v2/{repo}/blobs/{seeded.oci.layers[0].digest}"
    for _ in ("cold", "cached"):
        status, _, headers = await served.get(path)
        assert status == 200
        assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
