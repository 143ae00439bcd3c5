"""What a manifest refers to: the manifests of an index, the config and layers of an image.

Only the fields the OCI image spec and Docker schema 2 share are read (`manifests`, `config`,
`layers`: descriptors of media type, digest and size); the bytes themselves are never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirror import jsondoc
from mirror.errors import MirrorError
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    is_media_type,
)

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
    return contents_of(parse_manifest(data))


def parse_manifest(data: bytes) -> Any:
    """A manifest's JSON document (refused when nested past the parser's recursion limit)."""
    try:
        return jsondoc.parse(data)
    except ValueError:
        raise InvalidManifest("the manifest is not JSON") from None


def contents_of(document: Any) -> Contents:
    """What a manifest's parsed document names."""
    if not isinstance(document, dict):
        raise InvalidManifest("the manifest is not a JSON object")
    if document.get("schemaVersion") == 1:
        raise InvalidManifest("Docker schema 1 manifests are not supported")
    media_type = _declared_type(document)
    if "manifests" in document:
        manifests = _descriptors(document["manifests"], "manifests")
        return Contents(manifests, (), media_type)
    if "config" not in document or "layers" not in document:
        raise InvalidManifest("the manifest has neither manifests nor config and layers")
    blobs = (_descriptor(document["config"], "config"), *_descriptors(document["layers"], "layers"))
    return Contents((), blobs, media_type)


def _declared_type(document: dict[str, Any]) -> str | None:
    """The document's `mediaType`; an empty one is none (as distribution reads it)."""
    media_type = document.get("mediaType")
    if media_type is None or media_type == "":
        return None
    if not isinstance(media_type, str):
        raise InvalidManifest("mediaType is not a string")
    return media_type


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
    Docker's types always do), else what its shape makes it, as distribution reads it: schema 1
    (signed when it has signatures), an OCI index when it has `manifests`, else an OCI image
    manifest. Never its source's word for a JSON document: manifests are kept by digest, so
    the type the first answer gave would be every later pull's, through any repository, and
    anyone may publish the same bytes where a registry serves them as something else. Bytes
    that are not a JSON object go by their source's type (an upstream's Content-Type, a
    bundle's index entry); InvalidManifest when that is no manifest type (`served_type`)."""
    try:
        document = jsondoc.parse(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return served_type(fallback)
    return served_type(_declared_type(document) or _shape_type(document))


def _shape_type(document: dict[str, Any]) -> str:
    """The type of a document that names none, by what it holds."""
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in document else DOCKER_SCHEMA1
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def served_type(media_type: str) -> str:
    """`media_type` if a manifest may be served as it, else InvalidManifest.

    Every answer sends it as its Content-Type: a value with a line break would split the
    header (aiohttp refuses to send it), a long one bloats every answer, and one that is not a
    manifest type (text/html) has clients misread the bytes, and browsers render them."""
    if media_type in MANIFEST_TYPES:
        return media_type
    shown = repr(media_type[:64]) + ("..." if len(media_type) > 64 else "")
    if not is_media_type(media_type):
        raise InvalidManifest(f"media type {shown} is not a media type (RFC 6838)")
    raise InvalidManifest(f"media type {shown} is not a manifest type")
