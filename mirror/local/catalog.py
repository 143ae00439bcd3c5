"""`/v2/_catalog`: every repository the endpoint holds, as clients address it.

Pushed repositories are named under their local namespace (`registry.example.internal/team/app`),
cached ones under their registry (`docker.io/library/alpine`): both are names the router takes
as a path prefix, so each entry can be pulled as listed. A mirrored repository is listed once a
tag of it was pulled (a pull by digest alone leaves no name behind).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mirror.config.upstreams import UpstreamSettings
from mirror.local.store import LocalStore
from mirror.storage.catalog import cached_repositories
from mirror.storage.layout import CacheLayout


class Catalog:
    def __init__(
        self,
        layout: CacheLayout,
        store: LocalStore,
        upstreams: Sequence[UpstreamSettings],
        local: Sequence[str],
    ) -> None:
        self._layout = layout
        self._store = store
        self._upstreams = tuple(upstreams)
        self._local = tuple(local)

    async def repositories(self, may_pull: Callable[[str], bool]) -> list[str]:
        """Every repository, sorted, that `may_pull(<registry>/<repository>)` allows."""
        names = await asyncio.to_thread(self._walk)
        return [name for name in names if may_pull(name)]

    def _walk(self) -> list[str]:
        names = []
        for registry in self._local:
            names += [f"{registry}/{repo}" for repo in self._store.repositories(registry)]
        for upstream in self._upstreams:
            for repo in cached_repositories(self._layout, upstream.name):
                if upstream.allows(repo):
                    names.append(f"{upstream.name}/{repo}")
        return sorted(names)
