"""Many upstreams behind one endpoint: routing by ns= and path prefix, isolation, SSRF refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.config import Settings, TtlRule, UpstreamSettings
from tests.conftest import MirrorFromSettings, RegistryFactory
from tests.faults import FakeFactory, content, redirect, tags_pages
from tests.support.images import Image, make_image, push_image, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_oci_error, cached_blob, raw_request, wait_until
from tests.support.registry import Registry

Client = TestClient[Any, Any]


MultiMirror = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_multi_mirror(mirror_from: MirrorFromSettings, cache_dir: Path) -> MultiMirror:
    """A factory: a mirror over the given upstreams, returning its test client."""

    async def make(*upstreams: UpstreamSettings, tag_ttl: float = 300.0) -> Client:
        return await mirror_from(
            Settings(cache_dir=cache_dir, upstreams=tuple(upstreams), tag_ttl=tag_ttl)
        )

    return make


@dataclass
class Pair:
    """Two real registries holding the same repository name with different images."""

    one: Registry
    two: Registry
    image_one: Image
    image_two: Image
    common: Image  # pushed to both: its blobs are the same bytes in each


REPO = "shared/app"
COMMON_REPO = "common/base"


@pytest.fixture
def pair(make_registry: RegistryFactory) -> Pair:
    """`shared/app:v1` is a different image in each registry; `common/base:v1` is in both."""
    one, two = make_registry(), make_registry()
    image_one = make_image(layer_sizes=(3000,), seed="routing-one")
    image_two = make_image(layer_sizes=(3000,), seed="routing-two")
    common = make_image(layer_sizes=(5000,), seed="routing-common")
    push_image(one.url, REPO, "v1", image_one)
    push_image(two.url, REPO, "v1", image_two)
    for registry in (one, two):
        push_image(registry.url, COMMON_REPO, "v1", common)
        registry.clear_requests()
    return Pair(one, two, image_one, image_two, common)


def upstreams_of(pair: Pair, **two_options: Any) -> tuple[UpstreamSettings, UpstreamSettings]:
    return (
        UpstreamSettings(name="one.test", url=pair.one.url, default=True),
        UpstreamSettings(name="two.test", url=pair.two.url, **two_options),
    )


def api_calls(registry: Registry) -> list[tuple[str, str]]:
    """What the mirror asked a registry, leaving out `/v2/` version checks (and probes)."""
    return [r for r in registry.requests() if r[1].split("?")[0] != "/v2/"]


def request_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "request"]


async def test_same_repository_in_two_upstreams_is_routed_and_never_mixed(
    make_multi_mirror: MultiMirror, pair: Pair, cache_dir: Path
) -> None:
    """ns=, a host prefix and the default each reach their own registry; tags never cross."""
    client = await make_multi_mirror(*upstreams_of(pair))
    manifest = f"/v2/{REPO}/manifests/v1"
    cases = [
        (f"{manifest}?ns=one.test", pair.image_one, "one.test"),
        (f"/v2/two.test/{REPO}/manifests/v1", pair.image_two, "two.test"),
        (manifest, pair.image_one, "one.test"),
        (f"{manifest}?ns=two.test", pair.image_two, "two.test"),
        (f"/v2/one.test/{REPO}/manifests/v1", pair.image_one, "one.test"),
    ]
    with structlog.testing.capture_logs() as logs:
        for path, image, _ in cases:
            response = await client.get(path, headers={"Accept": ACCEPT_ALL})
            assert response.status == 200, (path, await response.text())
            assert await response.read() == image.manifest, path
            assert response.headers["Docker-Content-Digest"] == image.digest, path
    lines = request_lines(logs)
    assert [line.get("upstream") for line in lines] == [name for _, _, name in cases]
    # Each registry was asked only about what was routed to it, by its own repository name.
    for registry in (pair.one, pair.two):
        calls = api_calls(registry)
        assert calls, f"{registry.url} was never asked"
        assert all(p.startswith(f"/v2/{REPO}/manifests/") for _, p in calls), calls
    tags = cache_dir / "tags"
    assert sorted(p.name for p in tags.iterdir()) == ["one.test", "two.test"]
    for name in ("one.test", "two.test"):
        assert (tags / name / "shared" / "app").is_dir(), sorted(tags.rglob("*"))


async def test_oci_namespace_header_is_sent_only_for_ns_requests(
    make_multi_mirror: MultiMirror, pair: Pair
) -> None:
    """containerd's ns= is echoed as OCI-Namespace; prefixed and default requests carry none."""
    client = await make_multi_mirror(*upstreams_of(pair))
    for method in ("GET", "HEAD"):
        with_ns = await client.request(
            method, f"/v2/{REPO}/manifests/v1?ns=two.test", headers={"Accept": ACCEPT_ALL}
        )
        assert with_ns.status == 200
        assert with_ns.headers.get("OCI-Namespace") == "two.test"
        layer = pair.image_two.layers[0]
        blob = await client.request(method, f"/v2/{REPO}/blobs/{layer.digest}?ns=two.test")
        assert blob.status == 200
        assert blob.headers.get("OCI-Namespace") == "two.test"
        for path in (f"/v2/two.test/{REPO}/manifests/v1", f"/v2/{REPO}/manifests/v1"):
            response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
            assert response.status == 200
            assert "OCI-Namespace" not in response.headers, path


