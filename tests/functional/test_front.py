"""Hot manifests answered from the connection's bytes, through the server `mirror serve` runs:
the same answer aiohttp gives, over TLS too; pipelined requests answered in order whoever answers
them; requests the front does not read answered by aiohttp, at once when their first bytes show
it; and a client that does not read its answers is not read."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest

from mirror.api.ready import ReadyAnswers
from mirror.api.request_head import RequestHead
from tests.conftest import Seeded
from tests.support.certs import CertificateAuthority
from tests.support.clients import open_connection, read_answer, request_bytes
from tests.support.oci import ACCEPT_ALL
from tests.support.served import ServeFactory


def get(path: str, method: str = "GET", *, version: str = "1.1", end: str = "\r\n") -> bytes:
    return request_bytes(path, method, f"Accept: {ACCEPT_ALL}", version=version, end=end)


async def read_answers(
    sock: socket.socket, methods: list[str], within: float = 10.0
) -> list[tuple[bytes, list[bytes], bytes]]:
    """The answers to requests sent with `methods`, in order: (status line, fields, body)."""
    loop = asyncio.get_running_loop()
    raw = b""
    answers = []
    async with asyncio.timeout(within):
        for method in methods:
            while b"\r\n\r\n" not in raw:
                chunk = await loop.sock_recv(sock, 65536)
                assert chunk, f"closed after {answers!r}"
                raw += chunk
            head, _, raw = raw.partition(b"\r\n\r\n")
            status, *fields = head.split(b"\r\n")
            length = next(
                int(f.split(b":", 1)[1]) for f in fields if f.lower().startswith(b"content-length:")
            )
            length = 0 if method == "HEAD" else length
            while len(raw) < length:
                chunk = await loop.sock_recv(sock, 65536)
                assert chunk, "closed mid-body"
                raw += chunk
            answers.append((status, fields, raw[:length]))
            raw = raw[length:]
    return answers


@pytest.fixture
def front_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths answered from the bytes, as they are answered."""
    answered: list[str] = []
    write = ReadyAnswers.write

    def counted(self: ReadyAnswers, head: RequestHead, transport: asyncio.WriteTransport) -> bool:
        done = write(self, head, transport)
        if done:
            answered.append(head.path)
        return done

    monkeypatch.setattr(ReadyAnswers, "write", counted)
    return answered


async def test_an_answer_from_the_bytes_is_the_answer_aiohttp_gives(
    serve: ServeFactory, seeded: Seeded, front_answers: list[str]
) -> None:
    """On one connection: the first GET (a miss, answered by aiohttp), then a GET and a HEAD
    answered from the bytes: the same status line and fields in the same order (but Date),
    and the same body."""
    served = await serve()
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    sock = await open_connection(served.host, served.port)
    with contextlib.closing(sock):
        loop = asyncio.get_running_loop()
        answers = []
        for method in ("GET", "GET", "HEAD"):
            await loop.sock_sendall(sock, get(path, method))
            answers += await read_answers(sock, [method])
    assert front_answers == [path, path]
    (status, fields, body), *ready = answers
    assert status == b"HTTP/1.1 200 OK" and body == seeded.oci.manifest

    def but_date(fields: list[bytes]) -> list[bytes]:
        return [f for f in fields if not f.lower().startswith(b"date:")]

    for ready_status, ready_fields, _ in ready:
        assert ready_status == status
        assert but_date(ready_fields) == but_date(fields)
        assert len(ready_fields) == len(fields)
    assert ready[0][2] == seeded.oci.manifest
    assert ready[1][2] == b""


async def test_pipelined_requests_are_answered_in_order_whoever_answers_them(
    serve: ServeFactory, seeded: Seeded, front_answers: list[str]
) -> None:
    """One write of a hot manifest, a blob (lent to aiohttp), a HEAD of the hot manifest, a
    request the front does not read (the tag percent-encoded) and the hot manifest again:
    every answer, in order, each right."""
    served = await serve()
    repo, tag = seeded.oci_ref
    manifest = f"/v2/{repo}/manifests/{tag}"
    layer = seeded.oci.layers[0]
    blob = f"/v2/{repo}/blobs/{layer.digest}"
    odd = f"/v2/{repo}/manifests/%{ord(tag[0]):02X}{tag[1:]}"
    sock = await open_connection(served.host, served.port)
    with contextlib.closing(sock):
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, get(manifest))
        await read_answers(sock, ["GET"])
        methods = ["GET", "GET", "HEAD", "GET", "GET"]
        paths = [manifest, blob, manifest, odd, manifest]
        await loop.sock_sendall(sock, b"".join(map(get, paths, methods)))
        answers = await read_answers(sock, methods)
    statuses = [status.split(b" ")[1] for status, _, _ in answers]
    assert statuses == [b"200"] * 5
    bodies = [body for _, _, body in answers]
    assert bodies[0] == bodies[3] == bodies[4] == seeded.oci.manifest
    assert bodies[1] == layer.data
    assert bodies[2] == b""
    # Answered from the bytes: the hot manifest before the lent blob and after it; the last
    # one came after a request the front does not read, so aiohttp's handler answered it.
    assert front_answers == [manifest, manifest]


