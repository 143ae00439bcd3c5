"""Tag lists: the upstream's whole list, paged by the mirror as the OCI distribution spec says
(lexical order, `last`, `n`, a `Link` back to the mirror), and kept on disk for outages."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from yarl import URL

from mirror.storage.layout import CacheLayout
from mirror.storage.tags import TagStore
from tests.conftest import MirrorFactory, RegistryFactory, Seeded
from tests.faults import FakeFactory, content, status, tags_pages
from tests.support.images import make_image, push_image
from tests.support.oci import ACCEPT_ALL, assert_oci_error
from tests.support.registry import Registry

TAGS = ["a1", "b2", "c3", "d4", "e5"]
LIST = "/v2/lib/app/tags/list"


def next_link(response: ClientResponse) -> URL | None:
    """The target of the answer's `Link: <…>; rel="next"`, if any."""
    found = response.links.get("next")
    return URL(str(found["url"])).relative() if found else None


async def tags_of(client: TestClient[Any, Any], path: str, **params: str) -> list[str]:
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    document = await response.json()
    assert isinstance(document["tags"], list)
    return list(document["tags"])


def careless(tags: list[str]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An upstream that ignores `n` and `last` and lists tags in no particular order."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = json.dumps({"name": "lib/app", "tags": tags}).encode()
        return web.Response(body=body, content_type="application/json")

    return handler


async def test_tags_list_is_proxied_from_the_real_registry(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """The list comes from upstream, with the repository name the client asked for."""
    repo, tag = seeded.schema2_ref
    client = await make_mirror(registry)
    response = await client.get(f"/v2/{repo}/tags/list")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert document == {"name": repo, "tags": [tag]}


async def test_pages_follow_the_spec_on_the_real_registry(
    make_mirror: MirrorFactory, registry: Registry
) -> None:
    """`last` excludes itself (the CNCF registry 2.8 returns it), `n` bounds, `Link` chains."""
    image = make_image(seed="tags-paging")
    for tag in ("1", "2", "3", "4"):
        push_image(registry.url, "paging/app", tag, image)
    client = await make_mirror(registry)
    path = "/v2/paging/app/tags/list"
    assert await tags_of(client, path, last="1") == ["2", "3", "4"]
    assert await tags_of(client, path, last="1", n="2") == ["2", "3"]
    pages, target = [], URL(path).with_query(n="3")
    while True:
        response = await client.get(target.path_qs)
        assert response.status == 200
        pages.append((await response.json())["tags"])
        following = next_link(response)
        if following is None:
            break
        assert response.headers["Link"].startswith(f"<{path}?"), "Link points away from us"
        assert following.path == path
        target = following
    assert pages == [["1", "2", "3"], ["4"]]


async def test_pages_follow_the_spec_whatever_the_upstream_does(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """An upstream ignoring `n`/`last` and sending tags unsorted still yields spec pages."""
    fake = await make_fake_upstream()
    fake.route(LIST, careless(["d4", "b2", "e5", "a1", "c3", "b2"]))
    client = await make_mirror(fake)
    assert await tags_of(client, LIST) == TAGS
    assert await tags_of(client, LIST, last="b2") == ["c3", "d4", "e5"]
    assert await tags_of(client, LIST, last="b") == ["b2", "c3", "d4", "e5"]
    assert await tags_of(client, LIST, n="0") == []
    response = await client.get(LIST, params={"n": "2", "last": "a1", "ns": "docker.io"})
    assert (await response.json())["tags"] == ["b2", "c3"]
    assert response.headers["OCI-Namespace"] == "docker.io"
    following = next_link(response)
    assert following is not None
    assert following.query == {"n": "2", "last": "c3", "ns": "docker.io"}
    response = await client.get(following.path_qs)
    assert (await response.json())["tags"] == ["d4", "e5"]
    assert next_link(response) is None, "the last page links nowhere"


async def test_an_upstream_that_pages_unasked_is_read_to_the_end(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """Pages the upstream splits its list into are followed; the client sees the whole list."""
    fake = await make_fake_upstream()
    pages = tags_pages("lib/app", TAGS)

    async def two_at_a_time(request: web.Request) -> web.StreamResponse:
        if "n" not in request.query:
            request = request.clone(rel_url=request.rel_url.update_query(n="2"))
        return await pages(request)

    fake.route(LIST, two_at_a_time)
    client = await make_mirror(fake)
    assert await tags_of(client, LIST) == TAGS
    assert len(fake.seen("GET", LIST)) == 3


@pytest.mark.parametrize("n", ["-1", "abc", "²", "1.5", "9" * 20])
async def test_an_invalid_n_is_an_oci_error(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, n: str
) -> None:
    """`n` must be a non-negative integer: anything else is 400 PAGINATION_NUMBER_INVALID."""
    fake = await make_fake_upstream()
    fake.route(LIST, careless(TAGS))
    client = await make_mirror(fake)
    response = await client.get(LIST, params={"n": n})
    await assert_oci_error(response, 400, "PAGINATION_NUMBER_INVALID")
    assert not fake.seen("GET", LIST), "an invalid request went upstream"


async def test_the_last_tag_list_survives_a_restart_and_an_outage(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """After a restart with the upstream failing, the list last seen of a repository the
    cache holds a tag of is served (and paged)."""
    fake = await make_fake_upstream()
    fake.route(LIST, careless(TAGS))
    image = make_image(seed="tags-kept")
    fake.route("/v2/lib/app/manifests/c3", content(image.manifest, image.media_type))
    first = await make_mirror(fake)
    pulled = await first.get("/v2/lib/app/manifests/c3", headers={"Accept": ACCEPT_ALL})
    assert pulled.status == 200
    assert await tags_of(first, LIST) == TAGS
    await first.close()
    fake.route(LIST, status(503, "UNAVAILABLE"))
    again = await make_mirror(fake)
    assert await tags_of(again, LIST) == TAGS
    assert await tags_of(again, LIST, n="2", last="b2") == ["c3", "d4"]


async def test_with_no_list_stored_an_offline_mirror_lists_the_tags_it_has(
    make_mirror: MirrorFactory, make_registry: RegistryFactory
) -> None:
    """Tags pulled before are listed when the upstream is gone (skopeo inspect lists tags)."""
    upstream = make_registry()
    image = make_image(seed="tags-offline")
    for tag in ("v2", "v1"):
        push_image(upstream.url, "app/offline", tag, image)
    first = await make_mirror(upstream)
    for tag in ("v2", "v1"):
        response = await first.get(
            f"/v2/app/offline/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
        )
        assert response.status == 200
    await first.close()
    upstream.stop()
    again = await make_mirror(upstream)
    assert await tags_of(again, "/v2/app/offline/tags/list") == ["v1", "v2"]
    response = await again.get("/v2/app/never/tags/list")
    await assert_oci_error(response, 503, "UNAVAILABLE")


async def test_lists_of_repositories_the_cache_does_not_hold_are_not_kept(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Any client may list any name, and an upstream may answer each with a big list: only
    the lists of repositories the cache holds tags of are kept on disk, and each goes with
    the repository's last tag."""
    fake = await make_fake_upstream()
    many = [f"t{i:05d}" for i in range(2000)]
    for i in range(20):
        fake.route(f"/v2/junk/r{i}/tags/list", careless(many))
    fake.route(LIST, careless(TAGS))
    image = make_image(seed="tags-held")
    fake.route("/v2/lib/app/manifests/a1", content(image.manifest, image.media_type))
    client = await make_mirror(fake)
    for i in range(20):
        assert await tags_of(client, f"/v2/junk/r{i}/tags/list") == many
    assert not (cache_dir / "tags" / "docker.io" / "junk").exists()
    pulled = await client.get("/v2/lib/app/manifests/a1", headers={"Accept": ACCEPT_ALL})
    assert pulled.status == 200
    assert await tags_of(client, LIST) == TAGS
    kept = cache_dir / "tags" / "docker.io" / "lib" / "app" / "_list"
    assert kept.exists()
    store = TagStore(CacheLayout(cache_dir))
    (entry,) = [e for e in store.iter_tags() if e.repo == "lib/app"]
    assert store.remove(entry)
    assert not kept.exists()


async def test_a_list_too_long_to_keep_is_served_but_not_kept(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A list of some 100,000 tags (3 MiB of JSON, past what any real repository has) is
    served whole but not kept, and the shorter list kept before it goes: an outage then
    lists the tags the cache holds."""
    fake = await make_fake_upstream()
    fake.route(LIST, careless(TAGS))
    image = make_image(seed="tags-too-many")
    fake.route("/v2/lib/app/manifests/a1", content(image.manifest, image.media_type))
    client = await make_mirror(fake)
    pulled = await client.get("/v2/lib/app/manifests/a1", headers={"Accept": ACCEPT_ALL})
    assert pulled.status == 200
    assert await tags_of(client, LIST) == TAGS
    kept = cache_dir / "tags" / "docker.io" / "lib" / "app" / "_list"
    assert kept.exists()
    many = [f"nightly-{i:06d}-{'0' * 16}" for i in range(100_000)]
    fake.route(LIST, careless(many))
    assert await tags_of(client, LIST) == many
    assert not kept.exists()
    fake.route(LIST, status(503, "UNAVAILABLE"))
    assert await tags_of(client, LIST) == ["a1"]
