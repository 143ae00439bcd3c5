"""What a pushed manifest is, checked before it is stored (OCI distribution-spec "Pushing
Manifests", OCI image-spec manifest.md and image-index.md).

The bytes must parse as one of the four manifest types a registry serves (OCI image manifest or
index, Docker schema 2 manifest or manifest list), its `mediaType` field (when it has one) must
be the request's `Content-Type` (without one, the manifest is an OCI one), and its descriptors
must be valid. The bytes are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirror.errors import ManifestInvalid, MirrorError
from mirror.oci.contents import Contents, InvalidManifest, contents_of, parse_manifest
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)

PUSHABLE = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST})
# distribution-spec: "Client and registry implementations SHOULD expect to be able to support
# manifest pushes of at least 4 megabytes."
MAX_MANIFEST = 4 << 20


@dataclass(frozen=True, slots=True)
class PushedManifest:
    media_type: str
    contents: Contents
    subject: Digest | None
    # The descriptor the referrers API lists for it, when it has a subject.
    referrer: dict[str, Any] | None


def inspect(data: bytes, digest: Digest, content_type: str | None) -> PushedManifest:
    """Check a pushed manifest; `MANIFEST_INVALID` saying why when it cannot be stored."""
    try:
        document = parse_manifest(data)
        contents = contents_of(document)
    except InvalidManifest as e:
        raise ManifestInvalid(f"not a manifest: {e}") from None
    declared = document.get("mediaType")
    sent = (content_type or "").split(";", 1)[0].strip().lower() or None
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if declared is not None and sent is not None and declared != sent:
        raise ManifestInvalid(f"Content-Type {sent} is not the manifest's mediaType {declared}")
    media_type = declared or sent
    if media_type not in PUSHABLE:
        raise ManifestInvalid(
            f"{media_type or 'no media type'} is not a manifest type this registry stores "
            f"(known: {', '.join(sorted(PUSHABLE))})"
        )
    if document.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    if not declared and media_type not in (OCI_MANIFEST, OCI_INDEX):
        # Docker's types always name themselves; a manifest that does not is an OCI one, and
        # is served as such (mirror/oci/contents.py) whoever pulls it, through any repository.
        raise ManifestInvalid(f"{media_type} needs the manifest's own mediaType field")
    if ("manifests" in document) != (media_type in INDEX_TYPES):
        kind = "an index" if media_type in INDEX_TYPES else "an image manifest"
        raise ManifestInvalid(f"{media_type} is {kind}, and the document is not one")
    subject = _subject(document.get("subject"))
    referrer = None
    if subject is not None:
        referrer = _referrer(document, media_type, digest, len(data), contents)
    return PushedManifest(media_type, contents, subject, referrer)


def _subject(value: Any) -> Digest | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        raise ManifestInvalid("subject is not a descriptor")
    try:
        return Digest.parse(value["digest"])
    except MirrorError as e:
        raise ManifestInvalid(f"subject: {e.message}") from None


def _referrer(
    document: dict[str, Any], media_type: str, digest: Digest, size: int, contents: Contents
) -> dict[str, Any]:
    """distribution-spec "Listing Referrers": the descriptor carries the manifest's
    `artifactType` (for an image manifest without one, its config's media type) and its
    annotations."""
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": str(digest), "size": size}
    artifact_type = document.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        artifact_type = None if contents.is_index else contents.blobs[0].media_type
    if artifact_type is not None:
        descriptor["artifactType"] = artifact_type
    annotations = document.get("annotations")
    if isinstance(annotations, dict) and annotations:
        descriptor["annotations"] = annotations
    return descriptor
