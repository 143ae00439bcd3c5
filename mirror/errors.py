"""The error tree: one class per OCI error code, each carrying its HTTP status.

Code raises these; one middleware renders them as `{"errors":[{"code","message","detail"}]}`.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class MirrorError(Exception):
    """Base of every error a client may see."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500

    def __init__(
        self, message: str, *, detail: object = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}


class NameInvalid(MirrorError):
    code, status = "NAME_INVALID", 400


class TagInvalid(MirrorError):
    code, status = "TAG_INVALID", 400


class DigestInvalid(MirrorError):
    code, status = "DIGEST_INVALID", 400


class RangeInvalid(MirrorError):
    code, status = "RANGE_INVALID", 416


class NameUnknown(MirrorError):
    code, status = "NAME_UNKNOWN", 404


class ManifestUnknown(MirrorError):
    code, status = "MANIFEST_UNKNOWN", 404


class BlobUnknown(MirrorError):
    code, status = "BLOB_UNKNOWN", 404


class ManifestInvalid(MirrorError):
    code, status = "MANIFEST_INVALID", 400


class Denied(MirrorError):
    code, status = "DENIED", 403


class Unsupported(MirrorError):
    code, status = "UNSUPPORTED", 405


class TooManyRequests(MirrorError):
    code, status = "TOOMANYREQUESTS", 429


class Overloaded(MirrorError):
    """The mirror itself is out of something (connections, file descriptors): the request
    was fine and will succeed shortly, so the client is told when to retry."""

    code, status = "UNAVAILABLE", 503
    RETRY_AFTER: ClassVar[int] = 2

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(self.RETRY_AFTER)})


def out_of_descriptors(error: OSError) -> bool:
    """The process (EMFILE) or the system (ENFILE) has no file descriptor left: a condition
    that passes as other requests finish, answered with Overloaded rather than a failure."""
    return error.errno in (errno.EMFILE, errno.ENFILE)


class UpstreamError(MirrorError):
    """The upstream failed in a way that says nothing about the content: 5xx, refused, timed out.

    With a cached answer these are served from cache (stale-if-error); without, the client gets
    the status below.
    """

    code, status = "UNAVAILABLE", 502


class UpstreamUnavailable(UpstreamError):
    code, status = "UNAVAILABLE", 503


class UpstreamTimeout(UpstreamError):
    code, status = "UNAVAILABLE", 504


class UpstreamThrottled(UpstreamError, TooManyRequests):
    """A 429 from upstream: stale-if-error applies, otherwise the client sees TOOMANYREQUESTS."""

    code, status = "TOOMANYREQUESTS", 429


def error_body(errors: list[MirrorError]) -> dict[str, object]:
    return {"errors": [{"code": e.code, "message": e.message, "detail": e.detail} for e in errors]}
