"""The front reads a request only as aiohttp's parsers (its C one and its Python one) read it:
whatever `parse` takes for a plain request, both take for the same request, with the same
method, path, `ns`, Accept fields, `If-None-Match` and connection handling, and no body."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from aiohttp.http_parser import HttpRequestParser, HttpRequestParserPy
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mirror.api.request_head import MAX_FIELDS, MAX_HEAD, RequestHead, parse

PARSERS = {"c": HttpRequestParser, "python": HttpRequestParserPy}

_NAMES = st.sampled_from(
    [
        "Host",
        "host",
        "HOST",
        "Accept",
        "accept",
        "Connection",
        "connection",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "Upgrade",
        "TE",
        "If-None-Match",
        "User-Agent",
        "Content-Type",
        "ETag",
        "Server",
        "Max-Forwards",
        "Content-Range",
        "Content-Location",
        "X-Any",
        "Keep-Alive",
        "Proxy-Connection",
        "Accept-Encoding",
        "Authorization",
    ]
) | st.text(alphabet="!#$%&'*+.^_`|~Az09-", min_size=1, max_size=6)
_VALUES = st.sampled_from(
    [
        "",
        "0",
        "00",
        "1",
        "close",
        "Close",
        "keep-alive",
        "close, keep-alive",
        "keep-alive, close",
        "upgrade",
        "h2c",
        "chunked",
        "100-continue",
        '"sha256:ab"',
        "*",
        "x",
        "mirror:5000",
        "application/json",
        " 0",
        "+0",
        "0 ",
        "-0",
        "a\tb",
        "a b",
    ]
) | st.text(alphabet=' \t!"#%,:;=AZaz09~\x7f', max_size=8)
_SEPARATORS = st.sampled_from([":", ": ", ":\t", ":  ", " :"])
_SEGMENTS = st.sampled_from(
    [
        "library",
        "alpine",
        "manifests",
        "blobs",
        "3.20",
        "sha256:" + "ab" * 32,
        "a-b_c",
        ".",
        "..",
        "",
        "%61",
        "a%2Fb",
        "~x",
        "a b",
        "a;b",
        "@",
        "v2",
        "x:y",
        "-",
        "_",
    ]
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Requests near the plain ones: each part plain or one step away from it."""
    method = draw(st.sampled_from(["GET", "HEAD", "get", "POST", "OPTIONS", "PRI"]))
    segments = draw(st.lists(_SEGMENTS, min_size=1, max_size=5))
    path = "/" + "/".join([draw(st.sampled_from(["v2", "v2", "V2", "v1"])), *segments])
    query = draw(
        st.sampled_from(["", "", "?ns=docker.io", "?ns=", "?ns=a&ns=b", "?x=1", "?ns=a%20b", "?"])
    )
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1"]))
    fields = draw(
        st.lists(st.tuples(_NAMES, _SEPARATORS, _VALUES), max_size=6).filter(
            lambda f: len(f) <= MAX_FIELDS
        )
    )
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("Host", ": ", "mirror"))
    lines = [f"{method} {path}{query} {version}", *(n + s + v for n, s, v in fields)]
    return "\r\n".join(lines).encode("latin-1")


def _read_by(parser: type[Any], head: bytes) -> tuple[Any, ...] | None:
    """What `parser` makes of the head, followed by the blank line; None when it refuses it."""
    loop = asyncio.new_event_loop()
    try:
        reader = parser(mock.Mock(), loop, 1 << 16, max_line_size=MAX_HEAD, max_field_size=MAX_HEAD)
        messages, upgraded, tail = reader.feed_data(head + b"\r\n\r\n")
    except Exception:  # any refusal: aiohttp answers it with a 400
        return None
    finally:
        loop.close()
    assert len(messages) == 1, head
    message, payload = messages[0]
    return (
        message.method,
        message.url.path,
        message.url.query.get("ns", ""),
        ",".join(message.headers.getall("Accept", ())),
        message.should_close,
        "If-None-Match" in message.headers,
        upgraded or message.upgrade,
        payload.is_eof(),
        tail,
    )


def _as_parsed(request: RequestHead) -> tuple[Any, ...]:
    return (
        request.method,
        request.path,
        request.ns,
        request.accept,
        request.close,
        request.conditional,
        False,  # no upgrade
        True,  # no body
        b"",  # nothing after the head
    )


@pytest.mark.parametrize("kind", sorted(PARSERS))
@given(head=heads())
@settings(max_examples=1500, deadline=None)
@example(head=b"GET /v2/a/manifests/b HTTP/1.1")  # no Host
@example(head=b"GET /v2/a/manifests/b HTTP/1.1\r\nHost: a\r\nhost: b")
@example(
    head=b"GET /v2/a/manifests/b HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0"
)
@example(
    head=b"GET /v2/a/manifests/b HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close"
)
@example(head=b"GET /v2/a HTTP/1.1\r\nHost: a\r\nProxy-Connection: close")
def test_what_the_front_reads_aiohttp_reads_alike(kind: str, head: bytes) -> None:
    request = parse(head)
    if request is not None:
        assert _read_by(PARSERS[kind], head) == _as_parsed(request), head
