"""The upstream registry, spoken to with the OCI distribution API.

Every upstream failure becomes a `MirrorError` (see `client`), so the policy layer sees only two
kinds of outcome: an authoritative answer (content, or "not found") and `UpstreamError` (the
upstream could not answer; a cached answer may be served instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from mirror import jsondoc
from mirror.config.upstreams import UpstreamSettings
from mirror.errors import (
    BlobUnknown,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    UpstreamError,
    UpstreamTimeout,
)
from mirror.meta.store import MetadataStore
from mirror.metrics.hooks import UNOBSERVED, UpstreamStats
from mirror.oci.contents import InvalidManifest, media_type_of
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import MANIFEST_TYPES, OCI_INDEX, UPSTREAM_ACCEPT
from mirror.oci.names import validate_tag
from mirror.upstream.client import UpstreamClient
from mirror.upstream.pool import (
    MAX_MANIFEST_SIZE,
    MAX_REFERRERS_SIZE,
    MAX_TAG_LIST_SIZE,
    read_limited,
)
from mirror.upstream.targets import Network

# Pages of one tag list followed at most (each must bring new tags; the bytes are capped too).
MAX_TAG_PAGES = 1000


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What an upstream HEAD says of a manifest; the digest may be missing, and the size is
    missing too when the HEAD cannot stand for the manifest."""

    digest: Digest | None
    media_type: str
    size: int | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A listing's body and the upstream headers that belong with it."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """Verified bytes, and the manifest type they are served as."""

    digest: Digest
    media_type: str
    data: bytes


class UpstreamRegistry:
    """One upstream registry: manifests, blobs, tag lists and referrers."""

    relayed = False  # a fill's `BlobSource`: its bodies come from the upstream itself

    def __init__(
        self,
        settings: UpstreamSettings,
        meta: MetadataStore,
        *,
        user_agent: str,
        network: Network | None = None,
        stats: UpstreamStats = UNOBSERVED,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.client = UpstreamClient(
            settings, meta, user_agent=user_agent, network=network or Network(), stats=stats
        )
        self.health = self.client.health
        self.stats = stats

    async def close(self) -> None:
        await self.client.close()

    @asynccontextmanager
    async def _api(
        self,
        method: str,
        repo: str,
        path: str,
        headers: Mapping[str, str],
        not_found: type[MirrorError],
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        client = self.client
        url = client.url(repo, path, query)
        async with client.request(client.api, method, repo, url, headers, not_found) as resp:
            yield resp

    async def head_manifest(self, repo: str, reference: str) -> ManifestHead:
        async with self._api(
            "HEAD", repo, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}, ManifestUnknown
        ) as resp:
            media_type = _media_type(resp.headers)
            # A type no manifest is served as leaves the size unsaid: only a GET, whose body
            # may name its own type, can then answer.
            size = resp.content_length if media_type in MANIFEST_TYPES else None
            return ManifestHead(_digest_header(resp.headers), media_type, size)

    async def get_manifest(self, repo: str, reference: str) -> FetchedManifest:
        """GET and verify: the bytes must hash to the requested digest, or to the one the
        upstream names; anything else is a lying or broken upstream."""
        async with self._api(
            "GET", repo, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}, ManifestUnknown
        ) as resp:
            data = await read_limited(
                resp,
                MAX_MANIFEST_SIZE,
                f"manifest {reference} from {self.name}",
                self.stats.received,
            )
            claimed = _digest_header(resp.headers)
            media_type = _media_type(resp.headers)
        expected = Digest.parse(reference) if ":" in reference else claimed
        actual = Digest.of(data, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise UpstreamError(f"{self.name} sent a manifest whose digest is not {expected}")
        try:
            media_type = media_type_of(data, media_type)
        except InvalidManifest as e:
            raise UpstreamError(f"{self.name} sent manifest {reference}, whose {e}") from None
        return FetchedManifest(actual, media_type, data)

    async def head_blob(self, repo: str, digest: Digest) -> int | None:
        async with self._api("HEAD", repo, f"blobs/{digest}", {}, BlobUnknown) as resp:
            return resp.content_length

    @asynccontextmanager
    async def open_blob(
        self, repo: str, digest: Digest, offset: int = 0
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The blob's body, from `offset` on (a Range request; the caller checks the answer),
        through the blob pool."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        client = self.client
        url = client.url(repo, f"blobs/{digest}")
        async with client.request(client.blobs, "GET", repo, url, headers, BlobUnknown) as resp:
            yield resp

    async def get_tags(self, repo: str) -> list[str]:
        """Every tag of `repo`, sorted: the upstream's pages followed to the end, since an
        upstream may page even unasked; its own `n` and `last` handling is never relied on."""
        what = f"the tag list of {repo} from {self.name}"
        deadline = self.settings.api_deadline
        # One deadline for all the pages: each alone within it, a thousand of them are not.
        try:
            async with asyncio.timeout(deadline) as whole:
                return await self._tag_pages(repo, what)
        except TimeoutError:
            if not whole.expired():
                raise
            raise UpstreamTimeout(
                f"{what} did not come within {deadline:g} s (api_timeout)"
            ) from None

    async def _tag_pages(self, repo: str, what: str) -> list[str]:
        tags: set[str] = set()
        query: Mapping[str, str] = {}
        budget = MAX_TAG_LIST_SIZE
        for _ in range(MAX_TAG_PAGES):
            async with self._api("GET", repo, "tags/list", {}, NameUnknown, query) as resp:
                body = await read_limited(resp, budget, what, self.stats.received)
                following = _next_page(resp)
            budget -= len(body)
            before = len(tags)
            tags.update(_tag_names(body, what))
            if following is None or len(tags) == before:
                return sorted(tags)
            query = following
        raise UpstreamError(f"{what} has more than {MAX_TAG_PAGES} pages")

    async def get_referrers(
        self, repo: str, digest: Digest, query: Mapping[str, str]
    ) -> Listing | None:
        """The referrers index (OCI 1.1), or None when the upstream lacks the API."""
        try:
            async with self._api(
                "GET", repo, f"referrers/{digest}", {"Accept": OCI_INDEX}, NameUnknown, query
            ) as resp:
                body = await read_limited(
                    resp,
                    MAX_REFERRERS_SIZE,
                    f"the referrers of {digest} from {self.name}",
                    self.stats.received,
                )
                filters = resp.headers.get("OCI-Filters-Applied")
        except (NameUnknown, ManifestUnknown):
            return None
        return Listing(body, {"OCI-Filters-Applied": filters} if filters else {})


def _next_page(resp: aiohttp.ClientResponse) -> dict[str, str] | None:
    """The query of the `Link: <…>; rel="next"` page (RFC 8288), if any. Only its query is
    kept: the next page is asked of the same path on the same upstream, wherever it points."""
    try:
        link = resp.links.get("next")
    except ValueError:  # a Link whose URL does not parse
        return None
    target = link.get("url") if link is not None else None
    if not isinstance(target, URL):
        return None
    return dict(target.query) or None


def _tag_names(body: bytes, what: str) -> list[str]:
    """The valid tag names of one page (`{"name": …, "tags": […]}`; `null` is none)."""
    try:
        document = jsondoc.parse(body)
    except ValueError:
        raise UpstreamError(f"{what} is not JSON") from None
    tags = document.get("tags", ()) if isinstance(document, dict) else ()
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise UpstreamError(f"{what} has no list of tags")
    names = []
    for tag in tags:
        try:
            names.append(validate_tag(tag))
        except (MirrorError, TypeError):
            continue  # not a tag a client could ask for
    return names


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
