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


class PaginationNumberInvalid(MirrorError):
    code, status = "PAGINATION_NUMBER_INVALID", 400


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


class Unauthorized(MirrorError):
    """No login, or a wrong one: the challenge tells the client to send Basic credentials
    (RFC 7617), which docker, podman, skopeo and containerd all answer."""

    code, status = "UNAUTHORIZED", 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Basic realm="mirror"'})


class Unsupported(MirrorError):
    """A method the mirror does not take there; RFC 9110 §15.5.6 has a 405 name the methods it
    does, and what a mirror serves, it serves read-only."""

    code, status = "UNSUPPORTED", 405

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Allow": "GET, HEAD"})


class BadRequest(MirrorError):
    """A request that is not valid HTTP/1.1, refused before any route sees it."""

    code, status = "UNSUPPORTED", 400


class TooManyRequests(MirrorError):
    code, status = "TOOMANYREQUESTS", 429


def out_of_descriptors(error: OSError) -> bool:
    """The process (EMFILE) or the system (ENFILE) has no file descriptor left: a condition
    that passes as other requests finish, answered with Busy rather than a failure."""
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


class OfflineMiss(UpstreamError):
    """`--offline` and not cached: the upstream is never asked.

    An `UpstreamError`, so a cached tag is served stale as when the upstream is down; without one
    the client gets the 404 of the kind it asked for (the subclasses below), at once."""

    code, status = "NAME_UNKNOWN", 404


class OfflineManifestUnknown(OfflineMiss, ManifestUnknown):
    code, status = "MANIFEST_UNKNOWN", 404


class OfflineBlobUnknown(OfflineMiss, BlobUnknown):
    code, status = "BLOB_UNKNOWN", 404


class OfflineNameUnknown(OfflineMiss, NameUnknown):
    code, status = "NAME_UNKNOWN", 404


def offline_miss(not_found: type[MirrorError], message: str) -> OfflineMiss:
    """The offline form of an upstream's "not found" of this kind."""
    offline: dict[type[MirrorError], type[OfflineMiss]] = {
        ManifestUnknown: OfflineManifestUnknown,
        BlobUnknown: OfflineBlobUnknown,
    }
    return offline.get(not_found, OfflineNameUnknown)(message)


def error_body(errors: list[MirrorError]) -> dict[str, object]:
    return {"errors": [{"code": e.code, "message": e.message, "detail": e.detail} for e in errors]}


class Busy(MirrorError):
    """The mirror is at one of its limits (concurrent downloads, descriptors, disk): try later."""

    code, status = "UNAVAILABLE", 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageUnavailable(MirrorError):
    """The object store that keeps the cache's content cannot be reached (or refuses): what is
    not on the local disk cannot be served until it answers again."""

    code, status = "UNAVAILABLE", 503

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class BlobUploadUnknown(MirrorError):
    """An upload session that does not exist (never did, finished, cancelled or expired)."""

    code, status = "BLOB_UPLOAD_UNKNOWN", 404


class BlobUploadInvalid(MirrorError):
    code, status = "BLOB_UPLOAD_INVALID", 400


class SizeInvalid(MirrorError):
    """A body longer or shorter than its `Content-Length` or `Content-Range` declared."""

    code, status = "SIZE_INVALID", 400


class ManifestBlobUnknown(MirrorError):
    """A pushed manifest names a blob or child manifest the repository does not hold."""

    code, status = "MANIFEST_BLOB_UNKNOWN", 400


class ManifestTooLarge(MirrorError):
    """distribution-spec "Pushing Manifests": 413 above the registry's limit."""

    code, status = "MANIFEST_INVALID", 413


class StorageFull(MirrorError):
    """The cache has no room for what a client pushes, or for a blob it would download (past
    `--max-size`, or past what its disk can give): RFC 4918 §11.5."""

    code, status = "UNAVAILABLE", 507
