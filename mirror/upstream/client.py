"""Requests to one upstream: redirects followed by hand, challenges answered, failures translated.

Three layers, each testable alone:
- `follow`: one request through its redirects, each target checked by the guard, sending each
  origin only its own `Authorization`;
- `authorized`: `follow`, answering each origin's 401 challenge once;
- `request`: the bookkeeping around them (the circuit breaker, the status of the answer).

Every failure of the upstream becomes a `MirrorError` here. While a caller reads a response it
was handed, only aiohttp's own errors (the body broke off, a read timed out) are the upstream's;
anything else the caller raises passes through untouched and counts for nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
from cachetools import LRUCache
from multidict import CIMultiDict
from yarl import URL

from mirror import jsondoc, log
from mirror.config.upstreams import UpstreamSettings
from mirror.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    UpstreamError,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
    offline_miss,
)
from mirror.meta.store import MetadataStore
from mirror.metrics.hooks import UNOBSERVED, UpstreamStats
from mirror.upstream import headers as parse
from mirror.upstream.auth import Authenticator, is_insufficient_scope
from mirror.upstream.failures import describe
from mirror.upstream.health import UpstreamHealth
from mirror.upstream.pool import MAX_ERROR_SIZE, Exchange, Pool, Pools, read_limited
from mirror.upstream.targets import Network, RefusedAddress, TargetGuard

MAX_REDIRECTS = 5
# Origins of one request that may challenge: the upstream, a redirect target, one more.
MAX_CHALLENGES = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NOT_FOUND = {
    "NAME_UNKNOWN": NameUnknown,
    "MANIFEST_UNKNOWN": ManifestUnknown,
    "BLOB_UNKNOWN": BlobUnknown,
}


class _Authorizations:
    """What one logical request sends to each origin on its way: only the upstream's own
    origin ever gets its credentials; a redirect target that challenged before gets the
    anonymous token of its own."""

    def __init__(self, client: UpstreamClient, scope: str) -> None:
        self._client = client
        self._scope = scope
        self._sent: dict[URL, str | None] = {}

    async def for_origin(self, origin: URL) -> str | None:
        if origin not in self._sent:
            known = self._client.known_authenticator(origin)
            self._sent[origin] = await known.authorization(self._scope) if known else None
        return self._sent[origin]

    async def answer(self, origin: URL, challenge: str | None) -> str | None:
        """A new `Authorization` for the origin's challenge, or None if none would help."""
        found = await self._client.authenticator(origin).answer(
            challenge, self._scope, self._sent.get(origin)
        )
        if found is not None:
            self._sent[origin] = found
        return found


