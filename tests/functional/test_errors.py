"""What the mirror refuses, and how: 405 for writes, 400 for bad input, never a 500 or an escape."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import MirrorFactory, Seeded
from tests.faults import FakeFactory
from tests.support.oci import ACCEPT_ALL, assert_oci_error, raw_request
from tests.support.registry import Registry

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/seed/schema2/blobs/uploads/"),
        ("PUT", "/v2/seed/schema2/blobs/uploads/some-uuid?digest=" + DIGEST),
        ("PATCH", "/v2/seed/schema2/blobs/uploads/some-uuid"),
        ("PUT", "/v2/seed/schema2/manifests/v1"),
        ("DELETE", "/v2/seed/schema2/manifests/" + DIGEST),
        ("DELETE", "/v2/seed/schema2/blobs/" + DIGEST),
    ],
)
async def test_writes_and_deletes_to_a_mirrored_registry_are_unsupported(
    make_mirror: MirrorFactory, registry: Registry, method: str, path: str
) -> None:
    """A read-only mirror answers 405 UNSUPPORTED, which every client understands."""
    client = await make_mirror(registry)
    registry.clear_requests()
    response = await client.request(method, path, data=b"{}")
    await assert_oci_error(response, 405, "UNSUPPORTED")
    assert not [r for r in registry.requests() if r[0] not in ("GET", "HEAD")]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v2/Seed/schema2/manifests/v1", "NAME_INVALID"),
        ("/v2/seed_/schema2/manifests/v1", "NAME_INVALID"),
        ("/v2/seed//schema2/manifests/v1", "NAME_INVALID"),
        ("/v2/-seed/manifests/v1", "NAME_INVALID"),
        ("/v2/seed/schema2/manifests/-v1", "TAG_INVALID"),
        ("/v2/seed/schema2/manifests/" + "t" * 129, "TAG_INVALID"),
        ("/v2/seed/schema2/manifests/v!1", "TAG_INVALID"),
        ("/v2/seed/schema2/manifests/sha256:totallywrong", "DIGEST_INVALID"),
        ("/v2/seed/schema2/blobs/sha256:1234", "DIGEST_INVALID"),
        ("/v2/seed/schema2/blobs/notadigest", "DIGEST_INVALID"),
        ("/v2/seed/schema2/blobs/sha256:" + "G" * 64, "DIGEST_INVALID"),
        ("/v2/seed/schema2/blobs/latest", "DIGEST_INVALID"),
        # A trailing newline (%0A) passes a `$`-anchored match: the grammar is matched whole.
        ("/v2/seed/schema2/manifests/v1%0A", "TAG_INVALID"),
        ("/v2/seed/schema2/blobs/sha256:" + "a" * 64 + "%0A", "DIGEST_INVALID"),
    ],
)
async def test_invalid_names_tags_and_digests_are_400(
    make_mirror: MirrorFactory, registry: Registry, path: str, code: str
) -> None:
    """Malformed input is the client's mistake: 400 with the matching code, upstream untouched."""
    client = await make_mirror(registry)
    registry.clear_requests()
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    await assert_oci_error(response, 400, code)
    assert registry.requests() == []


