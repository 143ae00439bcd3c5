"""What the front reads itself, and what it leaves to aiohttp's parser."""

from __future__ import annotations

import pytest

from mirror.api.request_head import (
    KNOWN_HEAD,
    KNOWN_HEADS,
    HeadReader,
    RequestHead,
    parse,
    plain_so_far,
)

PATH = "/v2/library/alpine/manifests/3.20"


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("latin-1")


def test_as_many_fields_as_aiohttp_takes_are_read() -> None:
    """128 fields: aiohttp's limit, and the front's (one more is aiohttp's to refuse)."""
    fields = ("Host: mirror", *(f"X-{n}: y" for n in range(127)))
    assert parse(head(f"GET {PATH} HTTP/1.1", *fields)) is not None


def test_a_plain_request_gives_its_key() -> None:
    """Method, path, ns and every Accept field (joined as aiohttp's getall gives them)."""
    parsed = parse(
        head(
            f"GET {PATH}?ns=docker.io HTTP/1.1",
            "Host: mirror",
            "accept: application/vnd.oci.image.index.v1+json ",
            "Accept:application/vnd.oci.image.manifest.v1+json",
            "User-Agent: containerd/2.0",
            "Content-Length: 0",
            "Connection: keep-alive",
        )
    )
    assert parsed == RequestHead(
        "GET",
        PATH,
        "docker.io",
        "application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json",
        close=False,
        conditional=False,
    )
    assert parsed.key == (PATH, "docker.io", parsed.accept)


def test_head_requests_digests_and_close_are_read() -> None:
    """HEAD, a digest reference, no fields at all, and `Connection: close`."""
    digest = "sha256:" + "ab" * 32
    assert parse(head(f"HEAD /v2/a/b/manifests/{digest} HTTP/1.1", "Host: m")) == RequestHead(
        "HEAD", f"/v2/a/b/manifests/{digest}", "", "", close=False, conditional=False
    )
    closing = parse(head(f"GET {PATH} HTTP/1.1", "Host: m", "Connection: Close"))
    assert closing is not None and closing.close
    conditional = parse(head(f"GET {PATH} HTTP/1.1", "Host: m", f'if-none-match: "{digest}"'))
    assert conditional is not None and conditional.conditional


@pytest.mark.parametrize(
    "lines",
    [
        (f"POST {PATH} HTTP/1.1",),
        (f"get {PATH} HTTP/1.1",),
        (f"GET {PATH} HTTP/1.0",),
        (f"GET {PATH} HTTP/2.0",),
        (f"GET  {PATH} HTTP/1.1",),
        (f"GET {PATH} HTTP/1.1 ",),
        ("GET /v2/library/%61lpine/manifests/3 HTTP/1.1",),
        ("GET /v2/library/../alpine/manifests/3 HTTP/1.1",),
        ("GET /v2/library/./alpine/manifests/3 HTTP/1.1",),
        ("GET /v2/library//alpine/manifests/3 HTTP/1.1",),
        ("GET /v2/library/alpine/manifests/3/ HTTP/1.1",),
        ("GET /v3/library/alpine/manifests/3 HTTP/1.1",),
        ("GET http://mirror/v2/a/manifests/3 HTTP/1.1",),
        (f"GET {PATH}?ns=docker.io&x=1 HTTP/1.1",),
        (f"GET {PATH}?n=docker.io HTTP/1.1",),
        (f"GET {PATH}?ns= HTTP/1.1",),
        (f"GET {PATH}?ns=a%20b HTTP/1.1",),
        (f"GET {PATH}# HTTP/1.1",),
        (f"GET {PATH} HTTP/1.1", "Content-Length: 5"),
        (f"GET {PATH} HTTP/1.1", "Content-Length: 00"),
        (f"GET {PATH} HTTP/1.1", "Transfer-Encoding: chunked"),
        (f"GET {PATH} HTTP/1.1", "Expect: 100-continue"),
        (f"GET {PATH} HTTP/1.1", "Upgrade: h2c", "Connection: Upgrade"),
        (f"GET {PATH} HTTP/1.1", "Connection: keep-alive, Upgrade"),
        (f"GET {PATH} HTTP/1.1", "TE: trailers"),
        (f"GET {PATH} HTTP/1.1", "Accept: a", " folded"),
        (f"GET {PATH} HTTP/1.1", "Accept : a"),
        (f"GET {PATH} HTTP/1.1", "Acc\u00e9pt: a"),
        (f"GET {PATH} HTTP/1.1", "Accept: caf\u00e9"),
        (f"GET {PATH} HTTP/1.1", "Accept: a\x00b"),
        (f"GET {PATH} HTTP/1.1", "Accept: a\rb"),
        (f"GET {PATH} HTTP/1.1", "Accept: a\nb"),
        (f"GET {PATH} HTTP/1.1", "no colon"),
        (f"GET {PATH} HTTP/1.1", ""),
        (f"GET {PATH} HTTP/1.1", *(f"X-{n}: y" for n in range(128))),
        (f"GET {PATH} HTTP/1.1", "Host: again"),
        (f"GET {PATH} HTTP/1.1", "Content-Length: 0", "content-length: 0"),
        (f"GET {PATH} HTTP/1.1", "User-Agent: a", "User-Agent: b"),
        (f"GET {PATH} HTTP/1.1", "Proxy-Connection: close"),
        ("", f"GET {PATH} HTTP/1.1"),
    ],
)
def test_anything_less_plain_is_left_to_aiohttp(lines: tuple[str, ...]) -> None:
    """Another method or version, a path a decoder or normaliser could read otherwise, another
    query, a body, an upgrade, an expectation, an unusual field, a field aiohttp refuses twice
    (each with the `Host` a plain request has): not read here."""
    assert parse(head(lines[0], "Host: mirror", *lines[1:])) is None


