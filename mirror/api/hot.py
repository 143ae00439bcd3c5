"""Ready-made manifest answers: the hottest requests (CI fleets pulling one tag thousands of
times) skip routing, validation and the metadata store for a bounded interval.

An answer is kept for at most `ttl` seconds (one by default), keyed by everything it depends on:
the path (repository and reference), the `ns` parameter and the Accept header. A tag whose own
TTL is shorter is never kept, so this adds at most `ttl` to a tag's freshness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from cachetools import TTLCache

from mirror.oci.digest import Digest

HOT_TTL = 1.0


@dataclass(frozen=True, slots=True)
class HotAnswer:
    upstream: str
    repo: str
    tag: str | None  # None for a manifest asked for by digest
    digest: Digest
    body: bytes
    headers: dict[str, str]

    def response(self) -> web.Response:
        return web.Response(body=self.body, headers=self.headers)


class HotAnswers:
    def __init__(self, ttl: float = HOT_TTL, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._answers: TTLCache[tuple[str, str, str], HotAnswer] = TTLCache(
            maxsize=max_entries, ttl=ttl, timer=time.monotonic
        )

    @staticmethod
    def key(request: web.Request) -> tuple[str, str, str]:
        accept = ",".join(request.headers.getall("Accept", ()))
        return request.path, request.query.get("ns", ""), accept

    def get(self, key: tuple[str, str, str]) -> HotAnswer | None:
        return self._answers.get(key)

    def put(self, key: tuple[str, str, str], answer: HotAnswer) -> None:
        self._answers[key] = answer
