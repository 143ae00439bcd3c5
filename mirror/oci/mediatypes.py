"""Manifest media types and the local Accept negotiation policy."""

from __future__ import annotations

import re
from collections.abc import Iterable

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
# OCI image-spec 1.1.0-rc1 and rc2 only, yet some registries still hold (and serve) it.
OCI_ARTIFACT_MANIFEST = "application/vnd.oci.artifact.manifest.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
# The types a manifest is served as: those of the OCI and Docker specs (distribution refuses
# every other, and a client reads the body by this type).
MANIFEST_TYPES = frozenset(
    {
        *INDEX_TYPES,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        DOCKER_SCHEMA1_SIGNED,
        DOCKER_SCHEMA1,
        OCI_ARTIFACT_MANIFEST,
    }
)
# RFC 6838 §4.2: `type/subtype`, each a restricted-name of at most 127 characters; the pattern of
# OCI image-spec schema/defs-descriptor.json.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
# What the mirror asks upstream for, so it caches what the tag really points to.
UPSTREAM_ACCEPT = ", ".join(
    (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED)
)


def is_media_type(value: str) -> bool:
    """A bare media type: no parameters, no whitespace or control characters, bounded length."""
    return _MEDIA_TYPE.fullmatch(value) is not None


def accepted_types(header_lines: Iterable[str]) -> frozenset[str] | None:
    """Merge every Accept line, drop parameters; None means "anything" (absent or `*/*`)."""
    types = set()
    for line in header_lines:
        for item in line.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type in ("*/*", "application/*"):
                return None
            if media_type:
                types.add(media_type)
    return frozenset(types) or None


def is_acceptable(media_type: str, accepted: frozenset[str] | None) -> bool:
    """Policy: serve the stored bytes as they are, or not at all (never convert).

    Like distribution, OCI manifests and every kind of index are served only to clients that
    accept them; a Docker schema2 manifest (and anything unrecognised) is served regardless,
    because old clients omit it from Accept and it is the one type every client can read.
    """
    if accepted is None or media_type in accepted:
        return True
    return media_type not in INDEX_TYPES and media_type != OCI_MANIFEST
