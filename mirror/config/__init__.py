"""Settings: one frozen value, built at start-up from defaults < TOML file < MIRROR_* env < flags.

Every value is validated here so a bad option stops start-up with one line naming it, instead of
failing on the first request that happens to need it. The top-level options are listed once, in
`options.OPTIONS`; the `[upstreams]` tables are read by `upstreams`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mirror.config.access import AccessRule, parse_access
from mirror.config.local import LocalSettings, parse_local
from mirror.config.options import BY_KEY, NOT_IN_FILE, OPTIONS, Target
from mirror.config.prefetch import PrefetchSettings, parse_prefetch
from mirror.config.storage import S3Settings, StorageUrl, parse_storage, split_storage
from mirror.config.upstreams import (
    BUILTIN_UPSTREAMS,
    DEFAULT_TAG_TTL,
    TtlRule,
    UpstreamSettings,
    parse_upstreams,
)
from mirror.config.values import AddressRange, ConfigError, SizeLimit

__all__ = [
    "DOCKER_HUB",
    "ConfigError",
    "LocalSettings",
    "S3Settings",
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
    send_timeout: float = 60.0
    max_connections: int | None = None  # None: derived from the descriptor limit at start
    max_fills: int = 32
    fill_wait: float = 20.0
    prefetch: PrefetchSettings | None = None  # the `[prefetch]` table
    tls_cert: Path | None = None
    tls_key: Path | None = None
    htpasswd: Path | None = None
    access: tuple[AccessRule, ...] = ()
    shutdown_grace: float = 30.0
    local: tuple[LocalSettings, ...] = ()  # the `[local]` tables: namespaces that take pushes
    upload_expiry: float = 3600.0
    max_uploads: int = 16
    metrics: bool = True
    # Who may reach /metrics and the status page (health probes are open to all).
    admin_allow: tuple[AddressRange, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    admin_listen: tuple[str, int] | None = None  # (host, port): admin endpoints only there
    max_size: SizeLimit | None = None  # the cache's cap; None: it may grow
    min_free: SizeLimit | None = None  # free space to keep on the cache's file system
    protect_window: float = 3600.0  # content used this many seconds ago is never evicted
    pin: tuple[str, ...] = ()  # `registry/repo:tag` patterns whose images are never evicted
    peer_url: str | None = None  # this replica's URL for the others; None: no replica mode
    # What replicas show each other on the peer endpoint; never in a repr, so never logged.
    peer_secret: str | None = field(default=None, repr=False)
    storage: S3Settings | None = None  # a bucket behind the cache directory; None: the directory

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
        if self.tls_cert is not None and self.tls_key is None:
            raise ConfigError("--tls-key: required with --tls-cert")
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError("--tls-cert: required with --tls-key")
        if self.htpasswd is None:
            for i, rule in enumerate(self.access):
                if rule.users:
                    raise ConfigError(f"access[{i}].users: no --htpasswd is set to log users in")
        if self.local and self.htpasswd is None:
            raise ConfigError(
                f"local.{self.local[0].name}: local namespaces take pushes, and pushes need a "
                "login: set --htpasswd"
            )
        for namespace in self.local:
            if namespace.name in names:
                raise ConfigError(f"local.{namespace.name}: also configured as an upstream")
        if self.admin_listen == (self.host, self.port):
            raise ConfigError("--admin-listen: must differ from --listen")
        if self.peer_url is not None and self.redis_url is None:
            raise ConfigError(
                "--peer-url: replicas agree on who fetches through Redis: set --redis-url"
            )
        if self.peer_url is not None and self.peer_secret is None:
            raise ConfigError(
                "--peer-url: the replicas need a shared secret: set MIRROR_PEER_SECRET or "
                "--peer-secret-file"
            )

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
    prefetch: Any = None
    access: Any = None
    local: Any = None
    storage: dict[str, Any] | None = None
    config_file = config_file or env.get("MIRROR_CONFIG")
    if config_file:
        data = _read_toml(config_file)
        tables = data.pop("upstreams", None)
        prefetch = data.pop("prefetch", None)
        access = data.pop("access", None)
        local = data.pop("local", None)
        if "storage" in data:
            data["storage"], storage = split_storage(data["storage"])
            if data["storage"] is None:
                del data["storage"]
        for key in data:
            if key not in BY_KEY or key in NOT_IN_FILE:
                raise ConfigError(f"{key}: unknown option in {config_file}")
        raw.update(data)
    for option in OPTIONS:
        if option.env and option.env_var in env:
            raw[option.key] = env[option.env_var]
    raw.update({k: v for k, v in flags.items() if v is not None and k in BY_KEY})
    settings = _build(raw, tables, prefetch, env, parse_access(access), parse_local(local))
    return _with_storage(settings, raw, storage, env)


def _with_storage(
    settings: Settings, raw: Mapping[str, Any], table: dict[str, Any] | None, env: Mapping[str, str]
) -> Settings:
    """`--storage`: a directory is the cache directory; a bucket goes behind it."""
    url: StorageUrl | None = None
    if "storage" in raw:
        url = BY_KEY["storage"].parse(BY_KEY["storage"].label, raw["storage"])
    if url is not None and url.directory is not None:
        if "cache_dir" in raw and settings.cache_dir != url.directory:
            raise ConfigError("--storage: names another directory than --cache-dir")
        return replace(settings, cache_dir=url.directory)
    return replace(settings, storage=parse_storage(url, table, env))


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config: {path} is not valid TOML: it is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config: {path} is not valid TOML: {e}") from None


def _build(
    raw: Mapping[str, Any],
    tables: Any,
    prefetch: Any,
    env: Mapping[str, str],
    access: tuple[AccessRule, ...],
    local: tuple[LocalSettings, ...],
) -> Settings:
    fields: dict[str, Any] = {}
    every: dict[str, Any] = {}  # applied to every upstream, under its own table's values
    default: dict[str, Any] = {}  # applied to the default upstream over everything
    into = {Target.SETTINGS: fields, Target.EVERY_UPSTREAM: every, Target.DEFAULT_UPSTREAM: default}
    if "peer_secret" in raw and "peer_secret_file" in raw:
        raise ConfigError("--peer-secret-file: give the peer secret or its file, not both")
    for key, value in raw.items():
        option = BY_KEY[key]
        if key == "storage":
            continue  # resolved with the [storage] table, by _with_storage
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
    if prefetch is not None:
        fields["prefetch"] = parse_prefetch(prefetch, {u.name for u in upstreams})
    return Settings(upstreams=upstreams, access=access, local=local, **fields)