async def test_ns_takes_precedence_over_a_host_prefix(
    make_multi_mirror: MultiMirror, pair: Pair
) -> None:
    """With ns=one.test, `/v2/two.test/...` names repository `two.test/...` at one.test."""
    client = await make_multi_mirror(*upstreams_of(pair))
    response = await client.get(
        f"/v2/two.test/{REPO}/manifests/v1?ns=one.test", headers={"Accept": ACCEPT_ALL}
    )
    await assert_oci_error(response, 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")
    assert api_calls(pair.two) == []
    assert {p.split("?")[0] for _, p in api_calls(pair.one)} == {
        f"/v2/two.test/{REPO}/manifests/v1"
    }


async def test_tag_list_pages_link_back_to_the_same_upstream(
    make_multi_mirror: MultiMirror, pair: Pair, make_fake_upstream: FakeFactory
) -> None:
    """Following the mirror's Link header stays on the upstream that served the first page."""
    fake = await make_fake_upstream()
    tags = ["a", "b", "c", "d", "e"]
    fake.route("/v2/lib/app/tags/list", tags_pages("lib/app", tags))
    one, _ = upstreams_of(pair)
    client = await make_multi_mirror(one, UpstreamSettings(name="fake.test", url=fake.url))
    for first in ("/v2/fake.test/lib/app/tags/list?n=2", "/v2/lib/app/tags/list?n=2&ns=fake.test"):
        seen: list[str] = []
        url: str | None = first
        while url is not None:
            response = await client.get(url)
            assert response.status == 200, (url, await response.text())
            seen += (await response.json())["tags"]
            link = response.headers.get("Link")
            url = link[link.index("<") + 1 : link.index(">")] if link else None
            assert url is None or url.startswith("/v2/"), link
        assert seen == tags, first
    assert api_calls(pair.one) == []


async def test_a_layer_both_upstreams_hold_is_fetched_once_and_stored_once(
    make_multi_mirror: MultiMirror, pair: Pair, cache_dir: Path
) -> None:
    """Blobs are shared by digest: the second upstream is not asked, one file is kept."""
    client = await make_multi_mirror(*upstreams_of(pair))
    layer = pair.common.layers[0]
    first = await client.get(f"/v2/{COMMON_REPO}/blobs/{layer.digest}?ns=one.test")
    assert first.status == 200
    assert await first.read() == layer.data
    assert await wait_until(lambda: cached_blob(cache_dir, layer.digest).exists())
    for path in (
        f"/v2/two.test/{COMMON_REPO}/blobs/{layer.digest}",
        f"/v2/{COMMON_REPO}/blobs/{layer.digest}?ns=two.test",
    ):
        again = await client.get(path)
        assert again.status == 200, path
        assert await again.read() == layer.data
    blob_path = f"/v2/{COMMON_REPO}/blobs/{layer.digest}"
    assert pair.one.requests().count(("GET", blob_path)) == 1
    assert [r for r in pair.two.requests() if "/blobs/" in r[1]] == []
    hex_part = layer.digest.split(":", 1)[1]
    assert len(list((cache_dir / "blobs").rglob(f"*{hex_part}*"))) == 1


async def test_docker_io_aliases_and_library_prefix(
    make_multi_mirror: MultiMirror, make_fake_upstream: FakeFactory
) -> None:
    """index.docker.io and registry-1.docker.io mean docker.io; one-component names get library/."""
    hub = await make_fake_upstream()
    other = await make_fake_upstream()
    image = make_image(seed="routing-hub")
    served = content(image.manifest, image.media_type)
    for reference in ("3", image.digest):
        hub.route(f"/v2/library/alpine/manifests/{reference}", served)
    client = await make_multi_mirror(
        UpstreamSettings(name="docker.io", url=hub.url),
        UpstreamSettings(name="other.test", url=other.url, default=True),
    )
    for path in (
        "/v2/alpine/manifests/3?ns=docker.io",
        "/v2/library/alpine/manifests/3?ns=index.docker.io",
        "/v2/alpine/manifests/3?ns=registry-1.docker.io",
        "/v2/docker.io/alpine/manifests/3",
        "/v2/docker.io/library/alpine/manifests/3",
    ):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, (path, await response.text())
        assert await response.read() == image.manifest
    asked = {r.path.split("?")[0] for r in hub.requests} - {"/v2/"}
    assert asked <= {f"/v2/library/alpine/manifests/{ref}" for ref in ("3", image.digest)}
    assert [r for r in other.requests if r.path != "/v2/"] == [], "default upstream was asked"


async def test_unknown_namespace_or_host_prefix_is_name_unknown_without_outbound_traffic(
    make_multi_mirror: MultiMirror, pair: Pair, make_fake_upstream: FakeFactory
) -> None:
    """Only configured upstreams are contacted: a reachable but unconfigured host gets nothing."""
    outsider = await make_fake_upstream()
    image = make_image(seed="routing-outsider")
    for reference in ("v1", image.digest):
        outsider.route(
            f"/v2/lib/x/manifests/{reference}", content(image.manifest, image.media_type)
        )
    outsider.route(f"/v2/lib/x/blobs/{image.config.digest}", content(image.config.data))
    client = await make_multi_mirror(*upstreams_of(pair))
    blob = image.config.digest
    for path in (
        f"/v2/lib/x/manifests/v1?ns={outsider.host}",
        f"/v2/lib/x/manifests/{image.digest}?ns={outsider.host}",
        f"/v2/lib/x/blobs/{blob}?ns={outsider.host}",
        f"/v2/lib/x/tags/list?ns={outsider.host}",
        f"/v2/{outsider.host}/lib/x/manifests/v1",
        f"/v2/{outsider.host}/lib/x/blobs/{blob}",
        "/v2/lib/x/manifests/v1?ns=unknown.example",
        "/v2/unknown.example/lib/x/manifests/v1",
        "/v2/localhost:1/lib/x/manifests/v1",
    ):
        for method in ("GET", "HEAD"):
            response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
            if method == "GET":
                await assert_oci_error(response, 404, "NAME_UNKNOWN")
            else:
                assert response.status == 404, path
    assert outsider.requests == []
    assert api_calls(pair.one) == [], "an unknown namespace fell back to the default upstream"
    assert api_calls(pair.two) == []


async def test_an_unknown_namespace_is_name_unknown_even_for_cached_content(
    make_multi_mirror: MultiMirror, pair: Pair, cache_dir: Path
) -> None:
    """Routing comes first: a cached digest is not served under a namespace nobody configured."""
    client = await make_multi_mirror(*upstreams_of(pair))
    layer = pair.image_one.layers[0]
    manifest = f"/v2/{REPO}/manifests/{pair.image_one.digest}"
    for path in (manifest, f"/v2/{REPO}/blobs/{layer.digest}"):
        response = await client.get(f"{path}?ns=one.test", headers={"Accept": ACCEPT_ALL})
        assert response.status == 200
        await response.read()
    assert await wait_until(lambda: cached_blob(cache_dir, layer.digest).exists())
    for path in (
        f"{manifest}?ns=unknown.example",
        f"/v2/{REPO}/blobs/{layer.digest}?ns=unknown.example",
        f"/v2/unknown.example/{REPO}/blobs/{layer.digest}",
    ):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        await assert_oci_error(response, 404, "NAME_UNKNOWN")


async def test_crafted_namespaces_and_escaping_paths_are_refused_without_outbound_traffic(
    make_multi_mirror: MultiMirror, pair: Pair, make_fake_upstream: FakeFactory
) -> None:
    """Userinfo, schemes, dot segments and encoded slashes never turn into a request elsewhere."""
    outsider = await make_fake_upstream()
    image = make_image(seed="routing-crafted")
    outsider.route("/v2/lib/x/manifests/v1", content(image.manifest, image.media_type))
    client = await make_multi_mirror(*upstreams_of(pair))
    host = outsider.host
    for ns in (
        f"{host}@evil",
        f"one.test@{host}",
        f"http://{host}",
        f"https://one.test@{host}/",
        f"{host}#one.test",
        f"{host}/",
        f"one.test/../{host}",
        "file:///etc/passwd",
    ):
        response = await client.get(
            "/v2/lib/x/manifests/v1", params={"ns": ns}, headers={"Accept": ACCEPT_ALL}
        )
        assert 400 <= response.status < 500, (ns, response.status, await response.text())
    assert client.server.host is not None and client.server.port is not None
    for target in (
        f"/v2/../{host}/lib/x/manifests/v1",
        f"/v2/%2e%2e/{host}/lib/x/manifests/v1",
        f"/v2/one.test/../../{host}/lib/x/manifests/v1",
        f"/v2/one.test/%2e%2e/%2e%2e/{host}/lib/x/manifests/v1",
        f"/v2/one.test/..%2f..%2f{host}/lib/x/manifests/v1",
        f"/v2/{host}%2flib/x/manifests/v1",
        f"/v2/one.test%2f..%2f{host}/lib/x/manifests/v1",
        f"/v2/..%2f{host}/lib/x/manifests/v1",
        f"/v2/lib/x/manifests/v1?ns=%2e%2e%2f{host}",
    ):
        code, raw = await raw_request(client.server.host, client.server.port, "GET", target)
        assert 400 <= code < 500, (target, raw[:300])
    assert outsider.requests == []
    assert api_calls(pair.one) == []
    assert api_calls(pair.two) == []


async def test_denied_and_not_allowed_repositories_are_refused_without_asking_upstream(
    make_multi_mirror: MultiMirror, pair: Pair
) -> None:
    """allow/deny patterns per upstream: 403 DENIED, no upstream request; allowed names work."""
    push_image(pair.two.url, "shared/secret-app", "v1", pair.image_two)
    push_image(pair.two.url, "other/app", "v1", pair.image_two)
    pair.two.clear_requests()
    client = await make_multi_mirror(
        *upstreams_of(pair, allow=("shared/*",), deny=("shared/secret*",))
    )
    layer = pair.image_two.layers[0].digest
    for path in (
        "/v2/two.test/other/app/manifests/v1",
        "/v2/shared/secret-app/manifests/v1?ns=two.test",
        f"/v2/two.test/shared/secret-app/blobs/{layer}",
        f"/v2/other/app/blobs/{layer}?ns=two.test",
        "/v2/two.test/other/app/tags/list",
        f"/v2/two.test/other/app/manifests/{pair.image_two.digest}",
    ):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        await assert_oci_error(response, 403, "DENIED")
    assert api_calls(pair.two) == []
    # The rules belong to two.test only: the same name on one.test is not affected.
    allowed = await client.get(f"/v2/two.test/{REPO}/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert allowed.status == 200
    assert await allowed.read() == pair.image_two.manifest
    # A cached answer is no way around the rules.
    got = await client.get(f"/v2/two.test/{REPO}/blobs/{layer}")
    assert await got.read() == pair.image_two.layers[0].data
    for path in (
        f"/v2/two.test/shared/secret-app/blobs/{layer}",
        f"/v2/two.test/shared/secret-app/manifests/{pair.image_two.digest}",
    ):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        await assert_oci_error(response, 403, "DENIED")
    push_image(pair.one.url, "other/app", "v1", pair.image_one)
    elsewhere = await client.get("/v2/other/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert elsewhere.status == 200
    assert await elsewhere.read() == pair.image_one.manifest


async def test_docker_hub_rules_apply_to_the_library_name(
    make_multi_mirror: MultiMirror, make_fake_upstream: FakeFactory
) -> None:
    """Patterns match the upstream repository: `alpine` on docker.io is `library/alpine`."""
    hub = await make_fake_upstream()
    image = make_image(seed="routing-hub-rules")
    served = content(image.manifest, image.media_type)
    for reference in ("3", image.digest):
        hub.route(f"/v2/library/alpine/manifests/{reference}", served)
    client = await make_multi_mirror(
        UpstreamSettings(
            name="docker.io",
            url=hub.url,
            default=True,
            allow=("library/*",),
            deny=("library/secret*",),
        )
    )
    for path in (
        "/v2/secret-tool/manifests/1",
        "/v2/secret-tool/manifests/1?ns=docker.io",
        "/v2/docker.io/secret-tool/manifests/1",
        "/v2/library/secret-tool/manifests/1",
        "/v2/someone/app/manifests/1?ns=docker.io",
    ):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        await assert_oci_error(response, 403, "DENIED")
    assert [r for r in hub.requests if r.path != "/v2/"] == []
    response = await client.get("/v2/alpine/manifests/3", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    assert await response.read() == image.manifest


async def test_redirects_to_non_http_schemes_are_not_followed(
    make_multi_mirror: MultiMirror, make_fake_upstream: FakeFactory
) -> None:
    """A 307 to file://, ftp:// or gopher:// is an error for the client, never a fetch."""
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    data = b"blob behind a bad redirect " * 100
    digest = sha256_digest(data)
    fake = await make_fake_upstream()
    targets = {
        "file": "file:///etc/passwd",
        "ftp": f"ftp://127.0.0.1:{port}/blob",
        "gopher": f"gopher://127.0.0.1:{port}/_GET%20/",
        "ws": f"ws://127.0.0.1:{port}/blob",
    }
    for name, target in targets.items():
        fake.route(f"/v2/lib/{name}/blobs/{digest}", redirect(target))
        fake.route(f"/v2/lib/{name}/manifests/v1", redirect(target))
    try:
        client = await make_multi_mirror(
            UpstreamSettings(name="fake.test", url=fake.url, default=True)
        )
        for name in targets:
            for path in (f"/v2/lib/{name}/blobs/{digest}", f"/v2/lib/{name}/manifests/v1"):
                response = await client.get(path, headers={"Accept": ACCEPT_ALL})
                body = await response.read()
                assert 400 <= response.status < 600, (path, response.status)
                assert b"root:" not in body
                assert "Location" not in response.headers
        assert connections == 0
    finally:
        listener.close()
        await listener.wait_closed()


async def test_tag_ttl_rules_and_upstream_ttls_pick_what_is_revalidated(
    make_multi_mirror: MultiMirror, pair: Pair
) -> None:
    """`latest` under a 0.2 s rule is revalidated with one HEAD; v1 under the 300 s default not."""
    for tag in ("latest", "v2"):
        push_image(pair.one.url, REPO, tag, pair.image_one)
        push_image(pair.two.url, REPO, tag, pair.image_two)
    client = await make_multi_mirror(
        UpstreamSettings(
            name="one.test",
            url=pair.one.url,
            default=True,
            ttl_rules=(TtlRule(pattern="latest", seconds=0.2),),
        ),
        UpstreamSettings(name="two.test", url=pair.two.url, tag_ttl=0.2),
        tag_ttl=300.0,
    )
    paths = [
        f"/v2/{REPO}/manifests/{tag}{ns}"
        for tag in ("latest", "v1", "v2")
        for ns in ("?ns=one.test", "?ns=two.test")
    ]
    for path in paths:
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, path
    await asyncio.sleep(0.35)
    pair.one.clear_requests()
    pair.two.clear_requests()
    for path in paths:
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, path
    assert api_calls(pair.one) == [("HEAD", f"/v2/{REPO}/manifests/latest")]
    assert sorted(api_calls(pair.two)) == [
        ("HEAD", f"/v2/{REPO}/manifests/{tag}") for tag in ("latest", "v1", "v2")
    ]