async def test_error_bodies_are_oci_json(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Every error is `{"errors":[{"code","message",...}]}` served as application/json."""
    repo, _ = seeded.schema2_ref
    client = await make_mirror(registry)
    response = await client.get(f"/v2/{repo}/blobs/sha256:{'2' * 64}")
    document = await assert_oci_error(response, 404, "BLOB_UNKNOWN")
    assert set(document) == {"errors"}
    assert {"code", "message"} <= set(document["errors"][0])
    assert response.headers["Content-Type"] == "application/json"


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _escaped(marker: str) -> list[Path]:
    """Files named after `marker` where a traversal would have put them."""
    return [*Path("/tmp").glob(f"*{marker}*"), *Path.cwd().glob(f"*{marker}*")]


async def test_adversarial_paths_never_500_and_never_write_outside_the_cache(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Traversal, encoded slashes, NUL and huge names are refused; the cache stays a jail."""
    fake = await make_fake_upstream()
    client = await make_mirror(fake)
    marker = f"escape{uuid.uuid4().hex[:8]}"
    watched = cache_dir.parent.parent
    before = _tree(watched)
    targets = [
        f"/v2/../../{marker}/manifests/v1",
        f"/v2/a/../../../{marker}/blobs/{DIGEST}",
        f"/v2/%2e%2e/%2e%2e/{marker}/manifests/v1",
        f"/v2/a/%2e%2e%2f%2e%2e%2f{marker}/manifests/v1",
        f"/v2/a%2f..%2f..%2f{marker}/manifests/v1",
        f"/v2/%2Ftmp%2F{marker}/manifests/v1",
        f"/v2//tmp/{marker}/manifests/v1",
        f"/v2/a/manifests/..%2f..%2f{marker}",
        "/v2/a/manifests/%2e%2e",
        "/v2/a/manifests/..",
        f"/v2/a/blobs/sha256:..%2f..%2f{marker}",
        "/v2/a/blobs/sha256:" + "." * 64,
        f"/v2/a/blobs/sha256%3a{'a' * 64}",
        "/v2/a%00b/manifests/v1",
        "/v2/a/manifests/v1%00",
        f"/v2/a/blobs/{DIGEST}%00",
        "/v2/a/manifests/sha256:" + "a" * 64 + "%00",
        "/v2/a/blobs/sha256:" + "a" * 63 + "%0a",
        "/v2/a/blobs/sha512:" + "a" * 128,
        "/v2/a/blobs/sha256:" + "a" * 10_000,
        "/v2/" + "a" * 4000 + "/manifests/v1",
        "/v2/" + "a/" * 2000 + "manifests/v1",
        "/v2/" + "b" * 10_000 + "/manifests/v1",
        "/v2/a/manifests/" + "c" * 10_000,
        f"http://evil.example/v2/{marker}/manifests/v1",
        "/v2/a/tags/list?n=-1&last=%00",
        "/v2/a/tags/list?n=999999999999999999999",
        "/v2/a/referrers/..%2f..",
        "/v2/%ff%fe/manifests/v1",
        "/v2/a/manifests/v1?ns=../../etc",
    ]
    assert client.port is not None
    for target in targets:
        for method in ("GET", "HEAD"):
            status, raw = await raw_request(client.host, client.port, method, target)
            assert status < 500, (method, target[:120], raw[:300])
    after = _tree(watched)
    outside = {p for p in after - before if cache_dir not in p.parents and p != cache_dir}
    assert not outside, f"written outside the cache: {sorted(outside)[:5]}"
    assert not _escaped(marker)
    response = await client.get("/v2/")
    assert response.status == 200, "the mirror must keep answering"


@pytest.mark.parametrize(
    "path", ["/v2", "/v2/seed/schema2/blobs/uploads/", "/v2/seed/schema2/blobs"]
)
async def test_reads_of_paths_with_nothing_there_are_404_alike_for_get_and_head(
    make_mirror: MirrorFactory, registry: Registry, path: str
) -> None:
    """No resource there: 404 (as the CNCF registry answers), and HEAD's headers are GET's."""
    client = await make_mirror(registry)
    answers = {}
    for method in ("GET", "HEAD"):
        response = await client.request(method, path)
        if method == "GET":
            await assert_oci_error(response, 404, "NAME_UNKNOWN")
        answers[method] = (response.status, response.headers["Content-Length"])
    assert answers["GET"] == answers["HEAD"]


async def test_a_405_names_the_methods_the_mirror_takes(
    make_mirror: MirrorFactory, registry: Registry
) -> None:
    """RFC 9110 §15.5.6: every 405 carries `Allow`."""
    client = await make_mirror(registry)
    for path in ("/v2/seed/schema2/manifests/v1", "/v2/seed/schema2/tags/list", "/v2/x"):
        response = await client.put(path, data=b"{}")
        await assert_oci_error(response, 405, "UNSUPPORTED")
        assert response.headers["Allow"] == "GET, HEAD"
