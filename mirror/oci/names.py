"""Repository names and tags, validated by the OCI distribution spec's grammar."""

from __future__ import annotations

import re

from mirror.errors import NameInvalid, TagInvalid

# distribution-spec "Pulling manifests": <name> and <reference> grammars.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# Matched with fullmatch: `$` would also accept a trailing newline.
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# Docker and distribution cap the whole name at 255 characters.
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    """Return the name if valid; the grammar has no `.`/`..` components, so it is path-safe."""
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name[:200]!r}")
    return name


def validate_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise TagInvalid(f"invalid tag {tag[:200]!r}")
    return tag
