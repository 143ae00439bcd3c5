"""What a stored manifest links to: child manifests (an index's `manifests`) and blobs (`config`,
`layers`, an artifact's `blobs`, schema 1 `fsLayers`).

Read leniently on purpose: this decides what the upkeep may delete, so every digest a manifest
names counts, whatever else about the document is odd. A `subject` is not followed: it is what
the manifest refers to, not a part of it (OCI distribution spec, "Listing Referrers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirror import jsondoc
from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class Links:
    manifests: frozenset[Digest]
    blobs: frozenset[Digest]


NONE = Links(frozenset(), frozenset())


def links(data: bytes) -> Links:
    try:
        document = jsondoc.parse(data)
    except ValueError:
        return NONE
    if not isinstance(document, dict):
        return NONE
    manifests = _digests(document.get("manifests"), "digest")
    blobs = _digests([document.get("config")], "digest")
    blobs |= _digests(document.get("layers"), "digest")
    blobs |= _digests(document.get("blobs"), "digest")
    blobs |= _digests(document.get("fsLayers"), "blobSum")
    return Links(frozenset(manifests), frozenset(blobs))


def _digests(descriptors: Any, field: str) -> set[Digest]:
    found = set()
    for descriptor in descriptors if isinstance(descriptors, list) else ():
        if isinstance(descriptor, dict) and isinstance(descriptor.get(field), str):
            try:
                found.add(Digest.parse(descriptor[field]))
            except DigestInvalid:
                continue
    return found
