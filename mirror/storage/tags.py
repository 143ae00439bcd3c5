"""Tag records: the last known tag → digest mapping, kept on disk so it survives restarts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest
from mirror.storage.layout import CacheLayout, write_atomically


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    media_type: str
    fetched_at: float

    @property
    def parsed_digest(self) -> Digest:
        return Digest.parse(self.digest)


class TagStore:
    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout

    async def get(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        return await asyncio.to_thread(self._read, upstream, repo, tag)

    async def put(
        self, upstream: str, repo: str, tag: str, digest: Digest, media_type: str
    ) -> None:
        record = TagRecord(str(digest), media_type, time.time())
        data = json.dumps(asdict(record)).encode()
        path = self._layout.tag(upstream, repo, tag)
        await asyncio.to_thread(write_atomically, self._layout, path, data)

    async def names(self, upstream: str, repo: str) -> list[str]:
        """The tags of a repository that have a record, sorted."""
        return await asyncio.to_thread(self._names, upstream, repo)

    def _names(self, upstream: str, repo: str) -> list[str]:
        try:
            return sorted(p.name for p in self._layout.tag(upstream, repo, "_").parent.iterdir())
        except OSError:
            return []

    def _read(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        try:
            raw = json.loads(self._layout.tag(upstream, repo, tag).read_bytes())
            Digest.parse(raw["digest"])
            return TagRecord(str(raw["digest"]), str(raw["media_type"]), float(raw["fetched_at"]))
        except (OSError, ValueError, KeyError, TypeError, DigestInvalid):
            # A damaged record reads as absent: the tag is then simply fetched again.
            return None
