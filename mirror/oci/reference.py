"""Image references as docker writes them (`alpine`, `alpine:3.20`, `ghcr.io/org/app@sha256:…`).

The grammar and the normalisation are distribution's `reference` package: a first component is a
registry only if it has a `.` or a `:`, is `localhost`, or has capitals; otherwise the image is
on Docker Hub, where a one-component name lives under `library/` and no tag means `latest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.errors import MirrorError
from mirror.oci.digest import Digest
from mirror.oci.names import validate_name, validate_tag

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
# Docker's own spelling of Docker Hub in references.
_HUB_ALIASES = frozenset({"index.docker.io"})
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?$")
# name [":" tag] ["@" digest]; the name is checked apart, so it is anything without : or @
# after its last slash (a registry's port has its colon before the first slash).
_REFERENCE = re.compile(r"^((?:[^@/]*/)*[^:@/]+)(?::([^:@/]+))?(?:@([^@]+))?$")
MAX_LENGTH = 512


class InvalidReference(ValueError):
    """A reference that does not parse; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A fully qualified reference: the registry, the repository on it, a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None
    digest: Digest | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise `text` as `docker pull` would."""
    if not text:
        raise InvalidReference("an empty image reference")
    if len(text) > MAX_LENGTH or not (match := _REFERENCE.match(text)):
        raise InvalidReference(f"{text[:200]!r} is not a valid image reference")
    name, tag, digest_text = match.groups()
    registry, repository = _split_registry(name)
    if not _DOMAIN.match(registry):
        raise InvalidReference(f"{text!r}: {registry!r} is not a registry host")
    try:
        validate_name(repository.lower())
    except MirrorError as e:
        raise InvalidReference(f"{text!r}: {e.message}") from None
    if repository != repository.lower():
        raise InvalidReference(f"{text!r}: the repository name must be lowercase")
    try:
        if tag is not None:
            validate_tag(tag)
        digest = Digest.parse(digest_text) if digest_text is not None else None
    except MirrorError as e:
        raise InvalidReference(f"{text!r}: {e.message}") from None
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry, repository, tag, digest)


def _split_registry(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or (
        not any(c in first for c in ".:") and first != "localhost" and first == first.lower()
    ):
        return DOCKER_HUB, name
    return (DOCKER_HUB if first in _HUB_ALIASES else first), rest
