"""The option table: every top-level setting once, with its validator and help.

From this table come the file's top-level keys, the `MIRROR_*` environment variables and the
command-line flags, so an option is added in one place. An option's `target` says where its
value goes: a `Settings` field, every upstream (a default their tables may override), or the
default upstream only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from mirror.config import values as v
from mirror.config.storage import storage_url


class Target(Enum):
    SETTINGS = "settings"
    EVERY_UPSTREAM = "every upstream"
    DEFAULT_UPSTREAM = "default upstream"


@dataclass(frozen=True, slots=True)
class Option:
    key: str  # the file's key; MIRROR_<KEY>; --<key with dashes>
    parse: Callable[[str, Any], Any]  # (name for messages, raw value) -> value
    help: str
    flag: bool = True  # whether there is a command-line flag
    env: bool = True  # whether there is an environment variable
    metavar: str | None = None
    target: Target = Target.SETTINGS
    field: str | None = None  # the field it sets, when not named like the key

    @property
    def env_var(self) -> str:
        return f"MIRROR_{self.key.upper()}"

    @property
    def flag_name(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def label(self) -> str:
        """How error messages name it: as a flag when it has one, else by its file key."""
        return self.flag_name if self.flag else self.key

    @property
    def into(self) -> str:
        return self.field or self.key


OPTIONS: tuple[Option, ...] = (
    Option("listen", v.listen_address, "where to serve, default 0.0.0.0:5000", metavar="HOST:PORT"),
    Option(
        "upstream",
        v.upstream_url,
        "URL of the default upstream, default https://registry-1.docker.io",
        metavar="URL",
        target=Target.DEFAULT_UPSTREAM,
        field="url",
    ),
    Option("cache_dir", v.directory, "where content is kept, default ./cache", metavar="DIR"),
    Option(
        "storage",
        storage_url,
        "keep content in s3://BUCKET/PREFIX, the cache directory in front; default the directory",
        metavar="URL",
    ),
    Option("tag_ttl", v.seconds_or_zero, "tag freshness, default 300", metavar="SECONDS"),
    Option("redis_url", v.redis_url, "share freshness via Redis", metavar="URL"),
    Option("redis_prefix", v.key_prefix, "prefix of every Redis key", flag=False),
    Option("workers", v.counter(1, 64), "processes serving one port, default 1", metavar="N"),
    Option("max_size", v.size, "cap on the cache: 50GiB, 1TB, 80%%; default none", metavar="SIZE"),
    Option("min_free", v.size, "free space to keep on its disk: 10GiB, 5%%", metavar="SIZE"),
    Option(
        "protect_window",
        v.seconds_or_zero,
        "content used this recently is never evicted, default 3600",
        metavar="SECONDS",
    ),
    Option("pin", v.patterns, "registry/repo:tag patterns never evicted", flag=False, env=False),
    Option(
        "send_timeout",
        v.seconds,
        "close a client connection that takes no data for this long, default 60",
        metavar="SECONDS",
    ),
    Option(
        "max_connections",
        v.counter(1, 1 << 20),
        "client connections per process, default from the descriptor limit",
        metavar="N",
    ),
    Option(
        "max_fills",
        v.counter(1, 10_000),
        "blob downloads one process runs at once, default 32; more wait their turn",
        metavar="N",
    ),
    Option(
        "fill_wait",
        v.seconds,
        "seconds a download may wait for its turn before the client gets 503, default 20",
        metavar="SECONDS",
    ),
    Option(
        "metrics",
        v.boolean,
        "count requests for /metrics and the status page, default true",
        flag=False,
    ),
    Option(
        "admin_allow",
        v.address_ranges,
        "address ranges that may reach /metrics and the status page, default loopback",
        metavar="CIDR,...",
    ),
    Option(
        "admin_listen",
        v.optional_listen_address,
        "serve /metrics and the status page only on this address",
        metavar="HOST:PORT",
    ),
    Option(
        "offline",
        v.boolean,
        "never contact an upstream: answer from the cache only",
        target=Target.EVERY_UPSTREAM,
    ),
    Option(
        "tls_cert",
        v.file_path,
        "serve HTTPS with this PEM certificate chain (re-read on SIGHUP); needs --tls-key",
        metavar="FILE",
    ),
    Option("tls_key", v.file_path, "the certificate's PEM private key", metavar="FILE"),
    Option(
        "htpasswd",
        v.file_path,
        "require a login from this htpasswd file (bcrypt entries, htpasswd -B)",
        metavar="FILE",
    ),
    Option(
        "shutdown_grace",
        v.seconds,
        "seconds responses in flight may take to finish on SIGTERM, default 30",
        metavar="SECONDS",
    ),
    Option(
        "upload_expiry",
        v.seconds,
        "seconds an unfinished push upload is kept after its last request, default 3600",
        flag=False,
    ),
    Option(
        "max_uploads",
        v.counter(1, 10_000),
        "push uploads one process receives at once, default 16; more wait their turn",
        flag=False,
    ),
    Option(
        "peer_url",
        v.peer_url,
        "the URL other replicas reach this one at: replicas fetch each blob once (needs Redis)",
        metavar="URL",
    ),
    Option("peer_secret", v.secret, "the secret replicas show each other", flag=False),
    Option(
        "peer_secret_file",
        v.secret_file,
        "a file holding the secret replicas show each other",
        metavar="FILE",
        field="peer_secret",
    ),
    Option(
        "upstream_username",
        v.text,
        "account for the default upstream",
        flag=False,
        target=Target.DEFAULT_UPSTREAM,
        field="username",
    ),
    Option(
        "upstream_password",
        v.text,
        "its password or token",
        flag=False,
        target=Target.DEFAULT_UPSTREAM,
        field="password",
    ),
    Option(
        "connect_timeout",
        v.seconds,
        "seconds to connect to an upstream",
        flag=False,
        target=Target.EVERY_UPSTREAM,
    ),
    Option(
        "read_timeout",
        v.seconds,
        "seconds an upstream read may stall",
        flag=False,
        target=Target.EVERY_UPSTREAM,
    ),
    Option(
        "api_timeout",
        v.seconds,
        "seconds an upstream answer other than a blob body may take in all",
        flag=False,
        target=Target.EVERY_UPSTREAM,
    ),
)

BY_KEY = {option.key: option for option in OPTIONS}
# The file's own keys for the default upstream's secrets would invite committing them: the
# environment and the `[upstreams]` tables (with password_env) are where they belong.
NOT_IN_FILE = frozenset({"upstream_username", "upstream_password"})


def add_flags(parser: argparse.ArgumentParser, options: Iterable[Option] = OPTIONS) -> None:
    """One flag per option that has one; the help names its environment variable too."""
    for option in options:
        if not option.flag:
            continue
        help_text = f"{option.help} ({option.env_var})" if option.env else option.help
        if option.parse is v.boolean:  # a switch: present means true
            parser.add_argument(
                option.flag_name, dest=option.key, action="store_const", const=True, help=help_text
            )
        else:
            parser.add_argument(
                option.flag_name, dest=option.key, metavar=option.metavar, help=help_text
            )
