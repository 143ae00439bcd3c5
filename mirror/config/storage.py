"""Where the cache's content is kept for good: `--storage` and the `[storage]` table.

```toml
[storage]
url = "s3://mirror-cache/site-a"   # or the top-level key: storage = "s3://…"
endpoint = "https://s3.example.internal"
region = "eu-west-1"
access_key_id = "…"
secret_access_key_file = "/run/secrets/s3-secret"
redirect = true
max_size = "2TiB"                  # the bucket's cap; default none
keep_local = false                 # the cache directory keeps no blob the bucket holds
```

Unset, a path or a `file://` URL: the cache directory is the store (as it always was). An
`s3://BUCKET/PREFIX` URL keeps blobs, manifests and tags in that bucket, with the cache directory
in front of it. Endpoint, region and credentials come from the table, overridden by the standard
`AWS_*` variables; credentials left unset fall to the AWS SDK's own chain (profiles, instance
roles).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from mirror.config.values import ConfigError, boolean, size, text

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEYS = {
    "url",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "secret_access_key_file",
    "redirect",
    "max_size",
    "keep_local",
}
# The standard variables of the AWS SDKs, each over its key in the table.
_ENV = {
    "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
}


@dataclass(frozen=True, slots=True)
class StorageUrl:
    """`--storage` parsed: a directory, or a bucket and a key prefix."""

    directory: Path | None = None
    bucket: str | None = None
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class S3Settings:
    """An S3-compatible bucket holding the cache's content under `prefix`."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None  # None: the AWS SDK's default (AWS itself)
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    redirect: bool = False  # answer blob GETs not on local disk with 307 to a pre-signed URL
    max_size: int | None = None  # the bucket's cap in bytes (`--max-size` caps the directory)
    keep_local: bool = True  # keep blobs in the cache directory too (hits by sendfile)

    def __repr__(self) -> str:
        # Never print the secret (settings end up in logs and tracebacks).
        return f"S3Settings(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def storage_url(option: str, value: Any) -> StorageUrl:
    """`s3://BUCKET/PREFIX`, `file:///path` or a plain path (parsed by hand: URL libraries
    lower-case host names and resolve `..`, which would change what is named)."""
    raw = text(option, value).strip()
    scheme, separator, rest = raw.partition("://")
    if not separator:
        return StorageUrl(directory=Path(raw)) if raw else StorageUrl()
    if scheme == "file":
        if not rest.startswith("/"):
            raise ConfigError(f"{option}: {raw!r} is not a file:///path URL")
        return StorageUrl(directory=Path(rest))
    if scheme != "s3":
        raise ConfigError(f"{option}: {raw!r} is neither s3://BUCKET/PREFIX nor a directory")
    bucket, _, prefix = rest.partition("/")
    # S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens.
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError(f"{option}: {raw!r} names no valid bucket (s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"{option}: the prefix of {raw!r} has an empty or dot component")
    if any(c in prefix for c in "?#\\") or not prefix.isprintable():
        raise ConfigError(f"{option}: the prefix of {raw!r} has characters keys should not")
    return StorageUrl(bucket=bucket, prefix=prefix)


def split_storage(value: Any) -> tuple[Any, dict[str, Any] | None]:
    """The file's `storage`: a URL string, or a table whose `url` key is the URL."""
    if isinstance(value, dict):
        table = dict(value)
        return table.pop("url", None), table
    return value, None


def parse_storage(
    url: StorageUrl | None, table: dict[str, Any] | None, env: Mapping[str, str]
) -> S3Settings | None:
    """The bucket to keep content in, or None when the cache directory is the store."""
    table = table or {}
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"storage.{key}: unknown option (known: {', '.join(sorted(_KEYS))})")
    if url is None or url.bucket is None:
        if table:
            raise ConfigError("storage: the [storage] keys need an s3://BUCKET/PREFIX url")
        return None
    values: dict[str, Any] = {}
    for key in ("endpoint", "region", "access_key_id", "secret_access_key"):
        if key in table:
            values[key] = text(f"storage.{key}", table[key]) or None
        for variable in _ENV[key]:
            if env.get(variable):
                values[key] = env[variable]
                break
    if "secret_access_key_file" in table and "secret_access_key" not in values:
        values["secret_access_key"] = _read_secret(table["secret_access_key_file"])
    endpoint = values.get("endpoint")
    if endpoint is not None and URL(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"storage.endpoint: {endpoint!r} is not an http(s) URL")
    if bool(values.get("access_key_id")) != bool(values.get("secret_access_key")):
        raise ConfigError("storage: access_key_id and secret_access_key go together")
    return S3Settings(
        bucket=url.bucket,
        prefix=url.prefix,
        redirect=boolean("storage.redirect", table.get("redirect", False)),
        max_size=_cap(table.get("max_size", "")),
        keep_local=boolean("storage.keep_local", table.get("keep_local", True)),
        **values,
    )


def _cap(value: Any) -> int | None:
    """The bucket's cap: a number of bytes (a bucket has no size to take a share of)."""
    limit = size("storage.max_size", value)
    if limit is not None and limit.bytes is None:
        raise ConfigError(f"storage.max_size: {value!r}: a bucket's cap is a size, not a share")
    return None if limit is None else limit.bytes


def _read_secret(value: Any) -> str:
    path = Path(text("storage.secret_access_key_file", value))
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"storage.secret_access_key_file: cannot read {path}: {e.strerror}"
        ) from None
    if not secret:
        raise ConfigError(f"storage.secret_access_key_file: {path} is empty")
    return secret
