"""The `[upstreams."<registry host>"]` tables: which registries the mirror serves, and how.

Only configured upstreams are ever contacted, so the table is also the mirror's allow-list.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yarl import URL

from mirror.config.values import (
    ConfigError,
    boolean,
    counter,
    patterns,
    seconds,
    seconds_or_zero,
    upstream_url,
)

DEFAULT_TAG_TTL = 300.0
# Without an `api_timeout`, an upstream exchange other than a blob body may take this many read
# timeouts in all: room for a slow answer, and a bound on one that trickles forever.
API_TIMEOUT_READS = 2
# What Docker's config.json calls Docker Hub.
_DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


@dataclass(frozen=True, slots=True)
class TtlRule:
    """Tags matching `pattern` (fnmatch) are fresh for `seconds`."""

    pattern: str
    seconds: float


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """One registry the mirror serves: where it is, how to log in, how long tags stay fresh."""

    name: str = "docker.io"
    url: str = "https://registry-1.docker.io"
    default: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    # Time allowed between two reads from the upstream; a hung upstream fails after this.
    read_timeout: float = 30.0
    # Time allowed for all of an exchange other than a blob body (manifests, revalidations,
    # tag lists, referrers, tokens), however steadily it trickles; None: `API_TIMEOUT_READS`
    # read timeouts. Blob bodies have none: a big layer on a slow link takes long.
    api_timeout: float | None = None
    max_connections: int = 100
    max_fills: int | None = None  # blob downloads at once from this registry; None: no own cap
    tag_ttl: float | None = None  # None: the global --tag-ttl (Settings fills it in)
    ttl_rules: tuple[TtlRule, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    rate_limit_reserve: int = 10
    breaker_failures: int = 3
    breaker_reset: float = 5.0
    # Let a public upstream redirect, or name a token realm, to loopback, link-local or
    # private addresses (upstream/targets.py).
    allow_private_targets: bool = False
    offline: bool = False  # --offline: never contacted; misses are 404 at once

    def ttl_for(self, tag: str) -> float:
        """How long `tag` stays fresh: the first matching rule, else the registry's TTL."""
        for rule in self.ttl_rules:
            if fnmatch.fnmatchcase(tag, rule.pattern):
                return rule.seconds
        return self.tag_ttl if self.tag_ttl is not None else DEFAULT_TAG_TTL

    @property
    def api_deadline(self) -> float:
        """Seconds an exchange other than a blob body may take before it fails as a timeout."""
        if self.api_timeout is not None:
            return self.api_timeout
        return API_TIMEOUT_READS * self.read_timeout

    def allows(self, repo: str) -> bool:
        if any(fnmatch.fnmatchcase(repo, p) for p in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(repo, p) for p in self.allow)


BUILTIN_UPSTREAMS = (
    UpstreamSettings(default=True),
    UpstreamSettings(name="ghcr.io", url="https://ghcr.io"),
    UpstreamSettings(name="quay.io", url="https://quay.io"),
    UpstreamSettings(name="registry.k8s.io", url="https://registry.k8s.io"),
    UpstreamSettings(name="gcr.io", url="https://gcr.io"),
)

# Registry host names as clients write them: DNS labels, an optional port (matched whole).
_HOST = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?"
)

# Each key of an `[upstreams."<host>"]` table and its validator; credentials are read apart.
_VALUES: dict[str, Callable[[str, Any], Any]] = {
    "connect_timeout": seconds,
    "read_timeout": seconds,
    "api_timeout": seconds,
    "breaker_reset": seconds,
    "tag_ttl": seconds_or_zero,
    "max_connections": counter(1, 10_000),
    "max_fills": counter(1, 10_000),
    "rate_limit_reserve": counter(0, 1_000_000),
    "breaker_failures": counter(1, 1000),
    "allow": patterns,
    "deny": patterns,
    "allow_private_targets": boolean,
}
_CREDENTIALS = {"username", "password", "password_env", "credentials_file"}
_KEYS = _VALUES.keys() | _CREDENTIALS | {"url", "default", "ttl"}


