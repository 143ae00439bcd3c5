"""Tag lists: proxied page by page, with the last answer kept for when the upstream is down."""

from __future__ import annotations

from collections.abc import Mapping

from cachetools import LRUCache

from mirror import log
from mirror.errors import UpstreamError
from mirror.upstream.registry import UpstreamRegistry


class TagListService:
    def __init__(self, remembered: int = 1024) -> None:
        self._last: LRUCache[tuple[str, str, str], tuple[bytes, str | None]] = LRUCache(remembered)

    async def page(
        self, upstream: UpstreamRegistry, repo: str, query: Mapping[str, str]
    ) -> tuple[bytes, str | None]:
        """The page's JSON body and the upstream's `Link` header (a path on the upstream)."""
        key = (upstream.name, repo, "&".join(f"{k}={v}" for k, v in sorted(query.items())))
        try:
            answer = await upstream.get_tags(repo, query)
        except UpstreamError:
            if key not in self._last:
                raise
            log.note_cache("stale")
            return self._last[key]
        log.note_cache("miss")
        self._last[key] = answer
        return answer
