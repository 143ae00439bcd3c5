"""Where a fill reads its blob (`BlobSource`: the upstream registry, or another replica that
fetches the same blob), and the checks on what it answered: the size it announces, and a resumed
body that must be exactly the rest of the blob."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp

from mirror.errors import UpstreamError
from mirror.oci.digest import Digest
from mirror.upstream.headers import content_range


class Received(Protocol):
    def received(self, count: int) -> None:
        """Body bytes read from the upstream."""


class BlobSource(Protocol):
    """Where a fill reads its blob: the upstream registry, or what stands in for it (another
    replica that fetches the same blob: mirror/replicas)."""

    @property
    def name(self) -> str:
        """The upstream's name: download slots and logs count per upstream."""

    @property
    def stats(self) -> Received: ...

    @property
    def relayed(self) -> bool:
        """Whether the body opened last came from another replica. Such a body that ends
        before its first byte is no reason to give up, as one from the upstream is: that
        replica may have died, and opening the blob again reads it from whoever has it then."""

    def open_blob(
        self, repo: str, digest: Digest, offset: int = 0
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]: ...


def announced_size(resp: aiohttp.ClientResponse, name: str) -> int | None:
    """The blob's size, as its answer announces it. Never a size a manifest gave: anyone may
    publish a manifest naming any blob with any size, and the digest is what holds the bytes
    to account."""
    return _whole_blob(resp, name) if resp.status == 206 else resp.content_length


def _whole_blob(resp: aiohttp.ClientResponse, name: str) -> int:
    """The size of a blob sent as a 206 (RFC 9110 §15.3.7) to a request for all of it, which
    will do only if its `Content-Range` holds every byte."""
    answered = content_range(resp.headers.get("Content-Range"))
    size = answered.size if answered is not None else None
    if (
        answered is None
        or size is None
        or (answered.first, answered.last) != (0, size - 1)
        or resp.content_length not in (None, size)
    ):
        raise UpstreamError(f"{name} answered a request for a whole blob with part of it")
    return size


def check_resumed(resp: aiohttp.ClientResponse, offset: int, size: int | None) -> None:
    """A resumed body must be exactly the rest: a 200 means the upstream ignored the Range
    (but for a body asked for again from its start, which no Range asked for)."""
    if offset == 0 and resp.status == 200:
        if resp.content_length not in (None, size):
            raise UpstreamError("upstream changed the blob's size while resuming")
        return
    answered = content_range(resp.headers.get("Content-Range"))
    if resp.status != 206 or answered is None or answered.first != offset:
        raise UpstreamError("upstream cannot resume the download (Range not honoured)")
    if answered.size is not None and answered.size != size:
        raise UpstreamError("upstream changed the blob's size while resuming")
    if size is not None and answered.last != size - 1:
        raise UpstreamError("upstream resumed the download with less than the rest of it")
