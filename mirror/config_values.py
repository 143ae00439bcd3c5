"""Validators shared by the settings parsers; each error names the option it is about."""

from __future__ import annotations

from typing import Any

from yarl import URL


class ConfigError(Exception):
    """A setting has a bad value; the message names the option."""


def seconds(option: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: {value!r} is not a number of seconds") from None
    if parsed != parsed or parsed < 0 or (parsed == 0 and not allow_zero) or parsed > 1e9:
        raise ConfigError(f"{option}: {value!r} is out of range")
    return parsed


def count(option: str, value: Any, low: int, high: int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{option}: {value!r} is not a whole number from {low} to {high}")
    return int(text)


def patterns(option: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{option}: must be a list of patterns")
    return tuple(value)


def upstream_url(option: str, value: Any) -> str:
    text = str(value).rstrip("/")
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ConfigError(f"{option}: {text!r} is not an http(s):// registry URL")
    return text
