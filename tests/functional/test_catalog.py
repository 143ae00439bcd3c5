"""The catalog's cost: `/v2/_catalog` answers from one walk of the cache until a repository is
cached, pushed or removed, by this process or another on the cache directory, and pages that
listing as the distribution spec says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

import mirror.local.catalog
from mirror.app import create_app
from mirror.config import Settings, UpstreamSettings
from mirror.storage.layout import CacheLayout
from mirror.storage.tags import TagStore
from tests.conftest import LocalMirrorFactory, MirrorFactory, Seeded
from tests.support import storage
from tests.support.cache import Clock
from tests.support.cli import mirror_cli
from tests.support.images import make_image
from tests.support.mirror_process import start_mirror
from tests.support.oci import ACCEPT_ALL
from tests.support.push import LOCAL, Pusher, basic
from tests.support.registry import Registry


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The registries whose cached repositories this test process walked, one entry a walk."""
    walked: list[str] = []
    real = mirror.local.catalog.cached_repositories

    def counted(layout: CacheLayout, registry: str) -> list[str]:
        walked.append(registry)
        return real(layout, registry)

    monkeypatch.setattr(mirror.local.catalog, "cached_repositories", counted)
    return walked


async def listed(
    client: TestClient[Any, Any], headers: dict[str, str] | None = None, **params: str
) -> list[str]:
    response = await client.get("/v2/_catalog", params=params, headers=headers)
    assert response.status == 200, await response.text()
    names = (await response.json())["repositories"]
    assert isinstance(names, list)
    return names


async def pull(client: TestClient[Any, Any], repo: str, tag: str) -> None:
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()


async def test_repeated_requests_share_one_walk_until_a_repository_comes_or_goes(
    make_mirror: MirrorFactory,
    registry: Registry,
    seeded: Seeded,
    cache_dir: Path,
    walks: list[str],
) -> None:
    """Requests, one after another or twenty at once, answer from the last walk; a newly
    cached repository is listed by the very next request, a removed one is gone from it."""
    client = await make_mirror(registry)
    for _ in range(5):
        assert await listed(client) == []
    assert len(walks) == 1
    schema2, tag = seeded.schema2_ref
    await pull(client, schema2, tag)
    assert await listed(client) == [f"docker.io/{schema2}"]
    assert len(walks) == 2
    oci, oci_tag = seeded.oci_ref
    await pull(client, oci, oci_tag)
    answers = await asyncio.gather(*(listed(client) for _ in range(20)))
    assert all(names == [f"docker.io/{oci}", f"docker.io/{schema2}"] for names in answers)
    assert len(walks) == 3
    # Pulling a tag the cache holds changes nothing the catalog lists.
    await pull(client, schema2, tag)
    assert await listed(client, n="1") == [f"docker.io/{oci}"]
    assert len(walks) == 3
    store = TagStore(CacheLayout(cache_dir))
    (entry,) = [e for e in store.iter_tags() if e.repo == oci]
    assert store.remove(entry)
    assert await listed(client) == [f"docker.io/{schema2}"]
    assert len(walks) == 4


async def test_what_another_process_caches_or_removes_is_listed_at_once(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, tmp_path: Path, walks: list[str]
) -> None:
    """A tag cached by another server on the cache directory is in this one's next answer,
    and a tag `mirror rm` takes is gone from it; this one walks once for each."""
    other = await asyncio.to_thread(start_mirror, tmp_path / "other", registry.url)
    try:
        cache = tmp_path / "other" / "cache"
        client = await make_mirror(registry, cache_dir=cache)
        assert await listed(client) == []
        repo, tag = seeded.deep_ref
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{other.port}/v2/{repo}/manifests/{tag}"
            async with session.get(url, headers={"Accept": ACCEPT_ALL}) as response:
                assert response.status == 200
        assert await listed(client) == [f"docker.io/{repo}"]
        assert await listed(client) == [f"docker.io/{repo}"]
        assert len(walks) == 2
        result = await mirror_cli("rm", "--cache-dir", cache, f"docker.io/{repo}:{tag}")
        assert result.returncode == 0, result.explain()
        assert await listed(client) == []
        assert len(walks) == 3
    finally:
        other.stop()


async def test_a_change_that_left_the_stamp_alone_is_listed_within_a_minute(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    registry: Registry,
    seeded: Seeded,
    cache_dir: Path,
    walks: list[str],
) -> None:
    """A tag record written by hand (or by a release from before the catalog's stamp) is not
    in the listing at once, but is once the listing is a minute old."""
    clock = Clock()
    settings = Settings(
        cache_dir=cache_dir, upstreams=(UpstreamSettings(default=True, url=registry.url),)
    )
    client = await aiohttp_client(create_app(storage.current().applied(settings), clock=clock))
    assert await listed(client) == []
    record = {
        "digest": seeded.schema2.digest,
        "media_type": seeded.schema2.media_type,
        "fetched_at": clock.now,
    }
    by_hand = cache_dir / "tags" / "docker.io" / "by" / "hand" / "_tags" / "v1"
    by_hand.parent.mkdir(parents=True)
    by_hand.write_text(json.dumps(record))
    clock.advance(59)
    assert await listed(client) == []
    clock.advance(2)
    assert await listed(client) == ["docker.io/by/hand"]
    assert len(walks) == 2


async def test_pages_count_only_what_the_caller_may_pull(
    local_mirror: LocalMirrorFactory, registry: Registry, walks: list[str]
) -> None:
    """`n` counts only names the caller may pull, `last` need not be a listed name, each
    `Link` leads to the next page and the last page has none; `n=0` is an empty page. A push
    (by digest alone, too) is listed at once, and a repository whose manifest is deleted goes
    at once: a walk per change."""
    client = await local_mirror(registry)
    admin = Pusher(client, "admin")
    image = make_image(oci=True, seed="catalog-pages")
    for name in ("team/a", "team/c", "team/e", "other/b", "other/d"):
        await admin.push_image(f"{LOCAL}/{name}", "v1", image)
    reader = basic("reader")  # may pull team/* only (tests.support.push.RULES)
    pages, path = [], "/v2/_catalog?n=2"
    while path:
        response = await client.get(path, headers=reader)
        assert response.status == 200
        pages.append((await response.json())["repositories"])
        following = response.links.get("next")
        path = str(URL(str(following["url"])).relative()) if following else ""
    assert pages == [[f"{LOCAL}/team/a", f"{LOCAL}/team/c"], [f"{LOCAL}/team/e"]]
    after = {"last": f"{LOCAL}/team/b"}
    assert await listed(client, reader, **after) == [f"{LOCAL}/team/c", f"{LOCAL}/team/e"]
    empty = await client.get("/v2/_catalog", params={"n": "0"}, headers=reader)
    assert (await empty.json())["repositories"] == [] and "Link" not in empty.headers
    await admin.push_image(f"{LOCAL}/team/b", None, image)  # by digest: no tag is written
    assert await listed(client, reader, n="2") == [f"{LOCAL}/team/a", f"{LOCAL}/team/b"]
    deleted = await admin.request("DELETE", f"/v2/{LOCAL}/team/b/manifests/{image.digest}")
    assert deleted.status == 202
    assert await listed(client, reader, n="2") == [f"{LOCAL}/team/a", f"{LOCAL}/team/c"]
    assert len(walks) == 3
