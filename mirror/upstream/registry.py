"""The upstream registry client: authenticated, redirect-safe requests and failure translation.

Every upstream failure becomes a `MirrorError` here, so the policy layer sees only two kinds of
outcome: an authoritative answer (content, or "not found") and `UpstreamError` (the upstream could
not answer; a cached answer may be served instead).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import aiohttp
from cachetools import LRUCache
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mirror import log
from mirror.config.upstreams import UpstreamSettings
from mirror.errors import (
    BlobUnknown,
    Denied,
    ManifestInvalid,
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
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_INDEX, UPSTREAM_ACCEPT
from mirror.upstream.auth import Authenticator
from mirror.upstream.health import UpstreamHealth

# containerd's limit (remotes/docker MaxManifestSize); a bigger "manifest" is not one.
MAX_MANIFEST_SIZE = 4 << 20
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NOT_FOUND = {
    "NAME_UNKNOWN": NameUnknown,
    "MANIFEST_UNKNOWN": ManifestUnknown,
    "BLOB_UNKNOWN": BlobUnknown,
}


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What an upstream HEAD says of a manifest; the digest may be missing."""

    digest: Digest | None
    media_type: str
    size: int | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A listing's body and the upstream headers that belong with it."""

    body: bytes
    headers: dict[str, str]


def _kept(resp: aiohttp.ClientResponse, name: str) -> dict[str, str]:
    return {name: resp.headers[name]} if name in resp.headers else {}


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    digest: Digest
    media_type: str
    data: bytes


def make_session(settings: UpstreamSettings, user_agent: str) -> aiohttp.ClientSession:
    """The upstream's one session: no total timeout (big layers take long), but bounded
    connect and per-read waits, its own connection limit, and no transparent decompression
    (it would change digests)."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.max_connections),
        timeout=timeout,
        # A deeper read buffer lets a blob keep arriving while a thread writes and hashes
        # the previous batch.
        read_bufsize=4 << 20,
        auto_decompress=False,
        headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        # Cookies from an upstream or a CDN must not follow us to other requests.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class UpstreamRegistry:
    """One upstream registry, spoken to with the OCI distribution API."""

    def __init__(
        self, settings: UpstreamSettings, session: aiohttp.ClientSession, meta: MetadataStore
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self._session = session
        self._base = URL(settings.url)
        self._auth = Authenticator(settings, session)
        self._foreign: LRUCache[URL, Authenticator] = LRUCache(maxsize=32)
        self.health = UpstreamHealth(settings, meta, self.ping)

    def _authenticator(self, origin: URL) -> Authenticator:
        """The upstream's own (with its credentials), or an anonymous one for another origin
        (registry.k8s.io redirects to regional registries that challenge on their own)."""
        if origin == self._base.origin():
            return self._auth
        if (found := self._foreign.get(origin)) is None:
            anonymous = replace(self.settings, url=str(origin), username=None, password=None)
            found = self._foreign[origin] = Authenticator(anonymous, self._session)
        return found

    async def ping(self) -> bool:
        """Whether the upstream answers HTTP at all (any status will do)."""
        try:
            async with self._session.get(
                self._base.with_path(f"{self._base.path.rstrip('/')}/v2/"),
                timeout=aiohttp.ClientTimeout(total=self.settings.connect_timeout + 5),
                allow_redirects=False,
            ):
                return True
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        await self.health.close()
        await self._session.close()

    async def head_manifest(self, repo: str, reference: str) -> ManifestHead:
        async with self._request(
            "HEAD", repo, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}, ManifestUnknown
        ) as resp:
            return ManifestHead(
                _digest_header(resp.headers), _media_type(resp.headers), resp.content_length
            )

    async def get_manifest(self, repo: str, reference: str) -> FetchedManifest:
        """GET and verify: the bytes must hash to the requested digest, or to the one the
        upstream names; anything else is a lying or broken upstream."""
        async with self._request(
            "GET", repo, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}, ManifestUnknown
        ) as resp:
            if (resp.content_length or 0) > MAX_MANIFEST_SIZE:
                raise ManifestInvalid(f"manifest {reference} from {self.name} is too large")
            data = await _read_limited(resp, MAX_MANIFEST_SIZE, self.name)
            claimed = _digest_header(resp.headers)
            media_type = _media_type(resp.headers)
        expected = Digest.parse(reference) if ":" in reference else claimed
        actual = Digest.of(data, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise UpstreamError(f"{self.name} sent a manifest whose digest is not {expected}")
        return FetchedManifest(actual, media_type, data)

    async def head_blob(self, repo: str, digest: Digest) -> int | None:
        async with self._request("HEAD", repo, f"blobs/{digest}", {}, BlobUnknown) as resp:
            return resp.content_length

    @asynccontextmanager
    async def open_blob(
        self, repo: str, digest: Digest, offset: int = 0
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The blob's body, from `offset` on (a Range request; the caller checks the answer)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self._request("GET", repo, f"blobs/{digest}", headers, BlobUnknown) as resp:
            yield resp

    async def get_tags(self, repo: str, query: Mapping[str, str]) -> Listing:
        """A tag list page and its `Link` header, as the upstream sent them."""
        async with self._request("GET", repo, "tags/list", {}, NameUnknown, query) as resp:
            return Listing(await _read_limited(resp, 16 << 20, self.name), _kept(resp, "Link"))

    async def get_referrers(
        self, repo: str, digest: Digest, query: Mapping[str, str]
    ) -> Listing | None:
        """The referrers index (OCI 1.1), or None when the upstream lacks the API."""
        try:
            async with self._request(
                "GET", repo, f"referrers/{digest}", {"Accept": OCI_INDEX}, NameUnknown, query
            ) as resp:
                body = await _read_limited(resp, MAX_MANIFEST_SIZE, self.name)
                return Listing(body, _kept(resp, "OCI-Filters-Applied"))
        except (NameUnknown, ManifestUnknown):
            return None

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        repo: str,
        path: str,
        headers: Mapping[str, str],
        not_found: type[MirrorError],
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One logical request: auth challenge answered once, redirects followed by hand so
        that `Authorization` never leaves the upstream's origin; yields a 2xx response."""
        if self.settings.offline:
            raise offline_miss(
                not_found,
                f"{self.name}/{repo}/{path} is not in the cache, and the mirror is offline "
                "(--offline): no upstream is contacted",
            )
        if await self.health.is_open():
            raise UpstreamUnavailable(f"{self.name} is failing; it is not contacted for now")
        scope = f"repository:{repo}:pull"
        url = self._base.with_path(f"{self._base.path.rstrip('/')}/v2/{repo}/{path}", encoded=False)
        if query:
            url = url.with_query(query)
        # What to send to each origin on the way: only the upstream's own origin ever gets
        # its credentials; a redirect target that challenges gets an anonymous token of its own.
        authorizations = {self._base.origin(): await self._auth.authorization(scope)}
        challenged: set[URL] = set()
        try:
            for _ in range(MAX_REDIRECTS + 2):
                origin = url.origin()
                send = CIMultiDict(headers)
                if authorization := authorizations.get(origin):
                    send["Authorization"] = authorization
                resp = await self._session.request(method, url, headers=send, allow_redirects=False)
                log.note_upstream(resp.status)
                self.health.answered()
                await self.health.saw_headers(resp.headers)
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    resp.release()
                    url = _redirect_target(resp.url, resp.headers["Location"], self.name)
                    if url.origin() not in authorizations and url.origin() in self._foreign:
                        authorizations[url.origin()] = await self._foreign[
                            url.origin()
                        ].authorization(scope)
                    continue
                if resp.status == 401 and origin not in challenged:
                    challenged.add(origin)
                    resp.release()
                    header = resp.headers.get("WWW-Authenticate")
                    answer = await self._authenticator(origin).answer(
                        header, scope, authorizations.get(origin)
                    )
                    if answer is not None:
                        authorizations[origin] = answer
                        continue
                    raise Denied(f"{self.name} denied access to {repo}")
                try:
                    if resp.status == 429:
                        await self.health.spare(_retry_after(resp.headers), "429 from upstream")
                    if resp.status >= 300:
                        await _raise_for(resp, self.name, repo, not_found)
                    yield resp
                finally:
                    resp.release()
                return
            raise UpstreamError(f"{self.name} redirected too many times")
        except (aiohttp.ServerTimeoutError, TimeoutError) as e:
            await self.health.failed()
            raise UpstreamTimeout(f"{self.name} did not answer in time") from e
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as e:
            await self.health.failed()
            raise UpstreamUnavailable(f"{self.name} is unreachable") from e
        except aiohttp.ClientError as e:
            raise UpstreamError(f"{self.name} failed: {type(e).__name__}") from e