class UpstreamClient:
    """Requests to one upstream over its two pools, with its health and auth state."""

    def __init__(
        self,
        settings: UpstreamSettings,
        meta: MetadataStore,
        *,
        user_agent: str,
        network: Network,
        stats: UpstreamStats = UNOBSERVED,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.name = settings.name
        self.base = URL(settings.url)
        self._guard = TargetGuard(
            self.name, self.base, settings.allow_private_targets, network.classify
        )
        self._pools = Pools(settings, user_agent, self._guard, network, self.name)
        self.api, self.blobs = self._pools.api, self._pools.blobs
        self.auth = Authenticator(settings, self.base.origin(), self.api, self._guard)
        self._foreign: LRUCache[URL, Authenticator] = LRUCache(maxsize=16)
        self.health = UpstreamHealth(settings, meta, self.ping, stats)

    def known_authenticator(self, origin: URL) -> Authenticator | None:
        """The authenticator of an origin that has challenged before (or the upstream's own)."""
        return self.auth if origin == self.base.origin() else self._foreign.get(origin)

    def authenticator(self, origin: URL) -> Authenticator:
        """The upstream's own (with its credentials), or an anonymous one for another origin
        (registry.k8s.io redirects to regional registries that challenge on their own)."""
        if (found := self.known_authenticator(origin)) is None:
            anonymous = replace(self.settings, username=None, password=None)
            found = self._foreign[origin] = Authenticator(anonymous, origin, self.api, self._guard)
        return found

    async def ping(self) -> bool:
        """Whether the upstream answers HTTP at all (any status will do)."""
        try:
            async with self.api.session.get(
                self.base.with_path(f"{self.base.path.rstrip('/')}/v2/"),
                timeout=aiohttp.ClientTimeout(total=self.settings.connect_timeout + 5),
                allow_redirects=False,
            ):
                return True
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        await self.health.close()
        await self._pools.close()

    def url(self, repo: str, path: str, query: Mapping[str, str] | None = None) -> URL:
        url = self.base.with_path(f"{self.base.path.rstrip('/')}/v2/{repo}/{path}", encoded=False)
        return url.with_query(query) if query else url

    @asynccontextmanager
    async def request(
        self,
        pool: Pool,
        method: str,
        repo: str,
        url: URL,
        headers: Mapping[str, str],
        not_found: type[MirrorError],
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One logical request, handed to the caller as a 2xx response."""
        if self.settings.offline:
            raise offline_miss(
                not_found,
                f"{self.name}/{repo} has no such content in the cache, and the mirror is "
                "offline (--offline): no upstream is contacted",
            )
        if await self.health.is_open():
            raise UpstreamUnavailable(f"{self.name} is failing; it is not contacted for now")
        # The pool's deadline covers everything the caller waits for: the pool, redirects,
        # challenges and tokens, and reading the body it is handed. A pool with none (blobs)
        # still gets its answer's head within the API deadline; only the body may take long.
        whole = pool.deadline is not None
        deadline = asyncio.timeout(pool.deadline if whole else self.settings.api_deadline)
        try:
            async with deadline:
                exchange = await self.authorized(pool, method, url, headers, repo)
                try:
                    await self._check_status(exchange.response, repo, not_found)
                except BaseException:
                    exchange.close()
                    raise
                if not whole:
                    deadline.reschedule(None)
                try:
                    yield exchange.response
                except aiohttp.ClientError as e:  # reading the body failed: the upstream's doing
                    raise await self._failure(e) from e
                finally:
                    exchange.close()
        except TimeoutError as e:
            if not deadline.expired():
                raise  # the caller's own
            raise await self._overdue(e) from e

    async def authorized(
        self, pool: Pool, method: str, url: URL, headers: Mapping[str, str], repo: str
    ) -> Exchange:
        """`follow`, answering each origin's 401 challenge once; the final answer, any status."""
        authorizations = _Authorizations(self, f"repository:{repo}:pull")
        challenged: set[URL] = set()
        for _ in range(MAX_CHALLENGES + 1):
            exchange = await self.follow(pool, method, url, headers, authorizations)
            resp = exchange.response
            origin = resp.url.origin()
            if resp.status != 401 or origin in challenged:
                return exchange
            challenged.add(origin)
            challenge = resp.headers.get("WWW-Authenticate")
            exchange.close()  # before fetching a token: its pool may be this one
            if await authorizations.answer(origin, challenge) is None:
                raise _unauthorized(self.name, repo, challenge, None)
            url = resp.url
        raise UpstreamError(f"{self.name} sent the mirror through too many challenges")

    async def follow(
        self,
        pool: Pool,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        authorizations: _Authorizations,
    ) -> Exchange:
        """One request through its redirects (followed by hand, so that `Authorization`
        never leaves its origin); the first answer that is not a redirect."""
        for _ in range(MAX_REDIRECTS + 1):
            send = CIMultiDict(headers)
            if authorization := await authorizations.for_origin(url.origin()):
                send["Authorization"] = authorization
            exchange = await self._send(pool, method, url, send)
            resp = exchange.response
            try:
                await self._observe(resp)
                if resp.status not in _REDIRECTS or "Location" not in resp.headers:
                    return exchange
                url = self._redirect_target(resp.url, resp.headers["Location"])
            except BaseException:
                exchange.close()
                raise
            exchange.close()
        raise UpstreamError(f"{self.name} redirected more than {MAX_REDIRECTS} times")

    async def _send(
        self, pool: Pool, method: str, url: URL, headers: Mapping[str, str]
    ) -> Exchange:
        started = time.perf_counter()
        try:
            exchange = await pool.send(method, url, headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise await self._failure(e) from e
        except ValueError as e:  # a URL or header value aiohttp refuses to send
            raise UpstreamError(f"{self.name}: cannot send a request to {url.host}") from e
        self.stats.answered(method, exchange.response.status, time.perf_counter() - started)
        return exchange

    async def _failure(self, e: Exception) -> UpstreamError:
        """The error a failed exchange is for the client; connection failures and timeouts
        count towards the circuit breaker."""
        self.stats.failed(e)
        if isinstance(e, aiohttp.ClientConnectorError) and isinstance(e.os_error, RefusedAddress):
            return UpstreamError(str(e.os_error))
        if isinstance(e, TimeoutError):
            await self.health.failed()
            return UpstreamTimeout(f"{self.name} did not answer in time")
        if isinstance(e, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError)):
            await self.health.failed()
            return UpstreamUnavailable(f"{self.name} is unreachable")
        return UpstreamError(f"{self.name} {describe(e)}")

    async def _overdue(self, e: TimeoutError) -> UpstreamTimeout:
        """A request past the API deadline (a blob's, before its body): a timeout like any
        other, for the circuit breaker and for stale-if-error."""
        self.stats.failed(e)
        await self.health.failed()
        deadline = self.settings.api_deadline
        return UpstreamTimeout(f"{self.name} did not answer within {deadline:g} s (api_timeout)")

    async def _observe(self, resp: aiohttp.ClientResponse) -> None:
        """What every answer tells: the upstream is up, and how much of its limit is left."""
        log.note_upstream(resp.status)
        self.health.answered()
        await self.health.saw_headers(resp.headers)

    def _redirect_target(self, current: URL, location: str) -> URL:
        try:
            # Signed CDN URLs must be kept byte-exact (encoded=True): re-quoting breaks them.
            target = current.join(URL(location, encoded=True))
            self._guard.check(current, target, "redirect")
        except ValueError:  # yarl could not make a URL (or a host) of it
            raise UpstreamError(f"{self.name} redirected to an unusable location") from None
        return target

    async def _check_status(
        self, resp: aiohttp.ClientResponse, repo: str, not_found: type[MirrorError]
    ) -> None:
        status = resp.status
        # Only these carry content: a 204 (or any other 2xx) is no manifest, tag list or blob,
        # and taken as one it would be kept as empty content. A 206 is a blob's, whose
        # Content-Range the blob's reader checks.
        if status in (200, 206):
            return
        retry = parse.retry_after(resp.headers.get("Retry-After"))
        if status == 429:
            await self.health.spare(retry, "429 from upstream")
        code, message = await _upstream_error(resp)
        if status == 404:
            unknown = _NOT_FOUND.get(code or "", not_found)
            raise unknown(message or f"{repo}: not found at {self.name}")
        if status == 429:
            raise UpstreamThrottled(
                message or f"{self.name} is rate limiting pulls",
                headers={"Retry-After": f"{retry:.0f}"},
            )
        if status == 401:
            raise _unauthorized(self.name, repo, resp.headers.get("WWW-Authenticate"), message)
        if status == 403:
            raise Denied(message or f"{self.name} denied access to {repo}")
        if status == 503:
            # Unavailable for a while: the client may wait as long as the upstream says.
            wait = {"Retry-After": f"{retry:.0f}"} if "Retry-After" in resp.headers else None
            raise UpstreamUnavailable(f"{self.name} answered 503", headers=wait)
        if status >= 500:
            raise UpstreamError(f"{self.name} answered {status}")
        raise UpstreamError(f"{self.name} answered {status} unexpectedly")


def _unauthorized(name: str, repo: str, challenge: str | None, message: str | None) -> MirrorError:
    """A 401 that a fresh token did not cure. With `insufficient_scope` the token is valid but
    grants nothing: Docker Hub says so for a repository that does not exist, so clients must not
    be told to log in to a mirror that has no login."""
    if is_insufficient_scope(challenge):
        return NameUnknown(
            f"{repo} does not exist at {name}, or the mirror's credentials cannot read it"
        )
    return Denied(message or f"{name} denied access to {repo}")


async def _upstream_error(resp: aiohttp.ClientResponse) -> tuple[str | None, str | None]:
    """The first OCI error code and message of an error body, if there is one."""
    if resp.method == "HEAD":
        return None, None
    try:
        body = jsondoc.parse(await read_limited(resp, MAX_ERROR_SIZE, "an error body"))
        first = body["errors"][0]
        return str(first["code"]), str(first.get("message") or "")[:500] or None
    except (ValueError, KeyError, IndexError, TypeError, MirrorError, aiohttp.ClientError):
        return None, None