def parse_upstreams(
    tables: Any, shared: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[UpstreamSettings, ...]:
    """The configured upstreams (the built-ins when the file has none)."""
    if tables is None:
        return tuple(replace(u, **shared) for u in BUILTIN_UPSTREAMS)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError('upstreams: expected tables like [upstreams."docker.io"]')
    upstreams = [
        _parse_one(str(name), table, shared, env, single=len(tables) == 1)
        for name, table in tables.items()
    ]
    return tuple(upstreams)  # Settings checks there is exactly one default


def _parse_one(
    name: str, table: Any, shared: Mapping[str, Any], env: Mapping[str, str], *, single: bool
) -> UpstreamSettings:
    where = f"upstreams.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    if len(name) > 255 or not _HOST.fullmatch(name):
        raise ConfigError(f"{where}: the key must be a registry host like ghcr.io")
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"{where}.{key}: unknown option")
    if "url" not in table:
        raise ConfigError(f"{where}.url: required")
    values: dict[str, Any] = {
        **shared,
        "name": name,
        "url": upstream_url(f"{where}.url", table["url"]),
    }
    default = table.get("default", single)
    if not isinstance(default, bool):
        raise ConfigError(f"{where}.default: must be true or false")
    values["default"] = default
    for key in _VALUES.keys() & table.keys():
        values[key] = _VALUES[key](f"{where}.{key}", table[key])
    if "ttl" in table:
        values["ttl_rules"] = _ttl_rules(f"{where}.ttl", table["ttl"])
    values.update(_credentials(where, name, table, env))
    return UpstreamSettings(**values)


def _ttl_rules(option: str, value: Any) -> tuple[TtlRule, ...]:
    if not isinstance(value, list):
        raise ConfigError(f'{option}: expected a list like [{{ tags = "latest", seconds = 60 }}]')
    rules = []
    for rule in value:
        if not isinstance(rule, dict):
            raise ConfigError(
                f'{option}: each rule is a table like {{ tags = "v*", seconds = 60 }}'
            )
        if extra := sorted(rule.keys() - {"tags", "seconds"}):
            raise ConfigError(f"{option}.{extra[0]}: unknown option (a rule has tags and seconds)")
        if set(rule) != {"tags", "seconds"}:
            raise ConfigError(f"{option}: each rule needs both tags and seconds")
        rules.append(TtlRule(str(rule["tags"]), seconds(option, rule["seconds"], allow_zero=True)))
    return tuple(rules)


def _credentials(
    where: str, name: str, table: Mapping[str, Any], env: Mapping[str, str]
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if "credentials_file" in table:
        found.update(
            _from_docker_config(f"{where}.credentials_file", table["credentials_file"], name)
        )
    if "username" in table:
        found["username"] = str(table["username"])
    if "password" in table:
        found["password"] = str(table["password"])
    if "password_env" in table:
        var = str(table["password_env"])
        if var not in env:
            raise ConfigError(f"{where}.password_env: environment variable {var} is not set")
        found["password"] = env[var]
    return found


def _from_docker_config(option: str, path_value: Any, name: str) -> dict[str, str]:
    """`auths` of a Docker config.json; credential helpers are not run."""
    path = Path(os.path.expanduser(str(path_value)))
    try:
        auths = json.loads(path.read_bytes()).get("auths", {})
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{option}: cannot read {path}: {e}") from None
    keys = _DOCKER_HUB_AUTH_KEYS if name == "docker.io" else (name, f"https://{name}")
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        host = URL(key).host if "://" in key else key
        if (key in keys or host in keys) and isinstance(entry, dict):
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise ConfigError(
                        f"{option}: the auth of {key} is not base64 user:password"
                    ) from None
                return {"username": user, "password": password}
            if entry.get("username"):
                return {
                    "username": str(entry["username"]),
                    "password": str(entry.get("password", "")),
                }
    raise ConfigError(f"{option}: {path} has no credentials for {name}")
