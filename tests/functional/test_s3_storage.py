"""The cache's content in an S3 bucket (`--storage s3://…`), on a real SeaweedFS: what lands
under which key, what a replica with an empty directory serves from it, and what happens when the
store or the upstream fails."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror.app import create_app
from mirror.config import S3Settings, Settings, UpstreamSettings
from mirror.errors import StorageUnavailable
from mirror.oci.digest import Digest
from mirror.storage.s3 import bucket
from mirror.storage.s3.blobs import PART_SIZE, S3Blobs
from mirror.storage.s3.bucket import open_bucket
from tests.conftest import RegistryFactory, Seeded
from tests.faults import FakeFactory, content
from tests.support.images import Blob, Image, make_image, push_image, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_broken, assert_oci_error, cached_blob, wait_until
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry
from tests.support.seaweed import Seaweed, unreachable


class S3MirrorFactory(Protocol):
    def __call__(
        self, storage: S3Settings | None, cache_dir: Path, upstream: str | None = None
    ) -> Awaitable[TestClient[Any, Any]]: ...


@pytest.fixture
def s3_mirror(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    registry: Registry,
    redis_server: RedisServer,
) -> S3MirrorFactory:
    """Mirrors keeping content in a bucket (or, given None, in their directory alone); those of
    one test share Redis, as replicas do."""
    redis_prefix = f"test-{uuid.uuid4().hex[:12]}:"

    async def make(
        storage: S3Settings | None, cache_dir: Path, upstream: str | None = None
    ) -> TestClient[Any, Any]:
        settings = Settings(
            cache_dir=cache_dir,
            upstreams=(
                UpstreamSettings(
                    default=True,
                    url=upstream or registry.url,
                    connect_timeout=2.0,
                    read_timeout=5.0,
                ),
            ),
            storage=storage,
            redis_url=redis_server.url,
            redis_prefix=redis_prefix,
        )
        return await aiohttp_client(create_app(settings))

    return make


async def pull(client: TestClient[Any, Any], repo: str, tag: str, image: Image) -> None:
    """Pull an image as a client does (manifest by tag and by digest, config, layers), checking
    every body against its digest."""
    for reference in (tag, image.digest):
        response = await client.get(
            f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL}
        )
        body = await response.read()
        assert response.status == 200, body[:300]
        assert sha256_digest(body) == image.digest
        assert response.headers["Content-Type"] == image.media_type
    for blob in image.blobs:
        response = await client.get(f"/v2/{repo}/blobs/{blob.digest}")
        body = await response.read()
        assert response.status == 200, body[:300]
        assert sha256_digest(body) == blob.digest


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


async def test_cold_pull_stores_each_object_under_its_final_key_and_nothing_else(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """A cold pull leaves blobs, the manifest (with its media type) and the tag record under
    their final keys, with the exact bytes, and nothing under uploads/."""
    storage = seaweed.settings()
    repo, tag = seeded.schema2_ref
    image = seeded.schema2
    client = await s3_mirror(storage, tmp_path / "a")
    await pull(client, repo, tag, image)
    await client.close()  # lets the uploads under way finish
    keys = seaweed.keys(storage.prefix)
    for blob in image.blobs:
        assert keys[f"blobs/sha256/{hex_of(blob.digest)}"] == blob.size
        assert seaweed.read(f"{storage.prefix}/blobs/sha256/{hex_of(blob.digest)}")[0] == blob.data
    data, media_type = seaweed.read(f"{storage.prefix}/manifests/sha256/{hex_of(image.digest)}")
    assert (data, media_type) == (image.manifest, image.media_type)
    records = [k for k in keys if k.startswith("tags/") and k.endswith(f"/{repo}/_tags/{tag}")]
    assert len(records) == 1, keys
    assert not [k for k in keys if k.startswith("uploads/")], keys
    assert seaweed.multipart_uploads(storage.prefix) == []


async def test_replica_with_an_empty_directory_serves_hits_from_the_bucket(
    s3_mirror: S3MirrorFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """A second mirror on the same bucket and Redis, with nothing on its disk, serves a whole
    pull (tag, digest, config, layers) without one upstream request."""
    storage = seaweed.settings()
    repo, tag = seeded.oci_ref
    first = await s3_mirror(storage, tmp_path / "a")
    await pull(first, repo, tag, seeded.oci)
    await first.close()
    registry.clear_requests()
    second = await s3_mirror(storage, tmp_path / "b")
    await pull(second, repo, tag, seeded.oci)
    layer = seeded.oci.layers[0]
    head = await second.head(f"/v2/{repo}/blobs/{layer.digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(layer.size)
    assert registry.requests() == []


async def test_replica_with_an_empty_directory_answers_tags_list_from_the_bucket(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, make_registry: RegistryFactory, tmp_path: Path
) -> None:
    """The last tag list an upstream sent for a repository the cache holds tags of is kept in
    the bucket: a replica that never asked for it answers from there while the upstream is
    down."""
    upstream = make_registry()
    image = make_image(seed="lists")
    for tag in ("v1", "v2"):
        push_image(upstream.url, "lists/app", tag, image)
    storage = seaweed.settings()
    first = await s3_mirror(storage, tmp_path / "a", upstream=upstream.url)
    pulled = await first.get("/v2/lists/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert pulled.status == 200
    response = await first.get("/v2/lists/app/tags/list")
    assert (await response.json())["tags"] == ["v1", "v2"]
    await first.close()
    upstream.stop()
    second = await s3_mirror(storage, tmp_path / "b", upstream=upstream.url)
    response = await second.get("/v2/lists/app/tags/list")
    assert response.status == 200, await response.text()
    assert (await response.json())["tags"] == ["v1", "v2"]


async def test_blob_served_from_the_bucket_is_copied_to_the_local_disk(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, registry: Registry, seeded: Seeded, tmp_path: Path
) -> None:
    """A blob read from the bucket lands in the cache directory too, so the next hit goes out
    from the local disk; and one evicted from the directory is served from the bucket again."""
    storage = seaweed.settings()
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    first = await s3_mirror(storage, tmp_path / "a")
    assert await (await first.get(path)).read() == layer.data
    await first.close()
    registry.clear_requests()
    second = await s3_mirror(storage, tmp_path / "b")
    assert await (await second.get(path)).read() == layer.data
    local = cached_blob(tmp_path / "b", layer.digest)
    assert await wait_until(local.exists, within=30)
    assert local.read_bytes() == layer.data
    local.unlink()  # as eviction would
    assert await (await second.get(path)).read() == layer.data
    assert registry.requests() == []


async def test_blob_only_on_local_disk_is_uploaded_when_served(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """A blob the cache directory holds and the bucket does not (a directory that predates the
    bucket, an upload that failed) is uploaded once it is served from the local disk."""
    repo, _ = seeded.oci_ref
    layer = seeded.oci.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    before = await s3_mirror(None, tmp_path / "a")  # the cache directory alone
    assert await (await before.get(path)).read() == layer.data
    await before.close()
    storage = seaweed.settings()
    assert seaweed.keys(storage.prefix) == {}
    client = await s3_mirror(storage, tmp_path / "a")
    assert await (await client.get(path)).read() == layer.data
    key = f"blobs/sha256/{hex_of(layer.digest)}"
    assert await wait_until(lambda: key in seaweed.keys(storage.prefix), within=30)
    assert seaweed.read(f"{storage.prefix}/{key}")[0] == layer.data


async def test_damaged_blob_in_the_bucket_never_reaches_a_client_whole(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """A blob whose bytes in the bucket no longer match its digest breaks off at the client
    (its last bytes held back until checked) and is not copied to the local disk."""
    storage = seaweed.settings()
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    damaged = layer.data[:-1] + bytes([layer.data[-1] ^ 1])
    seaweed.client.put_object(
        Bucket=storage.bucket,
        Key=f"{storage.prefix}/blobs/sha256/{hex_of(layer.digest)}",
        Body=damaged,
    )
    client = await s3_mirror(storage, tmp_path / "a")
    await assert_broken(await client.get(path), layer.data)
    await client.close()  # the copy to local disk, if any, is over
    assert not cached_blob(tmp_path / "a", layer.digest).exists()


async def test_damaged_blob_in_the_bucket_is_fetched_again_and_replaced(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """Once a blob's bytes in the bucket were found not to match its digest, the next pull
    fetches it from the upstream, whole and verified, and the bucket's copy is replaced with
    it, rather than every pull breaking off until someone runs `mirror verify`."""
    storage = seaweed.settings()
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    key = f"blobs/sha256/{hex_of(layer.digest)}"
    damaged = layer.data[:-1] + bytes([layer.data[-1] ^ 1])
    seaweed.client.put_object(Bucket=storage.bucket, Key=f"{storage.prefix}/{key}", Body=damaged)
    client = await s3_mirror(storage, tmp_path / "a")
    await assert_broken(await client.get(path), layer.data)

    answer = await client.get(path)
    assert answer.status == 200
    assert await answer.read() == layer.data
    assert await wait_until(
        lambda: seaweed.read(f"{storage.prefix}/{key}")[0] == layer.data, within=30
    )


async def test_range_requests_on_a_blob_in_the_bucket(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """Ranges of a blob that is only in the bucket are answered 206 with exactly those bytes
    (RFC 9110 §14), and an unsatisfiable one 416."""
    storage = seaweed.settings(redirect=True)  # no copy to local disk: every read is remote
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    first = await s3_mirror(storage, tmp_path / "a")
    assert await (await first.get(path)).read() == layer.data
    await first.close()
    second = await s3_mirror(seaweed.settings(prefix=storage.prefix), tmp_path / "b")
    for first_byte, last_byte in ((0, 0), (10, 99), (layer.size - 5, layer.size - 1)):
        response = await second.get(path, headers={"Range": f"bytes={first_byte}-{last_byte}"})
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {first_byte}-{last_byte}/{layer.size}"
        assert await response.read() == layer.data[first_byte : last_byte + 1]
    response = await second.get(path, headers={"Range": "bytes=-1000"})
    assert response.status == 206
    assert await response.read() == layer.data[-1000:]
    response = await second.get(path, headers={"Range": f"bytes={layer.size}-"})
    assert response.status == 416
    await response.read()


Altered = Callable[[web.Request, web.Response], Awaitable[web.Response]]


async def through_a_proxy(
    storage: S3Settings,
    seaweed: Seaweed,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    altered: Altered,
) -> S3Settings:
    """`storage` reached through a proxy to SeaweedFS, whose answers `altered` may change."""

    async def forward(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                seaweed.endpoint + request.path_qs,
                headers=request.headers,
                data=await request.read(),
            ) as answer,
        ):
            headers = {
                name: value
                for name, value in answer.headers.items()
                if name in ("Content-Length", "Content-Type", "ETag", "Last-Modified")
            }
            body = await answer.read()
        return await altered(
            request, web.Response(status=answer.status, body=body, headers=headers)
        )

    proxy = web.Application()
    proxy.router.add_route("*", "/{path:.*}", forward)
    server = await aiohttp_server(proxy, host="127.0.0.1")
    return dataclasses.replace(storage, endpoint=f"http://127.0.0.1:{server.port}")


def _layer_in_bucket(seaweed: Seaweed, seeded: Seeded) -> tuple[str, Blob, S3Settings, str]:
    """A seeded layer put straight into the bucket: its repository, the layer, the storage
    settings and its key."""
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    storage = seaweed.settings()
    key = f"{storage.prefix}/blobs/sha256/{hex_of(layer.digest)}"
    seaweed.client.put_object(Bucket=storage.bucket, Key=key, Body=layer.data)
    return repo, layer, storage, key


async def test_a_store_that_ignores_a_range_never_passes_other_bytes_for_it(
    s3_mirror: S3MirrorFactory,
    seaweed: Seaweed,
    seeded: Seeded,
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """A store (or a proxy before it) that answers a ranged GET with the whole object: the
    client asking for a range gets 503, never the object's first bytes as its range's."""
    repo, layer, storage, key = _layer_in_bucket(seaweed, seeded)

    async def ranges_ignored(request: web.Request, answer: web.Response) -> web.Response:
        if request.method == "GET" and "Range" in request.headers:
            return web.Response(body=(await asyncio.to_thread(seaweed.read, key))[0])
        return answer

    proxied = await through_a_proxy(storage, seaweed, aiohttp_server, ranges_ignored)
    client = await s3_mirror(proxied, tmp_path / "a")

    answer = await client.get(f"/v2/{repo}/blobs/{layer.digest}", headers={"Range": "bytes=100-"})
    await assert_oci_error(answer, 503, "UNAVAILABLE")


async def test_a_store_whose_head_names_no_length_is_unavailable(
    s3_mirror: S3MirrorFactory,
    seaweed: Seaweed,
    seeded: Seeded,
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """A store (or a proxy before it) whose HEAD of a blob says nothing of its length: the
    blob's GET and HEAD are 503, as for a store that is down, never a 500."""
    repo, layer, storage, _ = _layer_in_bucket(seaweed, seeded)

    async def no_length(request: web.Request, answer: web.Response) -> web.Response:
        if request.method == "HEAD":
            del answer.headers["Content-Length"]
        return answer

    proxied = await through_a_proxy(storage, seaweed, aiohttp_server, no_length)
    client = await s3_mirror(proxied, tmp_path / "a")

    path = f"/v2/{repo}/blobs/{layer.digest}"
    await assert_oci_error(await client.get(path), 503, "UNAVAILABLE")
    assert (await client.head(path)).status == 503


