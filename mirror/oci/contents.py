"""What a manifest refers to: the manifests of an index, the config and layers of an image.

Only the fields the OCI image spec and Docker schema 2 share are read (`manifests`, `config`,
`layers`: descriptors of media type, digest and size); the bytes themselves are never rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from mirror.errors import MirrorError
from mirror.oci.digest import Digest

# An index inside an index is allowed by the spec; deeper nesting is not an image.
MAX_INDEX_DEPTH = 3


class InvalidManifest(ValueError):
    """A manifest whose references cannot be read."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    """OCI image-spec descriptor.md: what a manifest says of the content it points to."""

    media_type: str
    digest: Digest
    size: int
    platform: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Contents:
    """An index has `manifests`; an image has `blobs` (its config, then its layers)."""

    manifests: tuple[Descriptor, ...]
    blobs: tuple[Descriptor, ...]
    media_type: str | None  # the document's own `mediaType` field, if it has one

    @property
    def is_index(self) -> bool:
        return not self.blobs


def read_contents(data: bytes) -> Contents:
    try:
        document = json.loads(data)
    except ValueError:
        raise InvalidManifest("the manifest is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidManifest("the manifest is not a JSON object")
    if document.get("schemaVersion") == 1:
        raise InvalidManifest("Docker schema 1 manifests are not supported")
    media_type = document.get("mediaType")
    if "manifests" in document:
        manifests = _descriptors(document["manifests"], "manifests")
        return Contents(manifests, (), media_type if isinstance(media_type, str) else None)
    if "config" not in document or "layers" not in document:
        raise InvalidManifest("the manifest has neither manifests nor config and layers")
    blobs = (_descriptor(document["config"], "config"), *_descriptors(document["layers"], "layers"))
    return Contents((), blobs, media_type if isinstance(media_type, str) else None)


def _descriptors(value: Any, field: str) -> tuple[Descriptor, ...]:
    if not isinstance(value, list):
        raise InvalidManifest(f"{field} is not a list")
    return tuple(_descriptor(item, f"{field}[{n}]") for n, item in enumerate(value))


def _descriptor(value: Any, field: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidManifest(f"{field} is not a descriptor")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidManifest(f"{field} has no mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidManifest(f"{field} has no valid size")
    try:
        parsed = Digest.parse(str(digest))
    except MirrorError as e:
        raise InvalidManifest(f"{field}: {e.message}") from None
    platform = value.get("platform")
    return Descriptor(media_type, parsed, size, platform if isinstance(platform, dict) else None)


def media_type_of(data: bytes, fallback: str) -> str:
    """The manifest's own `mediaType` field where it has one (OCI image-spec: it SHOULD, and
    Docker's types always do), else what the upstream's Content-Type said."""
    try:
        return read_contents(data).media_type or fallback
    except InvalidManifest:
        return fallback


class BlobSizes:
    """Blob sizes that manifests gave (descriptors carry them), so a fill knows how much to
    expect even when the upstream does not say, and refuses an upstream that says otherwise."""

    def __init__(self, entries: int = 100_000) -> None:
        self._sizes: LRUCache[Digest, int] = LRUCache(entries)

    def learn(self, manifest: bytes) -> None:
        try:
            blobs = read_contents(manifest).blobs
        except InvalidManifest:
            return
        self._sizes.update({blob.digest: blob.size for blob in blobs})

    def get(self, digest: Digest) -> int | None:
        return self._sizes.get(digest)
