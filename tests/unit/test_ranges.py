"""Which bytes of a blob a `Range` header selects (RFC 9110 §14), for a 2048-byte blob."""

from __future__ import annotations

import pytest

from mirror.api.ranges import ByteRange, etag_matches, requested_range
from mirror.errors import RangeInvalid

ETAG = '"sha256:' + "a" * 64 + '"'
SIZE = 2048


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=500-1499", (500, 1500)),
        ("bytes=500-", (500, 2048)),
        ("bytes=-500", (1548, 2048)),
        ("bytes=2000-5000", (2000, 2048)),
        ("bytes=-5000", (0, 2048)),
        ("bytes=0-0", (0, 1)),
        ("bytes = 0-9", (0, 10)),
        ("bytes=0-" + "9" * 5000, (0, 2048)),
        ("bytes=5-" + "0" * 20 + "9", (5, 10)),
        ("bytes=-" + "0" * 20 + "1", (2047, 2048)),
        ("bytes=" + "0" * 20 + "1-" + "0" * 20 + "2", (1, 3)),
    ],
)
def test_a_satisfiable_range_selects_its_bytes(header: str, expected: tuple[int, int]) -> None:
    """The conformance suite's cases, a clamped end, a suffix longer than the blob, and
    numbers with leading zeros (which mean nothing, however many)."""
    assert requested_range("GET", header, None, ETAG, SIZE) == ByteRange(*expected, SIZE)


@pytest.mark.parametrize(
    "header", ["bytes=500-0", "bytes=5000-10000", "bytes=-0", "bytes=-", "bytes=x-1", "bytes=²-3"]
)
def test_an_unsatisfiable_or_malformed_bytes_range_is_416(header: str) -> None:
    """No byte selected, or no range at all: 416 with the size in `Content-Range`."""
    with pytest.raises(RangeInvalid) as raised:
        requested_range("GET", header, None, ETAG, SIZE)
    assert raised.value.headers == {"Content-Range": f"bytes */{SIZE}"}


@pytest.mark.parametrize(
    ("method", "header", "if_range", "size"),
    [
        ("GET", None, None, SIZE),
        ("GET", "items=0-1", None, SIZE),
        ("GET", "bytes0-1", None, SIZE),
        ("GET", "bytes=0-1,5-6", None, SIZE),
        ("GET", "bytes=0-1", '"other"', SIZE),
        ("GET", "bytes=0-1", "Wed, 21 Oct 2015 07:28:00 GMT", SIZE),
        ("GET", "bytes=0-1", None, None),
        ("GET", "bytes=0-1", None, 0),
        ("HEAD", "bytes=-0", None, SIZE),
    ],
)
def test_what_rfc_9110_lets_a_server_ignore_gets_the_whole_blob(
    method: str, header: str | None, if_range: str | None, size: int | None
) -> None:
    """Other units, several ranges, a stale If-Range, an unknown or empty size, HEAD: 200."""
    assert requested_range(method, header, if_range, ETAG, size) is None


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (ETAG, True),
        (ETAG.strip('"'), True),
        ("W/" + ETAG, True),
        (f'"x", {ETAG}', True),
        ("*", True),
        ('"x"', False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match_compares_weakly(header: str | None, matches: bool) -> None:
    """Quoted, unquoted, weak, in a list, or `*`: each names the blob (RFC 9110 §13.1.2)."""
    assert etag_matches(header, ETAG) is matches
