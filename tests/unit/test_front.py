"""The front of a connection, driven byte by byte: what it answers, what it lends or gives to
aiohttp's handler, and how it paces a client that does not read."""

from __future__ import annotations

import asyncio
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.api.connections import ClientConnection, Connections
from mirror.api.front import MAX_AHEAD, FrontConnection
from mirror.api.ready import ReadyAnswers
from mirror.api.request_head import MAX_HEAD, HeadReader, RequestHead
from tests.support.clients import request_bytes as request

HOT = {f"/v2/hot/manifests/{n}" for n in range(4)}


def answer(path: str) -> bytes:
    return f"ANSWER {path}\n".encode()


class Ready:
    """Ready answers for the HOT paths, each a short line naming its path."""

    def write(self, head: RequestHead, transport: asyncio.WriteTransport) -> bool:
        if head.path not in HOT:
            return False
        transport.write(answer(head.path))
        return True


class Transport(asyncio.Transport):
    """A client's end, as the front sees it: what was written, whether reading is paused, and a
    write buffer that calls the protocol's flow control past `high_water` unsent bytes."""

    def __init__(self, high_water: int | None = None) -> None:
        super().__init__()
        self.protocol: asyncio.Protocol | None = None
        self.written = b""
        self.unsent = 0
        self.high_water = high_water
        self.writing_paused = False
        self.reading = True
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.written += bytes(data)
        self.unsent += len(data)
        if (
            self.high_water is not None
            and self.unsent > self.high_water
            and not self.writing_paused
        ):
            self.writing_paused = True
            assert self.protocol is not None
            self.protocol.pause_writing()

    def client_reads(self) -> None:
        self.unsent = 0
        if self.writing_paused:
            self.writing_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Handler:
    """aiohttp's handler, as far as the front uses it: what it was given."""

    def __init__(self) -> None:
        self.received = b""
        self.made = False
        self.paused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def force_close(self) -> None:
        self.closed = True


def front(
    transport: Transport, *, keepalive: float = 75.0, connections: Connections | None = None
) -> tuple[FrontConnection, Handler]:
    handler = Handler()
    connection = FrontConnection(
        cast(ReadyAnswers, Ready()),
        HeadReader(),
        lambda _: cast(ClientConnection, handler),
        connections or Connections(10),
        keepalive_timeout=keepalive,
    )
    transport.protocol = connection
    connection.connection_made(transport)
    return connection, handler


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_ready_requests_are_answered_and_others_lent_one_at_a_time() -> None:
    """Pipelined: ready answers go out at once; the first request without one goes to the
    handler alone, and what follows is answered once the handler has answered it."""
    transport = Transport()
    connection, handler = front(transport)
    cold = request("/v2/cold/blobs/sha256:" + "a" * 64)
    connection.data_received(
        request("/v2/hot/manifests/0") + cold + request("/v2/hot/manifests/1", "HEAD")
    )
    connection.data_received(request("/v2/hot/manifests/2"))
    assert transport.written == answer("/v2/hot/manifests/0")
    assert handler.received == cold
    connection.began()
    await settle()
    assert transport.written == answer("/v2/hot/manifests/0")
    connection.ended(keep_alive=True)
    await settle()
    assert transport.written == b"".join(answer(f"/v2/hot/manifests/{n}") for n in (0, 1, 2))
    assert handler.received == cold
    connection.data_received(request("/v2/hot/manifests/3"))
    assert transport.written.endswith(answer("/v2/hot/manifests/3"))


async def test_a_request_that_is_not_plain_gives_the_connection_with_every_unread_byte() -> None:
    """From the first request the front does not read, the handler gets every byte not
    answered, then all that comes, and keeps the connection after answering."""
    transport = Transport()
    connection, handler = front(transport)
    odd = b"GET /v2/hot/manifests/%30 HTTP/1.1\r\nHost: mirror\r\n\r\n"
    connection.data_received(request("/v2/hot/manifests/0") + odd + request("/v2/hot/manifests/1"))
    assert transport.written == answer("/v2/hot/manifests/0")
    assert handler.received == odd + request("/v2/hot/manifests/1")
    connection.began()
    connection.ended(keep_alive=True)
    await settle()
    connection.data_received(request("/v2/hot/manifests/2"))
    assert handler.received.endswith(request("/v2/hot/manifests/2"))
    assert transport.written == answer("/v2/hot/manifests/0")


async def test_heads_split_over_reads_are_put_together() -> None:
    """A request that arrives in pieces is answered once its head is whole."""
    transport = Transport()
    connection, handler = front(transport)
    whole = request("/v2/hot/manifests/0")
    for i in range(len(whole)):
        assert transport.written == b""
        connection.data_received(whole[i : i + 1])
    assert transport.written == answer("/v2/hot/manifests/0")
    assert not handler.made


async def test_bare_line_feeds_and_overlong_heads_go_to_aiohttp() -> None:
    """aiohttp reads a head with bare LF line ends, and refuses one too long: the front waits
    for neither."""
    lf = b"GET /v2/hot/manifests/0 HTTP/1.1\nHost: mirror\n"
    transport = Transport()
    connection, handler = front(transport)
    connection.data_received(lf)
    assert handler.received == lf and transport.written == b""
    long = b"GET /v2/hot/manifests/0 HTTP/1.1\r\nX: " + b"y" * MAX_HEAD
    transport = Transport()
    connection, handler = front(transport)
    connection.data_received(long)
    assert handler.received == long and transport.written == b""


