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
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from mirror import log
from mirror.cache.recency import AccessLog
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
    # The status line and headers as aiohttp sends them, up to its Date and Server fields.
    wire_head: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fields = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
        fields["Content-Length"] = str(len(self.body))
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        object.__setattr__(self, "wire_head", f"HTTP/1.1 200 OK\r\n{lines}".encode())

    def serve(self, access: AccessLog) -> web.Response:
        """The answer, its use recorded as a pull that reached the cache would be."""
        log.note_route(self.upstream, self.repo)
        log.note_cache("hit")
        self.record(access)
        return web.Response(body=self.body, headers=self.headers)

    def record(self, access: AccessLog) -> None:
        """Its use, as a pull that reached the cache would record it."""
        access.manifest(self.digest)
        if self.tag is not None:
            access.pulled(self.upstream, self.repo, self.tag)

    @property
    def weight(self) -> int:
        """Memory it holds, its key included (bounded by MAX_KEY)."""
        return len(self.body) + MAX_KEY + 2 * len(self.wire_head)


class HotAnswers:
    """The answers, oldest first. Every answer lives `ttl` seconds, so the order they were put in
    is the order they expire in: a put drops the expired ones from the front, and then the
    oldest while the new one would not fit. A lookup is a dict read and a clock read, which
    the hottest requests can afford."""

    def __init__(
        self,
        ttl: float = HOT_TTL,
        max_bytes: int = 32 << 20,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max = max_bytes
        self._timer = timer
        self._answers: dict[tuple[str, str, str], tuple[float, HotAnswer]] = {}
        self._bytes = 0

    @staticmethod
    def key(request: web.Request) -> tuple[str, str, str]:
        accept = ",".join(request.headers.getall("Accept", ()))
        return request.path, request.query.get("ns", ""), accept

    def get(self, key: tuple[str, str, str]) -> HotAnswer | None:
        found = self._answers.get(key)
        if found is None or found[0] <= self._timer():
            return None
        return found[1]

    def put(self, key: tuple[str, str, str], answer: HotAnswer) -> None:
        weight = answer.weight
        if sum(map(len, key)) > MAX_KEY or weight > self._max:
            return
        self._drop(key)  # a newer answer goes to the back
        now = self._timer()
        answers = self._answers
        while answers:
            first = next(iter(answers))
            if answers[first][0] > now and self._bytes + weight <= self._max:
                break
            self._drop(first)
        answers[key] = (now + self.ttl, answer)
        self._bytes += weight

    def _drop(self, key: tuple[str, str, str]) -> None:
        found = self._answers.pop(key, None)
        if found is not None:
            self._bytes -= found[1].weight

    @property
    def memory_bound(self) -> int:
        return self._max

    @property
    def memory(self) -> int:
        """Bytes the kept answers hold."""
        return self._bytes
