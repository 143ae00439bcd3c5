"""Settings: one frozen value, built at start-up from defaults < TOML file < MIRROR_* env < flags.

Every value is validated here so a bad option stops start-up with one line naming it, instead of
failing on the first request that happens to need it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yarl import URL

DOCKER_HUB = "https://registry-1.docker.io"


class ConfigError(Exception):
    """A setting has a bad value; the message names the option."""


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Where the mirror pulls from and how it talks to that registry."""

    url: str = DOCKER_HUB
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 10.0
    # Time allowed between two reads of an upstream body; a hung upstream fails after this.
    read_timeout: float = 30.0

    def __repr__(self) -> str:
        # Never let the password reach a log line or a traceback.
        secret = "***" if self.password else None
        return f"UpstreamSettings(url={self.url!r}, username={self.username!r}, password={secret})"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `create_app` needs; passed explicitly, never read from globals."""

    cache_dir: Path = Path("cache")
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    host: str = "0.0.0.0"
    port: int = 5000
    tag_ttl: float = 300.0
    redis_url: str | None = None
    redis_prefix: str = "mirror:"
    workers: int = 1

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


# option name -> environment variable; the option names are also the TOML keys.
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
    config_file = config_file or env.get("MIRROR_CONFIG")
    if config_file:
        raw.update(_read_toml(config_file))
    for option, var in ENV_VARS.items():
        if var in env:
            raw[option] = env[var]
    raw.update({k: v for k, v in flags.items() if v is not None})
    return _build(raw)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config: {path} is not valid TOML: {e}") from None
    flat: dict[str, Any] = {}
    auth = data.pop("upstream_auth", None)
    if auth is not None:
        if not isinstance(auth, dict):
            raise ConfigError("upstream_auth: must be a table")
        for key in ("username", "password", "password_env"):
            if key in auth:
                flat[f"upstream_{key}"] = auth.pop(key)
        if auth:
            raise ConfigError(f"upstream_auth.{next(iter(auth))}: unknown option")
    for key, value in data.items():
        if key not in ENV_VARS:
            raise ConfigError(f"{key}: unknown option in {path}")
        flat[key] = value
    return flat


def _build(raw: Mapping[str, Any]) -> Settings:
    settings = Settings()
    upstream = settings.upstream
    if "listen" in raw:
        host, port = parse_listen(raw["listen"])
        settings = replace(settings, host=host, port=port)
    if "upstream" in raw:
        upstream = replace(upstream, url=parse_upstream_url(raw["upstream"]))
    if "cache_dir" in raw:
        value = str(raw["cache_dir"])
        if not value or "\0" in value:
            raise ConfigError("--cache-dir: must be a directory path")
        settings = replace(settings, cache_dir=Path(value))
    if "tag_ttl" in raw:
        settings = replace(settings, tag_ttl=_seconds("--tag-ttl", raw["tag_ttl"], allow_zero=True))
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
        settings = replace(settings, workers=_count("--workers", raw["workers"], 1, 64))
    if "upstream_username" in raw:
        upstream = replace(upstream, username=str(raw["upstream_username"]) or None)
    if "upstream_password" in raw:
        upstream = replace(upstream, password=str(raw["upstream_password"]) or None)
    if "upstream_password_env" in raw:
        var = str(raw["upstream_password_env"])
        if var not in os.environ:
            raise ConfigError(f"upstream_auth.password_env: environment variable {var} is not set")
        upstream = replace(upstream, password=os.environ[var])
    if "connect_timeout" in raw:
        connect = _seconds("connect_timeout", raw["connect_timeout"])
        upstream = replace(upstream, connect_timeout=connect)
    if "read_timeout" in raw:
        upstream = replace(upstream, read_timeout=_seconds("read_timeout", raw["read_timeout"]))
    if upstream.password and not upstream.username:
        raise ConfigError("upstream_username: required when a password is set")
    return replace(settings, upstream=upstream)


def parse_listen(value: Any) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `:PORT` for all interfaces)."""
    text = str(value)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen: {text!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def parse_upstream_url(value: Any) -> str:
    text = str(value).rstrip("/")
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ConfigError(f"--upstream: {text!r} is not an http(s):// registry URL")
    return text


def _count(flag: str, value: Any, low: int, high: int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{flag}: {value!r} is not a whole number from {low} to {high}")
    return int(text)


def _seconds(flag: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: {value!r} is not a number of seconds") from None
    if seconds != seconds or seconds < 0 or (seconds == 0 and not allow_zero) or seconds > 1e9:
        raise ConfigError(f"{flag}: {value!r} is out of range")
    return seconds
