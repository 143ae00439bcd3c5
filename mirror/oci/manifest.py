"""What a manifest or index refers to: the blobs and child manifests it names, with their sizes.

Read from the exact stored bytes; a manifest that does not parse refers to nothing (it is still
served as it is: the mirror never rejects what the upstream stores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache

from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class References:
    """Descriptors named by a manifest: blobs (config, layers, blobs) and child manifests."""

    blobs: dict[Digest, int] = field(default_factory=dict)
    manifests: dict[Digest, int] = field(default_factory=dict)


def references(data: bytes) -> References:
    try:
        doc = json.loads(data)
    except ValueError:
        return References()
    if not isinstance(doc, dict):
        return References()
    found = References()
    for descriptor in _list(doc.get("manifests")):
        _add(found.manifests, descriptor)
    _add(found.blobs, doc.get("config"))
    for key in ("layers", "blobs"):
        for descriptor in _list(doc.get(key)):
            _add(found.blobs, descriptor)
    return found


def media_type_of(data: bytes, fallback: str) -> str:
    """The manifest's own `mediaType` field where it has one (OCI image-spec: it SHOULD, and
    Docker's types always do), else what the upstream's Content-Type said."""
    try:
        doc = json.loads(data)
    except ValueError:
        return fallback
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    return media_type if isinstance(media_type, str) and media_type else fallback


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _add(into: dict[Digest, int], descriptor: Any) -> None:
    if not isinstance(descriptor, dict):
        return
    size = descriptor.get("size")
    digest = descriptor.get("digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return
    if not isinstance(digest, str):
        return
    try:
        into[Digest.parse(digest)] = size
    except DigestInvalid:
        return


class BlobSizes:
    """Blob sizes that manifests gave (descriptors carry them), so a fill knows how much to
    expect even when the upstream does not say, and refuses an upstream that says otherwise."""

    def __init__(self, entries: int = 100_000) -> None:
        self._sizes: LRUCache[Digest, int] = LRUCache(entries)

    def learn(self, manifest: bytes) -> None:
        self._sizes.update(references(manifest).blobs)

    def get(self, digest: Digest) -> int | None:
        return self._sizes.get(digest)