def _retry_after(headers: CIMultiDictProxy[str]) -> float:
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else 60.0


def _redirect_target(current: URL, location: str, name: str) -> URL:
    # Signed CDN URLs must be kept byte-exact (encoded=True): re-quoting breaks the signature.
    target = current.join(URL(location, encoded=True))
    if target.scheme not in ("http", "https") or not target.host:
        raise UpstreamError(f"{name} redirected to an unsupported location")
    return target


async def _raise_for(
    resp: aiohttp.ClientResponse, name: str, repo: str, not_found: type[MirrorError]
) -> None:
    status = resp.status
    code, message = await _upstream_error(resp)
    if status == 404:
        cls = _NOT_FOUND.get(code or "", not_found)
        raise cls(message or f"{repo}: not found at {name}")
    if status == 429:
        retry = f"{_retry_after(resp.headers):.0f}"
        raise UpstreamThrottled(
            message or f"{name} is rate limiting pulls", headers={"Retry-After": retry}
        )
    if status in (401, 403):
        raise Denied(message or f"{name} denied access to {repo}")
    if status >= 500:
        raise UpstreamError(f"{name} answered {status}")
    raise UpstreamError(f"{name} answered {status} unexpectedly")


async def _upstream_error(resp: aiohttp.ClientResponse) -> tuple[str | None, str | None]:
    """The first OCI error code and message of an error body, if there is one."""
    if resp.method == "HEAD":
        return None, None
    try:
        body = json.loads(await _read_limited(resp, 64 << 10, ""))
        first = body["errors"][0]
        return str(first["code"]), str(first.get("message") or "")[:500] or None
    except (ValueError, KeyError, IndexError, TypeError, MirrorError, aiohttp.ClientError):
        return None, None


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, name: str) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        data += chunk
        if len(data) > limit:
            raise UpstreamError(f"{name} sent more than {limit} bytes")
    return bytes(data)


def _digest_header(headers: CIMultiDictProxy[str]) -> Digest | None:
    value = headers.get("Docker-Content-Digest")
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except MirrorError:
        return None


def _media_type(headers: CIMultiDictProxy[str]) -> str:
    return headers.get("Content-Type", "").split(";", 1)[0].strip() or "application/octet-stream"
