"""The `[local."<name>"]` tables: namespaces that take pushes, served beside the mirrored
registries from the same store.

```toml
[local."registry.example.internal"]
default = true   # names with no ns= and no registry prefix go here, not to the default upstream
```

A local namespace is routed like an upstream (by `?ns=` and by a first path component naming it);
it is never contacted, it holds what clients push to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mirror.config.values import ConfigError, boolean

# Registry host names as clients write them: DNS labels, an optional port.
_HOST = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::\d{1,5})?"
)
_KEYS = {"default"}
# Names clients use for Docker Hub: a local namespace may not take them.
_RESERVED = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """One local namespace: its name as clients address it, and whether it is the default."""

    name: str
    default: bool = False


def parse_local(tables: Any) -> tuple[LocalSettings, ...]:
    """The `[local]` tables, validated; none when there are none."""
    if tables is None:
        return ()
    if not isinstance(tables, dict) or not tables:
        raise ConfigError('local: expected tables like [local."registry.example.internal"]')
    found = []
    for name, table in tables.items():
        where = f"local.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        if len(name) > 255 or not _HOST.fullmatch(name):
            raise ConfigError(f"{where}: the key must be a host-like name such as registry.local")
        if name in _RESERVED:
            raise ConfigError(f"{where}: {name} names Docker Hub; choose a name of your own")
        for key in table:
            if key not in _KEYS:
                raise ConfigError(f"{where}.{key}: unknown option (known: default)")
        found.append(LocalSettings(name, boolean(f"{where}.default", table.get("default", False))))
    defaults = [f"local.{n.name}" for n in found if n.default]
    if len(defaults) > 1:
        raise ConfigError(f"{defaults[1]}.default: only one local namespace may be the default")
    return tuple(found)
