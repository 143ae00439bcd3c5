"""Where the functional suite's mirrors keep content: the cache directory alone (the default), or,
under `pytest --storage=s3`, a bucket on the session's SeaweedFS behind it.

Every mirror the fixtures and helpers build, in this process or as a `mirror` subprocess, asks
`current()`. The bucket prefix follows from the cache directory, so mirrors of one test on one
cache directory share their content as replicas do, and every other mirror has its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mirror.config import S3Settings, Settings
from tests.support.oci import wait_until
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed

# `pytest --storage=…`: the values, the default first.
CHOICES = ("directory", "s3")
# Tests that only prove something about the cache directory itself: the S3 pass leaves them out.
DIRECTORY_ONLY = "directory_only"


@dataclass(frozen=True)
class ContentStore:
    """The store of this run: a bucket on `seaweed`, or the cache directory when it is None."""

    seaweed: Seaweed | None = None

    def for_cache(self, cache_dir: Path) -> S3Settings | None:
        """The bucket behind `cache_dir` (None: the directory is the store)."""
        if self.seaweed is None:
            return None
        absolute = str(Path(cache_dir).absolute())
        return self.seaweed.settings(f"t-{hashlib.sha1(absolute.encode()).hexdigest()[:16]}")

    def applied(self, settings: Settings) -> Settings:
        """`settings` on this store, unless they already name a bucket of their own."""
        if settings.storage is not None:
            return settings
        return dataclasses.replace(settings, storage=self.for_cache(settings.cache_dir))

    async def uploaded(self, cache_dir: Path, digests: Iterable[str], within: float = 30.0) -> bool:
        """Wait until the bucket behind `cache_dir` holds these blobs and no upload is left
        (at once True for the directory): an upload in flight keeps its blob's bytes on disk
        until it ends, even once the blob is evicted."""
        bucket = self.for_cache(cache_dir)
        if bucket is None or self.seaweed is None:
            return True
        seaweed = self.seaweed
        wanted = {f"blobs/{digest.replace(':', '/')}" for digest in digests}

        def done() -> bool:
            keys = seaweed.keys(bucket.prefix)
            return wanted <= keys.keys() and not any(k.startswith("uploads/") for k in keys)

        return await wait_until(done, within)

    def environ(self, cache_dir: Path | None) -> dict[str, str]:
        """The environment of a `mirror` subprocess: this one's without any `MIRROR_*` setting,
        plus the bucket behind `cache_dir` when there is one (None: the command chose its
        store itself)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
        bucket = None if cache_dir is None else self.for_cache(cache_dir)
        if bucket is not None:
            assert bucket.endpoint is not None
            env.update(
                MIRROR_STORAGE=bucket.url,
                AWS_ENDPOINT_URL_S3=bucket.endpoint,
                AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID=ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            )
        return env


_current = ContentStore()


def current() -> ContentStore:
    """The store of this run (set once per session by the `content_store` fixture)."""
    return _current


def use(store: ContentStore) -> None:
    """Make `store` the store of this run."""
    global _current
    _current = store


def command_cache_dir(args: Sequence[str]) -> Path | None:
    """The cache directory a `mirror` command line works on, or None when it names its store
    itself (`--storage`, or a settings file with one)."""
    named = dict(itertools.pairwise(args))
    if "--storage" in named:
        return None
    cache_dir = Path("cache")
    if "--config" in named:
        with open(named["--config"], "rb") as f:
            try:
                data = tomllib.load(f)
            except ValueError:  # not TOML: the command says so
                data = {}
        if "storage" in data:
            return None
        cache_dir = Path(data.get("cache_dir", cache_dir))
    return Path(named.get("--cache-dir", cache_dir))
