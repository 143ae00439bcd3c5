"""Platforms (`linux/amd64`, `linux/arm64/v8`) and which entries of an index match one.

Matching follows containerd's `platforms` package where it matters for choosing images: the
common aliases of an architecture are the same architecture, and arm64 without a variant is v8.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PART = re.compile(r"^[a-z0-9_.-]{1,64}$")
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}
_DEFAULT_VARIANT = {"arm64": "v8"}


class InvalidPlatform(ValueError):
    """A platform that does not parse."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def matches(self, platform: Mapping[str, Any] | None) -> bool:
        """Whether an index entry's `platform` object is this platform (a variant asked for
        must match; none asked for matches any)."""
        if not platform:
            return False
        architecture = _normal_arch(str(platform.get("architecture", "")))
        if str(platform.get("os", "")) != self.os or architecture != self.architecture:
            return False
        if self.variant is None:
            return True
        variant = platform.get("variant") or _DEFAULT_VARIANT.get(architecture)
        return variant == self.variant


def describe(platform: Mapping[str, Any] | None) -> str:
    """An index entry's platform as `os/arch[/variant]`, for messages."""
    if not platform:
        return "unknown"
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(p) for p in parts if p) or "unknown"


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]`, lower case."""
    parts = text.strip().lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PART.match(p) for p in parts):
        raise InvalidPlatform(f"{text[:100]!r} is not a platform like linux/amd64")
    variant = parts[2] if len(parts) == 3 else None
    return Platform(parts[0], _normal_arch(parts[1]), variant)


def _normal_arch(architecture: str) -> str:
    return _ARCH_ALIASES.get(architecture, architecture)
