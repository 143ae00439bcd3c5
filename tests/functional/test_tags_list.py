"""Tag lists are live upstream data, proxied with `n`, `last` and a `Link` pointing back here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from yarl import URL

from tests.conftest import MirrorFactory, Seeded
from tests.faults import FakeUpstream, tags_pages
from tests.support.registry import Registry

FakeFactory = Callable[[], Awaitable[FakeUpstream]]
TAGS = ["a1", "b2", "c3", "d4", "e5"]


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


async def test_tags_list_passes_n_and_last_and_rewrites_link_to_the_mirror(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """Clients follow `Link` to page; the next page must be fetched through the mirror too."""
    fake = await make_fake_upstream()
    fake.route("/v2/lib/app/tags/list", tags_pages("lib/app", TAGS))
    client = await make_mirror(fake)

    response = await client.get("/v2/lib/app/tags/list", params={"n": "2"})
    assert response.status == 200
    assert (await response.json())["tags"] == ["a1", "b2"]
    assert fake.seen("GET", "/v2/lib/app/tags/list")[-1].path == "/v2/lib/app/tags/list?n=2"
    link = response.headers["Link"]
    assert 'rel="next"' in link
    target = URL(link[link.index("<") + 1 : link.index(">")])
    assert target.host in (None, client.host), f"Link points away from the mirror: {link}"
    assert target.path == "/v2/lib/app/tags/list"
    assert target.query.get("last") == "b2"

    following = await client.get(target.path_qs)
    assert following.status == 200
    assert (await following.json())["tags"] == ["c3", "d4"]

    response = await client.get("/v2/lib/app/tags/list", params={"last": "c3"})
    assert response.status == 200
    assert (await response.json())["tags"] == ["d4", "e5"]
    assert "Link" not in response.headers
    assert fake.seen("GET", "/v2/lib/app/tags/list")[-1].path == "/v2/lib/app/tags/list?last=c3"
