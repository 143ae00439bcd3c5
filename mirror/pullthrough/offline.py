"""Listings for an upstream that is never contacted (`--offline`): answered from the disk."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from yarl import URL

from mirror import log
from mirror.errors import NameUnknown
from mirror.oci.digest import Digest
from mirror.pullthrough.listings import EMPTY_REFERRERS, ListingService
from mirror.storage.tags import TagStore
from mirror.upstream.registry import Listing, UpstreamRegistry


class CachedListings(ListingService):
    """Tag lists of an offline upstream are the tags the cache holds; its referrers are none
    (the cache keeps no referrers index). Online upstreams are proxied as usual."""

    def __init__(self, tags: TagStore) -> None:
        super().__init__()
        self._tag_store = tags

    async def tags(
        self, upstream: UpstreamRegistry, repo: str, query: Mapping[str, str]
    ) -> Listing:
        if not upstream.settings.offline:
            return await super().tags(upstream, repo, query)
        names = await self._tag_store.names(upstream.name, repo)
        if not names:
            raise NameUnknown(
                f"{upstream.name}/{repo} has no tags in the cache, and the mirror is offline "
                "(--offline)"
            )
        log.note_cache("hit")
        return _page(repo, names, query)

    async def referrers(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest, query: Mapping[str, str]
    ) -> Listing:
        if not upstream.settings.offline:
            return await super().referrers(upstream, repo, digest, query)
        log.note_cache("hit")
        return EMPTY_REFERRERS


def _page(repo: str, names: list[str], query: Mapping[str, str]) -> Listing:
    """distribution-spec "Listing Tags": lexical order, `last` excluded, at most `n`, and a
    `Link` to the next page when there is more."""
    if last := query.get("last"):
        names = [name for name in names if name > last]
    headers: dict[str, str] = {}
    limit = query.get("n", "")
    if limit.isdigit() and int(limit) < len(names):
        names = names[: int(limit)]
        if names:
            page = URL.build(path=f"/v2/{repo}/tags/list", query={"n": limit, "last": names[-1]})
            headers["Link"] = f'<{page}>; rel="next"'
    return Listing(orjson.dumps({"name": repo, "tags": names}), headers)
