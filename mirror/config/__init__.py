"""Settings: one frozen value, built at start-up from defaults < TOML file < MIRROR_* env < flags.

Every value is validated here so a bad option stops start-up with one line naming it, instead of
failing on the first request that happens to need it. The top-level options are listed once, in
`options.OPTIONS`; the `[upstreams]` tables are read by `upstreams`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mirror.config.options import BY_KEY, NOT_IN_FILE, OPTIONS, Target
from mirror.config.upstreams import (
    BUILTIN_UPSTREAMS,
    DEFAULT_TAG_TTL,
    TtlRule,
    UpstreamSettings,
    parse_upstreams,
)
from mirror.config.values import ConfigError, SizeLimit

__all__ = [
    "DOCKER_HUB",
    "ConfigError",
    "Settings",
    "SizeLimit",
    "TtlRule",
    "UpstreamSettings",
    "load_settings",
]

DOCKER_HUB = "https://registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `create_app` needs; passed explicitly, never read from globals.

    Per-upstream values that have a global default (the tag TTL) are resolved here, once, so
    the rest of the code asks the upstream's settings alone.
    """

    cache_dir: Path = Path("cache")
    upstreams: tuple[UpstreamSettings, ...] = BUILTIN_UPSTREAMS
    host: str = "0.0.0.0"
    port: int = 5000
    tag_ttl: float = DEFAULT_TAG_TTL
    redis_url: str | None = None
    redis_prefix: str = "mirror:"
    workers: int = 1
    max_size: SizeLimit | None = None  # the cache's cap; None: it may grow
    min_free: SizeLimit | None = None  # free space to keep on the cache's file system
    protect_window: float = 3600.0  # content used this many seconds ago is never evicted
    pin: tuple[str, ...] = ()  # `registry/repo:tag` patterns whose images are never evicted

    def __post_init__(self) -> None:
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ConfigError(f"upstreams: a registry is listed twice in {names}")
        defaults = [u.name for u in self.upstreams if u.default]
        if len(defaults) != 1:
            raise ConfigError(f"upstreams: exactly one needs default = true (found {defaults})")
        resolved = tuple(
            u if u.tag_ttl is not None else replace(u, tag_ttl=self.tag_ttl) for u in self.upstreams
        )
        object.__setattr__(self, "upstreams", resolved)

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def upstream(self) -> UpstreamSettings:
        """The default upstream: requests naming no registry go there."""
        return next(u for u in self.upstreams if u.default)


def load_settings(
    config_file: str | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers (file < env < flags) and validate every value."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    tables: Any = None
    config_file = config_file or env.get("MIRROR_CONFIG")
    if config_file:
        data = _read_toml(config_file)
        tables = data.pop("upstreams", None)
        for key in data:
            if key not in BY_KEY or key in NOT_IN_FILE:
                raise ConfigError(f"{key}: unknown option in {config_file}")
        raw.update(data)
    for option in OPTIONS:
        if option.env and option.env_var in env:
            raw[option.key] = env[option.env_var]
    raw.update({k: v for k, v in flags.items() if v is not None and k in BY_KEY})
    return _build(raw, tables, env)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config: {path} is not valid TOML: {e}") from None


def _build(raw: Mapping[str, Any], tables: Any, env: Mapping[str, str]) -> Settings:
    fields: dict[str, Any] = {}
    every: dict[str, Any] = {}  # applied to every upstream, under its own table's values
    default: dict[str, Any] = {}  # applied to the default upstream over everything
    into = {Target.SETTINGS: fields, Target.EVERY_UPSTREAM: every, Target.DEFAULT_UPSTREAM: default}
    for key, value in raw.items():
        option = BY_KEY[key]
        parsed = option.parse(option.label, value)
        if key == "listen":
            fields["host"], fields["port"] = parsed
        else:
            into[option.target][option.into] = parsed
    for secret in ("username", "password"):
        if secret in default:
            default[secret] = default[secret] or None
    upstreams = parse_upstreams(tables, every, env)
    upstreams = tuple(replace(u, **default) if u.default else u for u in upstreams)
    for upstream in upstreams:
        if upstream.password and not upstream.username:
            raise ConfigError(f"upstreams.{upstream.name}.username: required with a password")
    return Settings(upstreams=upstreams, **fields)
