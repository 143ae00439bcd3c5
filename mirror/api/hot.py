"""Ready-made manifest answers: the hottest requests (CI fleets pulling one tag thousands of
times) skip routing, validation and the metadata store for a bounded interval.

An answer is kept for at most `ttl` seconds (one by default), keyed by everything it depends on:
the path (repository and reference), the `ns` parameter and the Accept header. A tag whose own
TTL is shorter is never kept, so this adds at most `ttl` to a tag's freshness. The answers take
at most `max_bytes` of memory together; a request with an outlandish Accept header is not kept
(its key would cost more than the answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from cachetools import TTLCache

from mirror.oci.digest import Digest

HOT_TTL = 1.0
MAX_KEY = 1024  # bytes of path, ns and Accept together


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

    @property
    def weight(self) -> int:
        """Memory it holds, its key included (bounded by MAX_KEY)."""
        return len(self.body) + MAX_KEY + sum(len(k) + len(v) for k, v in self.headers.items())


class HotAnswers:
    def __init__(self, ttl: float = HOT_TTL, max_bytes: int = 32 << 20) -> None:
        self.ttl = ttl
        self._answers: TTLCache[tuple[str, str, str], HotAnswer] = TTLCache(
            maxsize=max_bytes, ttl=ttl, timer=time.monotonic, getsizeof=lambda a: a.weight
        )

    @staticmethod
    def key(request: web.Request) -> tuple[str, str, str]:
        accept = ",".join(request.headers.getall("Accept", ()))
        return request.path, request.query.get("ns", ""), accept

    def get(self, key: tuple[str, str, str]) -> HotAnswer | None:
        return self._answers.get(key)

    def put(self, key: tuple[str, str, str], answer: HotAnswer) -> None:
        if sum(map(len, key)) <= MAX_KEY and answer.weight <= self._answers.maxsize:
            self._answers[key] = answer

    @property
    def memory_bound(self) -> int:
        return int(self._answers.maxsize)

    @property
    def memory(self) -> int:
        """Bytes the kept answers hold."""
        return int(self._answers.currsize)
