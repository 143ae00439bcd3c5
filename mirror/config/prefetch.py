"""The `[prefetch]` table: images a running server keeps in its cache, refreshed on a schedule.

```toml
[prefetch]
refs = ["alpine:3.20", "ghcr.io/org/app:1"]
interval = 3600          # seconds between refreshes
platform = "linux/amd64" # or "all" (the default)
```
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mirror.config.values import ConfigError, seconds
from mirror.oci.platform import InvalidPlatform, Platform, parse_platform
from mirror.oci.reference import ImageReference, InvalidReference, parse_reference

DEFAULT_INTERVAL = 3600.0
# Each round asks the upstream about every image: rounds back to back would spend an upstream's
# pull limit and fill the log for nothing.
MIN_INTERVAL = 60.0
_KEYS = {"refs", "interval", "platform"}


@dataclass(frozen=True, slots=True)
class PrefetchSettings:
    refs: tuple[ImageReference, ...]
    interval: float = DEFAULT_INTERVAL
    platform: Platform | None = None  # None: every platform of an index


def parse_prefetch(table: Any, registries: Collection[str]) -> PrefetchSettings:
    """Validate the table; every reference must parse and name a mirrored registry."""
    if not isinstance(table, dict):
        raise ConfigError("prefetch: must be a table like [prefetch] refs = [...]")
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"prefetch.{key}: unknown option (expected refs, interval, platform)")
    texts = table.get("refs")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ConfigError('prefetch.refs: expected a list of image references like ["alpine:3.20"]')
    refs = []
    for n, text in enumerate(texts):
        try:
            reference = parse_reference(text)
        except InvalidReference as e:
            raise ConfigError(f"prefetch.refs[{n}]: {e}") from None
        if reference.registry not in registries:
            raise ConfigError(
                f"prefetch.refs[{n}]: {reference.registry} is not a registry this mirror serves"
            )
        refs.append(reference)
    interval = seconds("prefetch.interval", table.get("interval", DEFAULT_INTERVAL))
    if interval < MIN_INTERVAL:
        raise ConfigError(f"prefetch.interval: {interval:g} s is less than {MIN_INTERVAL:g}")
    platform = None
    platform_text = str(table.get("platform", "all"))
    if platform_text.lower() != "all":
        try:
            platform = parse_platform(platform_text)
        except InvalidPlatform as e:
            raise ConfigError(f"prefetch.platform: {e}") from None
    return PrefetchSettings(tuple(refs), interval, platform)