async def test_a_client_that_does_not_read_is_not_read() -> None:
    """Past the transport's high-water mark the front stops answering and reading; when the
    client reads, it answers what it has and reads again."""
    one = len(answer("/v2/hot/manifests/0"))
    transport = Transport(high_water=3 * one)
    connection, handler = front(transport)
    connection.data_received(request("/v2/hot/manifests/0") * 100)
    assert transport.written == answer("/v2/hot/manifests/0") * 4
    assert not transport.reading
    for _ in range(25):  # four answers each time, the last ones filling the buffer again
        transport.client_reads()
    assert transport.written == answer("/v2/hot/manifests/0") * 100
    assert transport.reading
    assert not handler.made


async def test_what_comes_while_a_request_is_lent_is_read_ahead_only_so_far() -> None:
    """A client pipelining behind a lent request: past MAX_AHEAD bytes the front stops
    reading until the handler has answered."""
    transport = Transport()
    connection, handler = front(transport)
    connection.data_received(request("/v2/cold/manifests/0"))
    hot = request("/v2/hot/manifests/0")
    count = MAX_AHEAD // len(hot) + 2
    for _ in range(count):
        connection.data_received(hot)
    assert not transport.reading
    assert handler.received == request("/v2/cold/manifests/0")
    connection.began()
    connection.ended(keep_alive=True)
    await settle()
    assert transport.written == answer("/v2/hot/manifests/0") * count
    assert transport.reading


async def test_an_answer_that_closes_leaves_the_connection_to_the_handler() -> None:
    """A lent request answered with `Connection: close` (or cut): the front answers nothing
    after it."""
    transport = Transport()
    connection, handler = front(transport)
    connection.data_received(request("/v2/cold/manifests/0") + request("/v2/hot/manifests/0"))
    connection.began()
    connection.ended(keep_alive=False)
    await settle()
    assert transport.written == b""
    assert handler.received == request("/v2/cold/manifests/0")
    connection.data_received(request("/v2/hot/manifests/1"))
    assert handler.received.endswith(request("/v2/hot/manifests/1"))


async def test_connection_close_is_honoured_on_a_ready_answer() -> None:
    """`Connection: close`: answered, then closed; requests behind it are not answered."""
    transport = Transport()
    connection, _ = front(transport)
    connection.data_received(
        request("/v2/hot/manifests/0", close=True) + request("/v2/hot/manifests/1")
    )
    assert transport.written == answer("/v2/hot/manifests/0")
    assert transport.closed


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout() -> None:
    """Closed when nothing was answered for the timeout, and only when nothing is in
    progress; counted against the cap until then."""
    connections = Connections(10)
    transport = Transport()
    connection, _ = front(transport, keepalive=0.05, connections=connections)
    assert connections.count == 1
    await asyncio.sleep(0.2)
    assert transport.closed
    connection.connection_lost(None)
    assert connections.count == 0

    busy = Transport()
    connection, handler = front(busy, keepalive=0.05, connections=connections)
    connection.data_received(request("/v2/cold/blobs/sha256:" + "b" * 64))
    connection.began()
    await asyncio.sleep(0.2)
    assert not busy.closed and not handler.closed
    connection.ended(keep_alive=True)
    await asyncio.sleep(1.2)
    assert handler.closed  # closed through the handler, which now has a transport too


# Requests a client may send in a row: (bytes, whether the front answers it, whether it is plain).
REQUESTS = [
    (request("/v2/hot/manifests/0"), True, True),
    (request("/v2/hot/manifests/1", "HEAD", "Accept: a, b", "Content-Length: 0"), True, True),
    (request("/v2/cold/blobs/sha256:" + "c" * 64), False, True),
    (request("/v2/cold/manifests/1?ns=docker.io", "GET", "Accept: x"), False, True),
    (request("/v2/hot/manifests/0", "POST", "Content-Length: 3") + b"abc", False, False),
    (b"GET /v2/hot/manifests/%30 HTTP/1.1\r\n\r\n", False, False),
    (b"GET /v2/hot/manifests/0 HTTP/1.0\r\n\r\n", False, False),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False, False),
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=30),
)
def test_every_byte_is_answered_by_the_front_or_reaches_the_handler_once_in_order(
    requests: list[tuple[bytes, bool, bool]], cuts: list[int]
) -> None:
    """Whatever the requests and however the stream is cut into reads: the front answers the
    ready requests before the first that is not plain, and the handler gets every other byte,
    once, in order (the lent requests, then the whole rest from the first that is not plain)."""
    asyncio.run(_replay(requests, cuts))


async def _replay(requests: list[tuple[bytes, bool, bool]], cuts: list[int]) -> None:
    answered, handed = b"", b""
    for index, (raw, hot, plain) in enumerate(requests):
        if not plain:
            handed += b"".join(r for r, _, _ in requests[index:])
            break
        if hot:
            answered += answer(parse_path(raw))
        else:
            handed += raw
    stream = b"".join(r for r, _, _ in requests)
    transport = Transport()
    connection, handler = front(transport)
    seen = 0
    offset, turn = 0, 0
    while offset < len(stream):
        size = cuts[turn % len(cuts)]
        turn += 1
        assert transport.reading
        connection.data_received(stream[offset : offset + size])
        offset += size
        # The handler answers what it was given, as aiohttp would; the front may then lend
        # it the next request it holds.
        while len(handler.received) > seen:
            seen = len(handler.received)
            connection.began()
            connection.ended(keep_alive=True)
            await settle()
    assert transport.written == answered
    assert handler.received == handed


def parse_path(raw: bytes) -> str:
    return raw.split(b" ", 2)[1].decode()
