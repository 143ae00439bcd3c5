"""Content digests (`algorithm:hex`), the names under which every manifest and blob is stored."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mirror.errors import DigestInvalid

# OCI image-spec descriptor.md: registered algorithms and their encodings. Only these two are
# accepted, so a digest can always be verified and always maps to a safe file name.
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
# Matched with fullmatch: `$` would also accept a trailing newline.
_DIGEST = re.compile(r"(sha256|sha512):([a-f0-9]+)")
# The general grammar (algorithm-component[+.-_ ...]:encoded); used to tell a digest from a tag.
_LOOKS_LIKE_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated digest; `str(d)` is the wire form."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST.fullmatch(text)
        if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
            raise DigestInvalid(f"invalid or unsupported digest {text[:200]!r}")
        return cls(match.group(1), match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def looks_like_digest(reference: str) -> bool:
    """A manifest reference with a colon is a digest (tags may not contain colons)."""
    return ":" in reference and bool(_LOOKS_LIKE_DIGEST.fullmatch(reference))
