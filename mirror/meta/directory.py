"""The default metadata store: tag freshness and revalidation leases in files of the cache
directory, so every process on it (the workers of `--workers N`, a `mirror prefetch`, replicas on
a shared filesystem) shares them without Redis; the rest stays in-process (`EmbeddedStore`).

Files under `<cache>/fresh/`, named by the SHA-256 of the key (`<upstream>/<repo>:<tag>`):

- `<hash>`: JSON `{"key", "digest", "at", "ttl"}`, replaced atomically (a rename) each time the
  tag is revalidated; the tag is fresh while `at <= now < at + ttl` (wall-clock seconds, which
  every process on a host shares).
- `<hash>.lease`: `flock`ed by the process revalidating the tag. A lease ends when its holder lets
  go or dies, so a crash leaves nothing to clean up; the file stays, so every process always
  locks the same inode.

Like the Redis store, each process remembers a fresh tag for at most `front_ttl` seconds (and
never past its expiry), so a hot tag costs one small file read per interval, not one per request.
Freshness only spares upstream requests: a record that cannot be read or written is a stale tag,
never a failed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from cachetools import TLRUCache

from mirror import log
from mirror.meta.store import EmbeddedStore
from mirror.oci.digest import Digest

# Another host on a shared filesystem may run a little ahead: a record that far in the future is
# still taken as written now. Further ahead, it tells of a clock that was set back: stale.
CLOCK_SKEW = 5.0


class DirectoryStore:
    """Freshness and leases shared through a directory; access counts and flags in-process."""

    def __init__(
        self,
        directory: Path,
        *,
        front_ttl: float = 1.0,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` dates the records (wall-clock time, shared by processes); `timer` times what
        this process remembers (a clock that cannot be set back)."""
        self._local = EmbeddedStore()
        self._directory = directory
        self._front_ttl = front_ttl
        self._clock = clock
        # key -> (digest, seconds it may be remembered)
        self._front: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=10_000, ttu=lambda _k, value, now: now + value[1], timer=timer
        )
        self._held: dict[str, int] = {}  # key -> descriptor of the locked lease file

    async def start(self) -> None:
        await asyncio.to_thread(self._directory.mkdir, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._directory / hashlib.sha256(key.encode()).hexdigest()

    async def fresh_digest(self, key: str) -> str | None:
        remembered = self._front.get(key)
        if remembered is not None:
            return remembered[0]
        # A read of a few hundred bytes, on the loop: cheaper than a hop to a thread, and done
        # once per `front_ttl` for a hot tag.
        try:
            record = json.loads(self._path(key).read_bytes())
            digest, at, ttl = str(record["digest"]), float(record["at"]), float(record["ttl"])
            if record["key"] != key:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: stale
        remaining = at + ttl - self._clock()
        if remaining <= 0 or remaining > ttl + CLOCK_SKEW:
            return None
        self._front[key] = (digest, min(self._front_ttl, remaining))
        return digest

    async def mark_fresh(self, key: str, digest: str, ttl: float) -> None:
        path = self._path(key)
        if ttl <= 0:
            self._front.pop(key, None)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink, missing_ok=True)
            return
        now = self._clock()
        self._front[key] = (digest, min(self._front_ttl, ttl))
        record = json.dumps({"key": key, "digest": digest, "at": now, "ttl": ttl}).encode()
        try:
            await asyncio.to_thread(_replace, path, record)
        except OSError as e:
            log.warn_once("cannot store tag freshness", error=e.strerror)

    async def try_lease(self, key: str, ttl: float) -> bool:
        """The lease lasts until `release_lease` (or the end of this process), whatever `ttl`:
        a revalidation is bounded by the upstream's timeouts."""
        if key in self._held:
            return False
        try:
            fd = os.open(f"{self._path(key)}.lease", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            # No descriptor or no disk for a lease: revalidate uncoordinated rather than not.
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._held[key] = fd
        return True

    async def release_lease(self, key: str) -> None:
        fd = self._held.pop(key, None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the lock

    async def close(self) -> None:
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
        self._front.clear()
        await self._local.close()

    # What is not about tags stays in this process, as with the embedded store.

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        await self._local.add_hits(hits)

    async def last_used(self, digests: Collection[Digest]) -> dict[Digest, float]:
        return await self._local.last_used(digests)

    async def set_flag(self, key: str, ttl: float) -> None:
        await self._local.set_flag(key, ttl)

    async def has_flag(self, key: str) -> bool:
        return await self._local.has_flag(key)

    async def clear_flag(self, key: str) -> None:
        await self._local.clear_flag(key)

    async def note_upstream(self, name: str, facts: dict[str, str]) -> None:
        await self._local.note_upstream(name, facts)


def _replace(path: Path, data: bytes) -> None:
    """Write beside `path`, then rename over it: a reader sees the old record or the new one.
    No fsync: a record lost in a crash is only a tag revalidated once more."""
    part = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
