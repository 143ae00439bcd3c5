"""What the front reads itself, and what it leaves to aiohttp's parser."""

from __future__ import annotations

import pytest

from mirror.api.request_head import KNOWN_HEAD, KNOWN_HEADS, HeadReader, RequestHead, parse

PATH = "/v2/library/alpine/manifests/3.20"


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("latin-1")


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
    )
    assert parsed.key == (PATH, "docker.io", parsed.accept)


def test_head_requests_digests_and_close_are_read() -> None:
    """HEAD, a digest reference, no fields at all, and `Connection: close`."""
    digest = "sha256:" + "ab" * 32
    assert parse(head(f"HEAD /v2/a/b/manifests/{digest} HTTP/1.1")) == RequestHead(
        "HEAD", f"/v2/a/b/manifests/{digest}", "", "", close=False
    )
    closing = parse(head(f"GET {PATH} HTTP/1.1", "Connection: Close"))
    assert closing is not None and closing.close


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
        ("", f"GET {PATH} HTTP/1.1"),
    ],
)
def test_anything_less_plain_is_left_to_aiohttp(lines: tuple[str, ...]) -> None:
    """Another method or version, a path a decoder or normaliser could read otherwise, another
    query, a body, an upgrade, an expectation, an unusual field: not read here."""
    assert parse(head(*lines)) is None


def test_a_head_reader_reads_as_parse_does_and_remembers_within_its_bound() -> None:
    """The same answers as `parse`, a head read twice costs one reading, long heads and what
    is not plain are not kept, and no more than KNOWN_HEADS are."""
    reader = HeadReader()
    plain = head(f"GET {PATH} HTTP/1.1", "Accept: a")
    assert reader.read(plain) == parse(plain)
    assert reader.read(plain) is reader.read(plain)
    assert reader.read(head(f"POST {PATH} HTTP/1.1")) is None
    long = head(f"GET {PATH} HTTP/1.1", "X: " + "y" * KNOWN_HEAD)
    assert reader.read(long) == parse(long)
    assert len(reader) == 1
    for n in range(2 * KNOWN_HEADS):
        assert reader.read(head(f"GET /v2/a/manifests/{n} HTTP/1.1")) is not None
        assert len(reader) <= KNOWN_HEADS
