"""What part of a blob a request asks for: `Range`, `If-Range` and `If-None-Match` (RFC 9110).

Blobs are named by their digest, so the digest is their one strong validator: it is the ETag of
every blob answer, as distribution sends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.errors import RangeInvalid

# RFC 9110 §14.1.1: int-range ("first-[last]") or suffix-range ("-length"); DIGIT is ASCII.
_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")
# Longer numbers only mean "past any blob"; int() of thousands of digits is slow, then refused.
_MAX_DIGITS = 18


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes [start, end) of a blob of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def requested_range(
    method: str, range_header: str | None, if_range: str | None, etag: str, size: int | None
) -> ByteRange | None:
    """The one range to answer with 206, or None for the whole blob with 200.

    Raises RangeInvalid (416) for a bytes range that cannot be satisfied. The whole blob is the
    answer to what RFC 9110 §14.2 says to ignore: a method other than GET, a range unit other
    than bytes, an `If-Range` that does not match (§13.1.5), and here also several ranges
    (podman's partial pulls accept a whole blob, not a 416) and an empty blob (as Go's
    `http.ServeContent`, which distribution serves with, does).
    """
    if method != "GET" or not range_header or size is None:
        return None
    if if_range is not None and if_range.strip() != etag:
        return None
    unit, equals, spec = range_header.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in spec or size == 0:
        return None
    match = _BYTE_RANGE.fullmatch(spec.strip(" \t"))
    if match is None or match.group(1) == match.group(2) == "":
        raise _unsatisfiable(size)
    first, last = match.groups()
    if not first:  # the last `last` bytes; a zero-length suffix selects nothing
        length = _number(last)
        if length == 0:
            raise _unsatisfiable(size)
        return ByteRange(max(0, size - length), size, size)
    start = _number(first)
    end = size if not last else _number(last) + 1
    if start >= size or end <= start:
        raise _unsatisfiable(size)
    return ByteRange(start, min(end, size), size)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names this blob (weak comparison, RFC 9110 §13.1.2); as
    distribution does, an unquoted digest counts too."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/")
        if tag == etag or f'"{tag}"' == etag:
            return True
    return False


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"  # leading zeros are allowed, and mean nothing
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _unsatisfiable(size: int) -> RangeInvalid:
    # RFC 9110 §15.5.17: a 416 names the current length.
    return RangeInvalid(
        "requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
    )
