"""Settings: one frozen value, built at start-up from defaults < TOML file < MIRROR_* env < flags.

Every value is validated here so a bad option stops start-up with one line naming it, instead of
failing on the first request that happens to need it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from yarl import URL

from mirror.config_values import ConfigError, count, seconds, upstream_url
from mirror.upstreams_config import BUILTIN_UPSTREAMS, TtlRule, UpstreamSettings, parse_upstreams

__all__ = ["ConfigError", "Settings", "TtlRule", "UpstreamSettings", "load_settings"]

DOCKER_HUB = "https://registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `create_app` needs; passed explicitly, never read from globals."""

    cache_dir: Path = Path("cache")
    upstreams: tuple[UpstreamSettings, ...] = BUILTIN_UPSTREAMS
    host: str = "0.0.0.0"
    port: int = 5000
    tag_ttl: float = 300.0
    redis_url: str | None = None
    redis_prefix: str = "mirror:"
    workers: int = 1

    def __post_init__(self) -> None:
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ConfigError(f"upstreams: a registry is listed twice in {names}")
        defaults = [u.name for u in self.upstreams if u.default]
        if len(defaults) != 1:
            raise ConfigError(f"upstreams: exactly one needs default = true (found {defaults})")

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def upstream(self) -> UpstreamSettings:
        """The default upstream: requests naming no registry go there."""
        return next(u for u in self.upstreams if u.default)


# option name -> environment variable; the option names are also the file's top-level keys.
ENV_VARS = {
    "listen": "MIRROR_LISTEN",
    "upstream": "MIRROR_UPSTREAM",
    "cache_dir": "MIRROR_CACHE_DIR",
    "tag_ttl": "MIRROR_TAG_TTL",
    "redis_url": "MIRROR_REDIS_URL",
    "redis_prefix": "MIRROR_REDIS_PREFIX",
    "workers": "MIRROR_WORKERS",
    "upstream_username": "MIRROR_UPSTREAM_USERNAME",
    "upstream_password": "MIRROR_UPSTREAM_PASSWORD",
    "connect_timeout": "MIRROR_CONNECT_TIMEOUT",
    "read_timeout": "MIRROR_READ_TIMEOUT",
}


def load_settings(
    config_file: str | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers (file < env < flags) and validate every value."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    tables: dict[str, Any] | None = None
    config_file = config_file or env.get("MIRROR_CONFIG")
    if config_file:
        data = _read_toml(config_file)
        tables = data.pop("upstreams", None)
        for key in data:
            if key not in ENV_VARS or key.startswith("upstream_"):
                raise ConfigError(f"{key}: unknown option in {config_file}")
        raw.update(data)
    for option, var in ENV_VARS.items():
        if var in env:
            raw[option] = env[var]
    raw.update({k: v for k, v in flags.items() if v is not None})
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
    settings = Settings()
    if "listen" in raw:
        host, port = parse_listen(raw["listen"])
        settings = replace(settings, host=host, port=port)
    if "cache_dir" in raw:
        value = str(raw["cache_dir"])
        if not value or "\0" in value:
            raise ConfigError("--cache-dir: must be a directory path")
        settings = replace(settings, cache_dir=Path(value))
    if "tag_ttl" in raw:
        settings = replace(settings, tag_ttl=seconds("--tag-ttl", raw["tag_ttl"], allow_zero=True))
    if raw.get("redis_url"):
        url = str(raw["redis_url"])
        if URL(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"--redis-url: {url!r} is not a redis:// URL")
        settings = replace(settings, redis_url=url)
    if "redis_prefix" in raw:
        prefix = str(raw["redis_prefix"])
        if not prefix or len(prefix) > 100 or any(c.isspace() for c in prefix):
            raise ConfigError(f"redis_prefix: {prefix!r} is not a usable key prefix")
        settings = replace(settings, redis_prefix=prefix)
    if "workers" in raw:
        settings = replace(settings, workers=count("--workers", raw["workers"], 1, 64))
    # Settings for every upstream (file tables override them), then the default's overrides.
    shared: dict[str, Any] = {}
    for option in ("connect_timeout", "read_timeout"):
        if option in raw:
            shared[option] = seconds(option, raw[option])
    upstreams = parse_upstreams(tables, shared, env)
    default: dict[str, Any] = {}
    if "upstream" in raw:
        default["url"] = upstream_url("--upstream", raw["upstream"])
    if "upstream_username" in raw:
        default["username"] = str(raw["upstream_username"]) or None
    if "upstream_password" in raw:
        default["password"] = str(raw["upstream_password"]) or None
    upstreams = tuple(replace(u, **default) if u.default else u for u in upstreams)
    for upstream in upstreams:
        if upstream.password and not upstream.username:
            raise ConfigError(f"upstreams.{upstream.name}.username: required with a password")
    return replace(settings, upstreams=upstreams)


def parse_listen(value: Any) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `:PORT` for all interfaces)."""
    text = str(value)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen: {text!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)