@pytest.mark.parametrize(
    ("version", "end", "status"),
    [("1.0", "\r\n", b"200"), ("1.1", "\n", b"400")],
    ids=["HTTP/1.0", "bare LF"],
)
async def test_requests_the_front_does_not_read_are_answered_by_aiohttp(
    serve: ServeFactory,
    seeded: Seeded,
    front_answers: list[str],
    version: str,
    end: str,
    status: bytes,
) -> None:
    """HTTP/1.0 gets the hot manifest all the same, from aiohttp; line ends without CR get
    aiohttp's refusal at once, not a wait for a CRLF that never comes."""
    served = await serve()
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    await served.get(path, Accept=ACCEPT_ALL)
    sock = await open_connection(served.host, served.port)
    with contextlib.closing(sock):
        await asyncio.get_running_loop().sock_sendall(sock, get(path, version=version, end=end))
        [(line, _, body)] = await read_answers(sock, ["GET"], within=5.0)
    assert line.split(b" ")[1] == status
    assert status != b"200" or body == seeded.oci.manifest
    assert front_answers == []


async def test_bytes_that_cannot_begin_a_plain_request_are_refused_at_once(
    serve: ServeFactory,
) -> None:
    """The start of a TLS handshake on the plain port, with no blank line to wait for: aiohttp
    answers 400 at once, as it would without the front."""
    served = await serve()
    sock = await open_connection(served.host, served.port)
    with contextlib.closing(sock):
        await asyncio.get_running_loop().sock_sendall(sock, b"\x16\x03\x01\x02\x00\x01\x00")
        started = time.monotonic()
        _, raw = await read_answer(sock, within=5.0)
    assert raw.split(b" ", 2)[1] == b"400", raw  # aiohttp answers it in HTTP/1.0
    assert b"HTTPS traffic" in raw
    assert time.monotonic() - started < 2.0


async def test_a_client_that_sends_and_never_reads_is_not_read(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """A client pipelining hot manifests without reading the answers: once the buffers
    between them are full the mirror reads no more of it (nothing more can be sent), and
    other clients are answered meanwhile."""
    served = await serve()
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    await served.get(path, Accept=ACCEPT_ALL)
    flood = await open_connection(served.host, served.port, small_window=True)
    requests = get(path) * 256
    sent_late = 0
    with contextlib.closing(flood):
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < 4.0:
            try:
                sent = flood.send(requests)
            except BlockingIOError:
                sent = 0
            if elapsed > 3.0:
                sent_late += sent
            await asyncio.sleep(0.001)
            if elapsed > 2.0:
                status, body, _ = await served.get(path, Accept=ACCEPT_ALL)
                assert (status, body) == (200, seeded.oci.manifest)
    assert sent_late == 0


async def test_over_tls_the_front_answers_what_it_reads_through_the_tls_layer(
    serve: ServeFactory, seeded: Seeded, front_answers: list[str], tmp_path: Path
) -> None:
    """With --tls-cert, on one TLS connection: a miss (lent), then hot GETs answered from
    the decrypted bytes, each whole and right."""
    authority = CertificateAuthority(tmp_path / "ca")
    cert = authority.issue("mirror")
    served = await serve(tls_cert=cert.cert, tls_key=cert.key)
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    context = ssl.create_default_context(cafile=str(authority.ca_file))
    reader, writer = await asyncio.open_connection(served.host, served.port, ssl=context)
    try:
        for _ in range(3):
            writer.write(get(path))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = next(
                int(f.split(b":", 1)[1])
                for f in head.split(b"\r\n")
                if f.lower().startswith(b"content-length:")
            )
            assert await asyncio.wait_for(reader.readexactly(length), 10) == seeded.oci.manifest
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert front_answers == [path, path]
