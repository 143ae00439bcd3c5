"""Connection pools to an upstream, handed out with a deadline, and bounded body reads.

Each upstream has two pools: one for blob bodies (and their CDN redirect targets), which can
stay busy for minutes, and one for everything else (manifests, tags, referrers, tokens), so a
revalidation never waits behind downloads. A request that finds its pool full waits at most the
connect timeout, then fails as `UpstreamUnavailable`: a tag with a cached answer is then served
stale, and nothing hangs.

The session bounds only connection set-up and the gap between two reads, which an upstream
sending a byte now and then never passes. So the API pool also carries a deadline for all of a
logical request (`UpstreamClient.request` and the token fetch hold to it); the blob pool has
none, since a big layer on a slow link takes long however healthy the upstream (the head of its
answer is held to the same deadline, though).

The two pools count their requests apart but share one session: its idle keep-alive connections
and its DNS answers serve both, so the first blob of a pull goes out on the connection its
manifest just used, with no new TCP and TLS handshake before the client's first byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from mirror.config.upstreams import UpstreamSettings
from mirror.errors import UpstreamError, UpstreamUnavailable
from mirror.upstream.targets import GuardedResolver, Network, TargetGuard

# Caps on what is read into memory from an upstream (a bigger body is an upstream error).
# containerd's limit (remotes/docker MaxManifestSize); a bigger "manifest" is not one.
MAX_MANIFEST_SIZE = 4 << 20
MAX_REFERRERS_SIZE = 4 << 20
MAX_TAG_LIST_SIZE = 16 << 20  # all pages of one repository's tag list together
MAX_TOKEN_SIZE = 64 << 10
MAX_ERROR_SIZE = 64 << 10


class Exchange:
    """One answer and the pool slot it holds until `close()`."""

    def __init__(self, response: aiohttp.ClientResponse, release: Callable[[], None]) -> None:
        self.response = response
        self._release: Callable[[], None] | None = release

    def close(self) -> None:
        self.response.release()
        release, self._release = self._release, None
        if release is not None:
            release()


class Pool:
    """Requests over a shared session, at most `size` at once, each waiting at most `wait` s
    for its turn; `deadline`: the seconds its users give a whole request (None: no limit)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        size: int,
        wait: float,
        what: str,
        deadline: float | None = None,
    ) -> None:
        self.session = session
        self.deadline = deadline
        self._size = size
        self._wait = wait
        self._what = what
        self._slots = asyncio.Semaphore(size)

    async def send(self, method: str, url: URL, headers: Mapping[str, str]) -> Exchange:
        """One HTTP exchange, redirects not followed; the caller closes the exchange."""
        try:
            async with asyncio.timeout(self._wait):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamUnavailable(
                f"all {self._size} connections {self._what} are busy; try again later"
            ) from None
        try:
            response = await self.session.request(
                method, url, headers=headers, allow_redirects=False
            )
        except BaseException:
            self._slots.release()
            raise
        return Exchange(response, self._slots.release)

    @asynccontextmanager
    async def open(
        self, method: str, url: URL, headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        exchange = await self.send(method, url, headers)
        try:
            yield exchange.response
        finally:
            exchange.close()


class Pools:
    """An upstream's two pools (see the module docstring) and the session they share."""

    def __init__(
        self,
        settings: UpstreamSettings,
        user_agent: str,
        guard: TargetGuard,
        network: Network,
        name: str,
    ) -> None:
        """`max_connections` each: no total timeout in the session (big layers take long; the
        API pool's deadline is held above it), but bounded connection set-up and per-read
        waits, and no transparent decompression (it would change digests). Names resolve
        through the guard."""
        timeout = aiohttp.ClientTimeout(
            total=None,
            # Set-up as a whole (DNS, TCP, TLS); the pool's own wait comes before it.
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._resolver = GuardedResolver(guard, network.resolver())
        size = settings.max_connections
        self._session = aiohttp.ClientSession(
            # Room for both pools full at once: neither ever waits for the other's connections.
            connector=aiohttp.TCPConnector(limit=2 * size, resolver=self._resolver),
            timeout=timeout,
            # A deeper read buffer lets a blob keep arriving while a thread writes and hashes
            # the previous batch.
            read_bufsize=4 << 20,
            auto_decompress=False,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            # Cookies from an upstream or a CDN must not follow us to other requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        wait = settings.connect_timeout
        self.api = Pool(self._session, size, wait, f"to {name}", settings.api_deadline)
        self.blobs = Pool(self._session, size, wait, f"for blobs from {name}")

    async def close(self) -> None:
        await self._session.close()
        await self._resolver.close()  # the connector closes only resolvers it made itself


async def read_limited(
    resp: aiohttp.ClientResponse,
    limit: int,
    what: str,
    received: Callable[[int], None] | None = None,
) -> bytes:
    """The whole body, refused once it passes `limit` bytes (before reading, if the upstream
    announces more); `received` is told each chunk's size."""
    if (resp.content_length or 0) > limit:
        raise UpstreamError(f"{what} is larger than {limit} bytes")
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        data += chunk
        if received is not None:
            received(len(chunk))
        if len(data) > limit:
            raise UpstreamError(f"{what} is larger than {limit} bytes")
    return bytes(data)
