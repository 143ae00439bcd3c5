"""Numbers an upstream sends in headers, parsed so that no value can raise or pin a state.

Every parser takes what an upstream wrote, however broken, and returns a usable value or None.
Digits are matched as ASCII: `str.isdigit()` is true for '²' and '٣', which `int()` refuses or
reads differently, and a digit string longer than Python's conversion limit makes `int()` raise.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime

# Docker Hub documents its pull limit per 6 hours, the longest window any registry documents:
# no rate-limit state is kept longer than this, whatever an upstream says.
MAX_WINDOW = 21600.0
# What a 429 without a usable Retry-After keeps us off the upstream for.
DEFAULT_RETRY_AFTER = 60.0
# Any count past this is "plenty" (and safely converted).
_MAX_DIGITS = 15
_RATE = re.compile(r"\s*([0-9]+)\s*(?:;\s*w\s*=\s*([0-9]+))?", re.ASCII)
_DELAY = re.compile(r"\s*([0-9]+)\s*", re.ASCII)
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)", re.ASCII)


def _number(digits: str, ceiling: int) -> int:
    """ASCII digits as an int no bigger than `ceiling`, however many digits there are."""
    if len(digits) > _MAX_DIGITS:
        return ceiling
    return min(int(digits), ceiling)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Docker Hub's `RateLimit-Remaining: 20;w=21600`: pulls left, and the window if given."""

    count: int
    window: float | None


def rate_limit(value: str | None) -> RateLimit | None:
    """A `RateLimit-Limit` or `RateLimit-Remaining` value; None when it is not one."""
    match = _RATE.match(value or "")
    if match is None:
        return None
    window = match.group(2)
    return RateLimit(
        _number(match.group(1), 10**_MAX_DIGITS),
        float(_number(window, int(MAX_WINDOW))) if window is not None else None,
    )


def clamp_window(seconds: float) -> float:
    """A wait of at least one second and at most `MAX_WINDOW`."""
    return min(max(seconds, 1.0), MAX_WINDOW)


def retry_after(value: str | None, now: datetime | None = None) -> float:
    """Seconds to wait from a `Retry-After` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date),
    clamped to [1 s, MAX_WINDOW]; `DEFAULT_RETRY_AFTER` when absent or unreadable."""
    text = value or ""
    if (delay := _DELAY.fullmatch(text)) is not None:
        return clamp_window(_number(delay.group(1), int(MAX_WINDOW)))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return DEFAULT_RETRY_AFTER
    if when.tzinfo is None:  # "-0000" (RFC 5322): UTC, origin unknown
        when = when.replace(tzinfo=UTC)
    return clamp_window((when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class ContentRange:
    """`Content-Range: bytes first-last/size` (RFC 9110 §14.4); size None for `*`."""

    first: int
    last: int
    size: int | None


def content_range(value: str | None) -> ContentRange | None:
    """The byte range of a 206, or None when the header is absent or malformed."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    ceiling = 1 << 62
    first, last = _number(match.group(1), ceiling), _number(match.group(2), ceiling)
    size = None if match.group(3) == "*" else _number(match.group(3), ceiling)
    if last < first or (size is not None and last >= size):
        return None
    return ContentRange(first, last, size)