async def test_redirect_mode_sends_clients_to_a_presigned_url(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """With redirect on, a blob that is only in the bucket is answered 307 to a pre-signed URL
    that a plain client (no credentials) follows to the right bytes."""
    storage = seaweed.settings(redirect=True)
    repo, _ = seeded.oci_ref
    layer = seeded.oci.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    first = await s3_mirror(storage, tmp_path / "a")
    assert await (await first.get(path)).read() == layer.data
    await first.close()
    second = await s3_mirror(storage, tmp_path / "b")
    response = await second.get(path, allow_redirects=False)
    assert response.status == 307
    assert response.headers["Docker-Content-Digest"] == layer.digest
    location = response.headers["Location"]
    assert location.startswith(seaweed.endpoint)
    assert "X-Amz-Signature=" in location
    async with aiohttp.ClientSession() as plain, plain.get(location) as fetched:
        assert fetched.status == 200
        assert await fetched.read() == layer.data
    async with aiohttp.ClientSession() as plain, plain.get(location + "0") as forged:
        assert forged.status == 403  # the signature is checked: the URL is the credential
        await forged.read()
    assert not cached_blob(tmp_path / "b", layer.digest).exists()


async def test_upstream_that_sends_wrong_bytes_leaves_nothing_in_the_bucket(
    s3_mirror: S3MirrorFactory,
    seaweed: Seaweed,
    make_fake_upstream: FakeFactory,
    tmp_path: Path,
) -> None:
    """A blob whose bytes do not match its digest reaches no key of the bucket, final or
    temporary, and the client's download breaks off."""
    fake = await make_fake_upstream()
    claimed = sha256_digest(b"the real layer")
    wrong = b"not the real layer at all"
    fake.route(f"/v2/library/liar/blobs/{claimed}", content(wrong))
    storage = seaweed.settings()
    client = await s3_mirror(storage, tmp_path / "a", upstream=fake.url)
    await assert_broken(await client.get(f"/v2/library/liar/blobs/{claimed}"), wrong)
    await client.close()
    assert seaweed.keys(storage.prefix) == {}
    assert seaweed.multipart_uploads(storage.prefix) == []


async def test_a_store_that_hangs_is_given_up_on_within_its_attempts(
    s3_mirror: S3MirrorFactory,
    seaweed: Seaweed,
    seeded: Seeded,
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that takes requests and never answers: a blob it would hold is a 503 once
    each of ATTEMPTS tries has waited its read timeout, not after retries without end."""
    monkeypatch.setattr(bucket, "READ_TIMEOUT", 0.5)
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    asked: list[str] = []
    answering = True

    async def hanging(request: web.Request, answer: web.Response) -> web.Response:
        if not answering:
            asked.append(request.method)
            await asyncio.sleep(3600)
        return answer

    client = await s3_mirror(
        await through_a_proxy(seaweed.settings(), seaweed, aiohttp_server, hanging),
        tmp_path / "a",
    )
    answering = False
    started = time.monotonic()
    await assert_oci_error(await client.get(f"/v2/{repo}/blobs/{layer.digest}"), 503, "UNAVAILABLE")
    assert time.monotonic() - started < 10 * 0.5
    assert asked == ["HEAD"] * bucket.ATTEMPTS


async def test_store_down_is_503_for_what_is_not_local_and_local_hits_still_serve(
    s3_mirror: S3MirrorFactory, seaweed: Seaweed, seeded: Seeded, tmp_path: Path
) -> None:
    """With the bucket unreachable, what the cache directory holds is still served, and
    anything else is an OCI 503 (never a 500), blobs, manifests and HEADs alike."""
    storage = seaweed.settings()
    repo, tag = seeded.schema2_ref
    local_layer, other_layer = seeded.schema2.layers
    first = await s3_mirror(storage, tmp_path / "a")
    assert await (await first.get(f"/v2/{repo}/blobs/{local_layer.digest}")).read()
    await first.close()
    down = unreachable(storage.bucket, storage.prefix)
    client = await s3_mirror(down, tmp_path / "a")
    response = await client.get(f"/v2/{repo}/blobs/{local_layer.digest}")
    assert await response.read() == local_layer.data
    for method, path in (
        ("GET", f"/v2/{repo}/blobs/{other_layer.digest}"),
        ("GET", f"/v2/{repo}/manifests/{seeded.schema2.digest}"),
        ("GET", f"/v2/{repo}/manifests/{tag}"),
    ):
        response = await client.request(method, path, headers={"Accept": ACCEPT_ALL})
        await assert_oci_error(response, 503, "UNAVAILABLE")
    response = await client.head(f"/v2/{repo}/blobs/{other_layer.digest}")
    assert response.status == 503


async def test_blobs_go_up_whole_or_not_at_all(seaweed: Seaweed, tmp_path: Path) -> None:
    """A blob bigger than one part is uploaded in parts and copied to its final key; an upload
    whose local copy ends early (in one piece or in parts) leaves no object and no multipart
    upload behind; a removed blob is gone."""
    storage = seaweed.settings()
    data = make_image(layer_sizes=(PART_SIZE + 4096,), seed="parts").layers[0].data
    digest = Digest.parse(sha256_digest(data))
    file = tmp_path / "blob"
    file.write_bytes(data)
    async with open_bucket(storage) as bucket:
        blobs = S3Blobs(bucket)
        with file.open("rb") as f:
            await blobs.publish(f, digest, len(data))
        assert await blobs.stat(digest) == len(data)
        assert [d async for d in blobs.iterate()] == [(digest, len(data))]
        truncated = Digest.parse(sha256_digest(b"truncated"))
        for claimed in (len(data) + PART_SIZE, 1 << 20):
            short = tmp_path / "short"
            short.write_bytes(data[: claimed - 1])
            with short.open("rb") as f, pytest.raises(StorageUnavailable):
                await blobs.publish(f, truncated, claimed)  # the file is shorter
        keys = seaweed.keys(storage.prefix)
        assert keys == {f"blobs/sha256/{digest.hex}": len(data)}
        assert seaweed.multipart_uploads(storage.prefix) == []
        assert seaweed.read(f"{storage.prefix}/blobs/sha256/{digest.hex}")[0] == data
        assert await blobs.remove(digest)
        assert not await blobs.remove(digest)
    assert seaweed.keys(storage.prefix) == {}


async def test_a_local_copy_that_does_not_match_its_digest_never_reaches_the_bucket(
    seaweed: Seaweed, tmp_path: Path
) -> None:
    """A blob on local disk whose bytes were damaged since it was verified (a directory that
    predates the bucket, bit rot) is refused by the upload, in one piece or in parts: no object
    under its key, no temporary object, no multipart upload is left."""
    storage = seaweed.settings()
    for size in (4096, PART_SIZE + 4096):
        data = make_image(layer_sizes=(size,), seed="damaged").layers[0].data
        digest = Digest.parse(sha256_digest(data))
        file = tmp_path / "blob"
        file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        async with open_bucket(storage) as bucket:
            with file.open("rb") as f, pytest.raises(StorageUnavailable):
                await S3Blobs(bucket).publish(f, digest, len(data))
    assert seaweed.keys(storage.prefix) == {}
    assert seaweed.multipart_uploads(storage.prefix) == []