def test_a_request_without_a_host_is_left_to_aiohttp() -> None:
    """aiohttp refuses an HTTP/1.1 request with no `Host` (RFC 9112 §3.2)."""
    assert parse(head(f"GET {PATH} HTTP/1.1", "Accept: a")) is None
    assert parse(head(f"GET {PATH} HTTP/1.1", "Accept: a", "Host: m")) is not None


def test_a_head_reader_reads_as_parse_does_and_remembers_within_its_bound() -> None:
    """The same answers as `parse`, a head read twice costs one reading, long heads and what
    is not plain are not kept, and no more than KNOWN_HEADS are."""
    reader = HeadReader()
    plain = head(f"GET {PATH} HTTP/1.1", "Host: m", "Accept: a")
    assert reader.read(plain) == parse(plain)
    assert reader.read(plain) is reader.read(plain)
    assert reader.read(head(f"POST {PATH} HTTP/1.1")) is None
    long = head(f"GET {PATH} HTTP/1.1", "X: " + "y" * KNOWN_HEAD)
    assert reader.read(long) == parse(long)
    assert len(reader) == 1
    for n in range(2 * KNOWN_HEADS):
        assert reader.read(head(f"GET /v2/a/manifests/{n} HTTP/1.1", "Host: m")) is not None
        assert len(reader) <= KNOWN_HEADS


@pytest.mark.parametrize(
    "start", [b"G", b"GET /v", b"HEAD /v2/a/manifests/1 HT", b"GET /v2/a HTTP/1.1\r"]
)
def test_the_start_of_a_plain_head_is_waited_for(start: bytes) -> None:
    """An incomplete first line that may still become a plain request line."""
    assert plain_so_far(start) == 0


@pytest.mark.parametrize(
    "start",
    [
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello on the plain port
        b"POST /v2/",
        b"GET /v3",
        b"GET /v2/a\n",
        b"GET /v2/a\rX",
        b"PRI * HTTP/2.0\r\n",
        b"GET /v2/a HTTP/1.0\r\n",
        b"GET /v2/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
        b"GET /v2/a HTTP/1.1\r\nHost: x\r\n folded\r\n",
        b"GET /v2/a HTTP/1.1\r\nHost: x\nAccept: y",
        b"GET /v2/a HTTP/1.1\r\nHo\rst",
    ],
)
def test_a_start_that_cannot_become_plain_is_left_to_aiohttp_at_once(start: bytes) -> None:
    """aiohttp refuses (or reads) these as soon as it sees them; the front does not wait for a
    blank line that may never come."""
    assert plain_so_far(start) is None


def test_what_was_found_plain_is_not_read_again() -> None:
    """The offset after the last whole line comes back, and reading on from it gives what
    reading from the start gives."""
    start = b"GET /v2/a/manifests/1 HTTP/1.1\r\nHost: mirror\r\nAccept: a"
    checked = plain_so_far(start)
    assert checked == start.index(b"Accept")
    longer = start + b"pplication/json\r\nUser-Agent: x"
    assert plain_so_far(longer, checked) == plain_so_far(longer) == longer.index(b"User-Agent")
    assert plain_so_far(longer + b"\r\nUpgrade: h2c\r\n", checked) is None
