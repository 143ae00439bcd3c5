"""Junk requests cannot grow the mirror's memory: token caches, token fetches and remembered
listings stay within their bounds however many repositories clients ask for."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiohttp import web

from mirror.api.hot import HotAnswers
from mirror.api.keys import HOT_ANSWERS, LISTINGS, ROUTER
from mirror.pullthrough.listings import REFERRERS_MEMORY
from mirror.upstream.auth import TOKEN_CACHE_BYTES
from tests.conftest import MirrorFactory
from tests.faults import FakeFactory, bearer_auth, content, error, token_endpoint

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
