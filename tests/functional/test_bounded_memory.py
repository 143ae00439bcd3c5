"""Junk requests cannot grow the mirror's memory: token caches, token fetches and remembered
listings stay within their bounds however many repositories clients ask for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tomllib
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from mirror.api.hot import HotAnswers
from mirror.api.keys import HOT_ANSWERS, LISTINGS, ROUTER
from mirror.cache.links import Links, links
from mirror.config import Settings, UpstreamSettings
from mirror.config.access import parse_access
from mirror.pullthrough import holdings
from mirror.pullthrough.holdings import MAX_NAMED
from mirror.pullthrough.listings import REFERRERS_MEMORY
from mirror.upstream.auth import TOKEN_CACHE_BYTES
from tests.conftest import MirrorFactory, MirrorFromSettings
from tests.faults import FakeFactory, bearer_auth, content, error, token_endpoint
from tests.support.images import OCI_MANIFEST

REPOSITORIES = 1500
HOT_MEMORY = HotAnswers().memory_bound
TOKEN = "t" * 8000  # a JWT carrying many claims: ~125 fit in the token cache
SUBJECT = "sha256:" + "ab" * 32
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
        "annotations": {"padding": "p" * 8000},
    }
).encode()


async def referrers(request: web.Request) -> web.StreamResponse:
    return web.Response(body=INDEX, content_type="application/vnd.oci.image.index.v1+json")


async def missing(request: web.Request) -> web.StreamResponse:
    return error(404, "NAME_UNKNOWN")


async def test_thousands_of_random_repositories_leave_the_maps_bounded(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """Each repository costs a token and a referrers answer; neither map outgrows its bound,
    and no token fetch is left behind."""
    fake = await make_fake_upstream()
    fake.route("/token", token_endpoint(TOKEN))
    names = [f"junk/{uuid.uuid4().hex[:12]}" for _ in range(REPOSITORIES)]
    for name in names:
        scope = f"repository:{name}:pull"
        fake.route(
            f"/v2/{name}/manifests/latest",
            bearer_auth(f"{fake.url}/token", "svc", TOKEN, scope, missing),
        )
        fake.route(f"/v2/{name}/referrers/{SUBJECT}", referrers)
    client = await make_mirror(fake)

    async def junk(name: str) -> None:
        response = await client.get(f"/v2/{name}/manifests/latest")
        assert response.status == 404, await response.text()
        response = await client.get(f"/v2/{name}/referrers/{SUBJECT}")
        assert response.status == 200
        assert await response.read() == INDEX

    for start in range(0, REPOSITORIES, 50):
        await asyncio.gather(*(junk(name) for name in names[start : start + 50]))

    assert len(fake.seen("GET", "/token")) >= REPOSITORIES, "each repository needed a token"
    auth = client.app[ROUTER].route(names[0], None).upstream.client.auth
    assert 0 < auth.cached_tokens <= TOKEN_CACHE_BYTES // len(TOKEN)
    assert auth.fetches_in_flight == 0
    assert 0 < client.app[LISTINGS].memory <= REFERRERS_MEMORY


async def test_ready_answers_stay_within_their_bytes_whatever_the_accept_headers(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """Every Accept header is a key of its own for the ready manifest answers: thousands of
    them for a big manifest keep those answers within their memory bound."""
    fake = await make_fake_upstream()
    big = json.loads(INDEX)
    big["annotations"]["padding"] = "p" * (1 << 20)
    body = json.dumps(big).encode()
    fake.route("/v2/lib/app/manifests/v1", content(body, "application/vnd.oci.image.index.v1+json"))
    client = await make_mirror(fake)
    for n in range(200):
        accept = f"application/vnd.oci.image.index.v1+json, application/x-junk-{n}"
        response = await client.get("/v2/lib/app/manifests/v1", headers={"Accept": accept})
        assert response.status == 200
        assert await response.read() == body
    hot = client.app[HOT_ANSWERS]
    assert 0 < hot.memory <= HOT_MEMORY


def _wide_manifest(tag: str, layers: int) -> bytes:
    """An image manifest naming `layers` distinct layers (about 100 bytes of JSON each)."""
    layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(tag.encode()).hexdigest(),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": layer,
                    "digest": "sha256:" + hashlib.sha256(f"{tag}-{n}".encode()).hexdigest(),
                    "size": 1,
                }
                for n in range(layers)
            ],
        }
    ).encode()


async def test_what_wide_manifests_name_stays_within_its_bound(
    mirror_from: MirrorFromSettings,
    make_fake_upstream: FakeFactory,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With access rules, what each repository's manifests name is remembered for outages:
    manifests naming tens of thousands of layers each keep that memory within its bound, and
    each is read for it once, not again at every request (each a good part of a second of
    the event loop for the biggest)."""
    assert len(links(_wide_manifest("t0", 20_000)).blobs) > MAX_NAMED
    reads: list[int] = []

    def counted(data: bytes) -> Links:
        reads.append(len(data))
        return links(data)

    monkeypatch.setattr(holdings, "links", counted)
    fake = await make_fake_upstream()
    tags = [f"t{n}" for n in range(4)]
    for tag in tags:
        manifest = _wide_manifest(tag, 20_000)
        fake.route(f"/v2/lib/wide/manifests/{tag}", content(manifest, OCI_MANIFEST))
    rules = '[[access]]\nanonymous = true\nallow = ["docker.io/*"]\n'
    client = await mirror_from(
        Settings(
            cache_dir=cache_dir,
            upstreams=(UpstreamSettings(default=True, url=fake.url),),
            access=parse_access(tomllib.loads(rules)["access"]),
        )
    )
    for tag in tags:
        response = await client.get(
            f"/v2/lib/wide/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
        )
        assert response.status == 200, await response.text()
    for n in range(10):
        accept = f"{OCI_MANIFEST}, application/x-junk-{n}"  # past the ready answers
        response = await client.get(f"/v2/lib/wide/manifests/{tags[0]}", headers={"Accept": accept})
        assert response.status == 200
    # t0's names were forgotten for the others' (each names more than the bound): read again once.
    assert len(reads) == len(tags) + 1
