"""Validators shared by the settings parsers; each takes the option's name (for the message) and
the raw value (a TOML value, or the text of a flag or an environment variable)."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from mirror.meta.redis_url import RedisUrl


class ConfigError(Exception):
    """A setting has a bad value; the message names the option."""


def seconds(option: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        if isinstance(value, bool):  # TOML's true would read as 1 second
            raise TypeError
        parsed = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: {value!r} is not a number of seconds") from None
    if parsed != parsed or parsed < 0 or (parsed == 0 and not allow_zero) or parsed > 1e9:
        raise ConfigError(f"{option}: {value!r} is out of range")
    return parsed


def seconds_or_zero(option: str, value: Any) -> float:
    return seconds(option, value, allow_zero=True)


def count(option: str, value: Any, low: int, high: int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{option}: {value!r} is not a whole number from {low} to {high}")
    return int(text)


def counter(low: int, high: int) -> Any:
    """A `count` validator with its bounds fixed, for the option tables."""
    return lambda option, value: count(option, value, low, high)


def boolean(option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{option}: {value!r} is not true or false")


def text(option: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{option}: must be a string")
    return str(value)


def directory(option: str, value: Any) -> Path:
    path = str(value)
    if not path or "\0" in path:
        raise ConfigError(f"{option}: must be a directory path")
    return Path(path)


def file_path(option: str, value: Any) -> Path | None:
    """A file's path; empty means none (so an environment variable can switch it off)."""
    path = str(value)
    if "\0" in path:
        raise ConfigError(f"{option}: must be a file path")
    return Path(path) if path else None


def patterns(option: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{option}: must be a list of patterns")
    return tuple(value)


def upstream_url(option: str, value: Any) -> str:
    """An http(s) registry URL with no credentials, query or fragment in it."""
    text = str(value).rstrip("/")
    try:
        url = URL(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not an http(s):// registry URL") from None
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ConfigError(f"{option}: {text!r} is not an http(s):// registry URL")
    if url.user is not None or url.password is not None:
        # Credentials in a URL end up in logs and process listings; they have their own options.
        raise ConfigError(f"{option}: put credentials in username/password options, not in the URL")
    return text


def peer_url(option: str, value: Any) -> str | None:
    """The http(s) URL other replicas reach this one at; empty means none."""
    text = str(value).strip().rstrip("/")
    if not text:
        return None
    try:
        url = URL(text)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ConfigError(f"{option}: {text!r} is not an http(s):// URL of this replica")
    if url.user is not None or url.password is not None:
        raise ConfigError(f"{option}: replicas authenticate with the peer secret, not the URL")
    return text


# A shared secret worth the name: long enough not to be guessed, and fit for a header value.
_SECRET = re.compile(r"[!-~]{16,512}")


def secret(option: str, value: Any) -> str | None:
    """A shared secret: 16 to 512 visible ASCII characters; empty means none."""
    text = str(value).strip()
    if not text:
        return None
    if not _SECRET.fullmatch(text):
        raise ConfigError(f"{option}: must be 16 to 512 visible ASCII characters (no spaces)")
    return text


def secret_file(option: str, value: Any) -> str | None:
    """A shared secret read from a file (surrounding white space and newlines ignored)."""
    path = file_path(option, value)
    if path is None:
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"{option}: cannot read {path}: {e.strerror}") from None
    if not text.strip():
        raise ConfigError(f"{option}: {path} is empty")
    return secret(option, text)


def listen_address(option: str, value: Any) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `:PORT` for all interfaces)."""
    text = str(value)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{option}: {text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port_text)


def optional_listen_address(option: str, value: Any) -> tuple[str, int] | None:
    """`HOST:PORT`, or nothing (an empty value) for none."""
    return listen_address(option, value) if str(value).strip() else None


AddressRange = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_ranges(option: str, value: Any) -> tuple[AddressRange, ...]:
    """Address ranges in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is one host):
    a list in the file, comma-separated in a flag or variable; empty means none."""
    if isinstance(value, list):
        items = [str(item).strip() for item in value]
    else:
        items = [item.strip() for item in str(value).split(",") if item.strip()]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as e:
        raise ConfigError(f"{option}: {e}; write address ranges like 10.0.0.0/8") from None


def redis_url(option: str, value: Any) -> str | None:
    """A Redis URL of a form `mirror.meta.redis_url` reads; empty means none."""
    url = str(value)
    if not url:
        return None
    try:
        RedisUrl.parse(url)
    except ValueError as e:
        raise ConfigError(f"{option}: {_without_password(url)!r}: {e}") from None
    return url


def _without_password(url: str) -> str:
    """`url` fit for an error message: a password in it replaced by `***`."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def key_prefix(option: str, value: Any) -> str:
    prefix = str(value)
    if not prefix or len(prefix) > 100 or any(c.isspace() for c in prefix):
        raise ConfigError(f"{option}: {prefix!r} is not a usable key prefix")
    return prefix


# Decimal units (SI) and binary ones (IEC), as `df -H` and `df -h` print them.
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True, slots=True)
class SizeLimit:
    """A number of bytes, or a share of the file system the cache lives on."""

    bytes: int | None = None
    percent: float | None = None

    def resolve(self, filesystem_bytes: int) -> int:
        """In bytes, for a file system of `filesystem_bytes`."""
        if self.bytes is not None:
            return self.bytes
        assert self.percent is not None
        return int(filesystem_bytes * self.percent / 100)


def size(option: str, value: Any) -> SizeLimit | None:
    """`300MiB`, `50GiB`, `1TB`, `1.5GB`, a plain number of bytes, or a percentage (`80%`);
    empty means no limit."""
    text = str(value)
    if not text.strip():
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{option}: {value!r} is not a size")
    if match := _PERCENT.match(text):
        percent = float(match.group(1))
        if not 0 < percent <= 100:
            raise ConfigError(f"{option}: {text!r} is not a percentage from 0 to 100")
        return SizeLimit(percent=percent)
    match = _SIZE.match(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ConfigError(
            f"{option}: {text!r} is not a size like 300MiB, 50GiB, 1TB, 1000000 or 80%"
        )
    amount = float(match.group(1)) * unit
    if not math.isfinite(amount) or amount < 1 or amount > 2**63:
        raise ConfigError(f"{option}: {text!r} is out of range")
    return SizeLimit(bytes=int(amount))
